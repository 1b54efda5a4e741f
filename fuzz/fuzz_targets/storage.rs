//! The storage decoders: bytes as a stream segment, a queue or KV
//! write-ahead log, or the transaction log (the first byte picks which),
//! decoded as recovery decodes them. Damage must be reported or skipped,
//! never a panic, a hang or an allocation the input does not pay for.
#![no_main]

use flowmesh::engine::embedded::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, data)) = data.split_first() else { return };
    let n = match which % 4 {
        0 => fuzzing::segment(data),
        1 => fuzzing::queue_log(data),
        2 => fuzzing::kv_log(data),
        _ => fuzzing::txn_log(data),
    };
    std::hint::black_box(n);
});
