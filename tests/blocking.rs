//! The blocking client the C ABI stands on: pull subscriptions, feed
//! failure reporting, auto-commit.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Broker;
use flowmesh::blocking::BlockingClient;
use flowmesh::{Error, Options, Record};

fn publish_n(c: &BlockingClient, stream: &str, n: usize) {
    for i in 0..n {
        c.block_on(c.client().publish(stream, Record::new(format!("p-{i}")))).unwrap();
    }
}

#[test]
fn pull_subscription_returns_batches_in_order_and_times_out_empty() {
    let c = Arc::new(BlockingClient::connect("mem://", &Options::new()).unwrap());
    let sub = c.subscribe_pull("pulled", &Options::new().with("start", "earliest").unwrap()).unwrap();
    assert!(sub.next(10, Duration::from_millis(50)).unwrap().is_empty(), "nothing published yet");
    publish_n(&c, "pulled", 10);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 10 {
        assert!(Instant::now() < deadline);
        let batch = sub.next(4, Duration::from_secs(5)).unwrap();
        assert!(batch.len() <= 4);
        got.extend(batch.into_iter().map(|m| m.offset));
    }
    assert_eq!(got, (0..10).collect::<Vec<u64>>());
    sub.stop();
    assert!(matches!(sub.next(1, Duration::from_millis(10)), Err(Error::Closed(_))));
    c.close();
}

#[test]
fn pull_auto_commit_commits_what_the_previous_call_returned() {
    let c = Arc::new(BlockingClient::connect("mem://", &Options::new()).unwrap());
    publish_n(&c, "grouped", 6);
    let opts = Options::new().with("group", "g").unwrap().with("start", "earliest").unwrap();
    let sub = c.subscribe_pull("grouped", &opts).unwrap();
    // A call returns what the feed has buffered (at least one message), so
    // ask for one at a time: the batch size then does not depend on timing.
    let first = sub.next(1, Duration::from_secs(5)).unwrap();
    assert_eq!(first.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![0]);
    let offset = || c.block_on(c.client().get_offset("grouped", "g", 0));
    assert!(matches!(offset(), Err(Error::NotFound(_))), "nothing is committed before it is processed");
    let second = sub.next(1, Duration::from_secs(5)).unwrap();
    assert_eq!(second.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![1]);
    assert_eq!(offset().unwrap(), 0, "the first batch counts as processed once next is called again");
    let _third = sub.next(1, Duration::from_secs(5)).unwrap();
    assert_eq!(offset().unwrap(), 1, "and so does the second");
    c.close();
    assert!(matches!(sub.next(1, Duration::from_millis(10)), Err(Error::Closed(_))));
}

#[test]
fn a_feed_that_gives_up_reports_why() {
    let mut broker = Broker::start("mem://");
    let opts = Options::new()
        .with("reconnect_initial_ms", "20")
        .unwrap()
        .with("reconnect_jitter_ms", "0")
        .unwrap()
        .with("max_reconnect_attempts", "2")
        .unwrap()
        .with("connect_timeout_ms", "500")
        .unwrap()
        .with("request_timeout_ms", "1000")
        .unwrap();
    let c = Arc::new(BlockingClient::connect(&broker.url(), &opts).unwrap());
    let pulled = c.subscribe_pull("gone", &Options::new()).unwrap();
    let called = c.subscribe("gone", &Options::new(), |_| {}).unwrap();
    assert!(called.status().is_ok());
    broker.kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    let err = loop {
        match pulled.next(1, Duration::from_millis(200)) {
            Ok(batch) => assert!(batch.is_empty()),
            Err(e) => break e,
        }
        assert!(Instant::now() < deadline, "the pull feed never reported the lost broker");
    };
    assert!(matches!(err, Error::Disconnected(_)), "{err:?}");
    while called.status().is_ok() {
        assert!(Instant::now() < deadline, "the callback feed never reported the lost broker");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(matches!(called.status(), Err(Error::Disconnected(_))));
    c.close();
}
