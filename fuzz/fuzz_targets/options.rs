//! The option parser: `key=value` lines as C callers pass them to
//! fm_options_set, then every consumer of an options set (connect, engine,
//! stream creation and update, subscriptions, event subscriptions). A
//! refused key or value must leave the set as it was; an accepted one must
//! read back unchanged.
#![no_main]

use flowmesh::{ClientConfig, EngineConfig, Options};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut opts = Options::new();
    for line in text.split('\n') {
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        let before: Vec<(String, String)> = opts.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        match opts.set(key, value) {
            Ok(()) => assert_eq!(opts.get(key), Some(value), "an accepted option reads back unchanged"),
            Err(e) => {
                assert!(matches!(e, flowmesh::Error::InvalidArgument(_)), "refusal is InvalidArgument: {e:?}");
                let after: Vec<(String, String)> = opts.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
                assert_eq!(before, after, "a refused option changed the set");
            }
        }
    }
    let _ = ClientConfig::from_options(&opts);
    let _ = EngineConfig::from_options(&opts);
    let _ = opts.stream_config();
    let _ = opts.stream_update();
    let _ = opts.subscription();
    let _ = flowmesh::events::SubscribeOptions::from_options(&opts);
});
