//! Per-publish delivery tiers and subjects on every engine: the memory tier
//! reaches live subscribers and stores nothing, the replicated tier is
//! refused where there is one copy, subject patterns match like NATS.

mod common;

use std::time::Duration;

use common::{fixture, Backend};
use flowmesh::subject::SUBJECT_HEADER;
use flowmesh::{DeliveryTier, Error, Message, MessageStream, PublishOptions, Record, StartFrom, SubscribeSpec, NO_OFFSET};
use futures::StreamExt;

const PATIENCE: Duration = Duration::from_secs(20);

fn latest() -> SubscribeSpec {
    SubscribeSpec { partition: None, start: StartFrom::Latest, group: None }
}

fn tier(tier: DeliveryTier) -> PublishOptions {
    PublishOptions { tier, ..Default::default() }
}

fn subject(m: &Message) -> String {
    flowmesh::subject::of(m).to_owned()
}

async fn next(feed: &mut MessageStream) -> Message {
    tokio::time::timeout(PATIENCE, feed.next()).await.expect("no message in time").expect("feed ended").unwrap()
}

/// Messages until both end markers (one stored, one live) arrived; live and
/// stored messages are not ordered against each other, each kind is.
async fn until_markers(feed: &mut MessageStream) -> Vec<(String, bool)> {
    let mut got = Vec::new();
    let mut ends = 0;
    while ends < 2 {
        let m = next(feed).await;
        if &m.payload[..] == b"end" {
            ends += 1;
        } else {
            got.push((subject(&m), m.is_live()));
        }
        assert!(got.len() < 100, "runaway feed");
    }
    got.sort();
    got
}

/// Every file under `dir` with its size.
fn files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                todo.push(e.path());
            } else {
                out.push((e.path(), meta.len()));
            }
        }
    }
    out.sort();
    out
}

async fn memory_tier_reaches_live_subscribers_and_stores_nothing(b: Backend) {
    let f = fixture(b).await;
    let c = &f.client;
    let mut feed = c.subscribe("events.>", latest()).await.unwrap();
    let before = f.dir.as_ref().map(|d| files(d.path()));
    let rec = Record::new("login").with_header("trace-id", "abc").with_key("u1");
    assert_eq!(c.publish_with("events.user.login", rec, &tier(DeliveryTier::Memory)).await.unwrap(), None);
    let m = next(&mut feed).await;
    assert!(m.is_live(), "{m:?}");
    assert_eq!((m.offset, m.partition), (NO_OFFSET, 0));
    assert_eq!(subject(&m), "events.user.login");
    assert_eq!(&m.payload[..], b"login");
    assert_eq!(m.key.as_deref(), Some(&b"u1"[..]));
    assert!(m.headers.contains(&("trace-id".into(), "abc".into())));
    assert_eq!(m.stream, "default/default/events");
    // require_ack waits for the engine, and still stores nothing.
    let acked = PublishOptions { require_ack: true, ..tier(DeliveryTier::Memory) };
    assert_eq!(c.publish_with("events.click", Record::new("c"), &acked).await.unwrap(), None);
    assert_eq!(subject(&next(&mut feed).await), "events.click");
    if let (Some(before), Some(dir)) = (before, &f.dir) {
        assert_eq!(files(dir.path()), before, "a memory-tier publish wrote to the data directory");
    }
    assert!(c.read("events", 0, 0, 10).await.unwrap().is_empty(), "memory-tier messages are never read back");
    // Nobody listening: dropped, and no stream is made for it (on nats://
    // no JetStream stream: the list comes from the server's streams).
    for i in 0..3 {
        c.publish_with("quiet.tick", Record::new(format!("{i}")), &tier(DeliveryTier::Memory)).await.unwrap();
    }
    assert!(matches!(c.stream_info("quiet").await, Err(Error::NotFound(_))));
    assert_eq!(c.list_streams("").await.unwrap(), ["default/default/events"]);
    // The stored tier next to it: an offset, read back with its subject.
    let pos = c.publish_with("events.order", Record::new("o"), &PublishOptions::default()).await.unwrap().unwrap();
    let m = next(&mut feed).await;
    assert_eq!((m.offset, subject(&m)), (pos.offset, "events.order".to_owned()));
    let stored = c.read("events", 0, 0, 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert!(stored[0].headers.contains(&(SUBJECT_HEADER.into(), "events.order".into())));
}

async fn subject_patterns_match_like_nats(b: Backend) {
    let f = fixture(b).await;
    let c = &f.client;
    let mut subs = Vec::new();
    for p in ["orders.*", "orders.>", "orders.created", "orders", "orders.*.created"] {
        subs.push(c.subscribe(p, latest()).await.unwrap());
    }
    let (mem, stored) = (tier(DeliveryTier::Memory), PublishOptions::default());
    c.publish_with("orders.created", Record::new("1"), &stored).await.unwrap();
    c.publish_with("orders.eu.created", Record::new("2"), &stored).await.unwrap();
    c.publish_with("orders", Record::new("3"), &stored).await.unwrap();
    c.publish_with("orders.deleted", Record::new("4"), &mem).await.unwrap();
    c.publish_with("orders.eu.created", Record::new("5"), &mem).await.unwrap();
    // One end marker per kind that every pattern matches... but the exact
    // one, which gets its own.
    for (s, o) in [("orders.created", &stored), ("orders.created", &mem)] {
        c.publish_with(s, Record::new("end"), o).await.unwrap();
    }
    let s = |v: &[(&str, bool)]| v.iter().map(|(a, b)| (a.to_string(), *b)).collect::<Vec<_>>();
    let want = [
        s(&[("orders.created", false), ("orders.deleted", true)]),
        s(&[
            ("orders.created", false),
            ("orders.deleted", true),
            ("orders.eu.created", false),
            ("orders.eu.created", true),
        ]),
        s(&[("orders.created", false)]),
        s(&[
            ("orders", false),
            ("orders.created", false),
            ("orders.deleted", true),
            ("orders.eu.created", false),
            ("orders.eu.created", true),
        ]),
        s(&[("orders.eu.created", false), ("orders.eu.created", true)]),
    ];
    for (feed, want) in subs.iter_mut().zip(want) {
        assert_eq!(until_markers(feed).await, want);
    }
    for bad in ["*.created", ">", "orders.>.x", "orders..x", "orders.a*"] {
        assert!(matches!(c.subscribe(bad, latest()).await, Err(Error::InvalidArgument(_))), "{bad:?}");
    }
    for bad in ["orders.*", "orders.>", "orders.", ".x"] {
        let r = c.publish_with(bad, Record::new("x"), &stored).await;
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{bad:?}: {r:?}");
    }
}

async fn replicated_tier_needs_a_replicating_engine(b: Backend) {
    let f = fixture(b).await;
    let c = &f.client;
    let r = c.publish_with("pay.done", Record::new("p"), &tier(DeliveryTier::Replicated)).await;
    if b == Backend::NatsCluster {
        assert_eq!(r.unwrap().unwrap().offset, 0);
        return;
    }
    match r {
        Err(Error::Unavailable(m)) => assert!(m.contains("replicated tier"), "{m}"),
        other => panic!("replicated on {b:?}: {other:?}"),
    }
    // Never downgraded: nothing was stored.
    assert!(matches!(c.stream_info("pay").await, Err(Error::NotFound(_))));
    if b == Backend::Nats {
        // A stream that exists with one replica is refused too.
        c.publish_with("pay.done", Record::new("p"), &PublishOptions::default()).await.unwrap();
        let r = c.publish_with("pay.done", Record::new("p"), &tier(DeliveryTier::Replicated)).await;
        assert!(matches!(&r, Err(Error::Unavailable(m)) if m.contains("1 replica")), "{r:?}");
        assert_eq!(c.latest_offset("pay", 0).await.unwrap(), 1);
    }
}

contract_tests!(
    memory_tier_reaches_live_subscribers_and_stores_nothing,
    subject_patterns_match_like_nats,
    replicated_tier_needs_a_replicating_engine,
);

#[test]
fn publish_options_are_checked() {
    let o = flowmesh::Options::new();
    assert_eq!(o.publish_options().unwrap(), PublishOptions::default());
    let o = o.with("tier", "memory").unwrap().with("require_ack", "true").unwrap().with("timeout_ms", "5").unwrap();
    let p = o.publish_options().unwrap();
    assert_eq!((p.tier, p.require_ack, p.timeout_ms), (DeliveryTier::Memory, true, Some(5)));
    assert!(matches!(flowmesh::Options::new().with("tier", "fast"), Err(Error::InvalidArgument(_))));
    assert!(matches!(flowmesh::Options::new().with("tiers", "memory"), Err(Error::InvalidArgument(_))));
    // A stream's tier value is not a publish's, a stream key is not a publish key.
    let durable = flowmesh::Options::new().with("tier", "durable").unwrap();
    assert!(matches!(durable.publish_options(), Err(Error::InvalidArgument(m)) if m.contains("durable")));
    let partitions = flowmesh::Options::new().with("partitions", "2").unwrap();
    assert!(matches!(partitions.publish_options(), Err(Error::InvalidArgument(_))));
    let replicated = flowmesh::Options::new().with("tier", "replicated").unwrap();
    assert!(matches!(replicated.stream_config(), Err(Error::InvalidArgument(_))));
}
