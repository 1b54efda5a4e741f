//! Fault tests of the remote client on loopback: a proxy the test controls
//! delays, holds and cuts the link; the broker is killed with SIGKILL and
//! restarted under 4 producers and 2 subscribers. What must hold: state
//! events in order, every call back within its deadline, the breaker opening
//! and closing, every acknowledged publish stored exactly once, every
//! subscriber seeing every stored message once in order. (No growth over
//! reconnects is measured in tests/reconnects.rs, a process of its own.)

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::proxy::{Mode, Proxy};
use common::{free_addr, Broker};
use flowmesh::engine::connection::{ConnState, StateChange};
use flowmesh::{Client, Error, Options, Record, StartFrom, StreamConfig, SubscribeSpec};
use futures::StreamExt;

fn options(pairs: &[(&str, &str)]) -> Options {
    pairs.iter().fold(Options::new(), |o, (k, v)| o.with(k, v).unwrap())
}

/// Waits (bounded) for `want` among the state changes; returns what passed.
fn wait_state(rx: &mpsc::Receiver<StateChange>, want: ConnState, within: Duration) -> Vec<ConnState> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(c) => {
                seen.push(c.state);
                if c.state == want {
                    return seen;
                }
            }
            Err(_) => break,
        }
    }
    panic!("state {want:?} not reached within {within:?}; saw {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_faults_drive_states_deadlines_and_the_breaker() {
    let broker = Broker::start("mem://");
    let proxy = Proxy::start(&broker.addr);
    let opts = options(&[
        ("heartbeat_ms", "200"),
        ("request_timeout_ms", "1000"),
        ("reconnect_initial_ms", "50"),
        ("reconnect_max_ms", "200"),
        ("reconnect_jitter_ms", "0"),
        ("breaker_threshold", "3"),
        ("breaker_timeout_ms", "500"),
        ("max_retries", "0"),
    ]);
    let client = Client::connect(&proxy.url(), &opts).await.unwrap();
    let states = client.engine().connection().expect("remote engines have a connection").listen();
    client.kv_set("cfg", "k", "v1", 0).await.unwrap();

    // A slow link: calls still answer, just later.
    proxy.set(Mode::Delay(Duration::from_millis(60)));
    let t = Instant::now();
    assert_eq!(&client.kv_get("cfg", "k").await.unwrap().value[..], b"v1");
    assert!(t.elapsed() >= Duration::from_millis(60));
    proxy.set(Mode::Pass);

    // A peer that stops answering: the heartbeat notices and the call in
    // flight fails with DISCONNECTED, well within its deadline.
    proxy.set(Mode::Hold);
    let t = Instant::now();
    let r = client.kv_get("cfg", "k").await;
    let took = t.elapsed();
    assert!(matches!(r, Err(Error::Disconnected(_)) | Err(Error::Timeout(_))), "{r:?}");
    // Within its 1 s deadline (plus what a busy machine adds), not hanging.
    assert!(took < Duration::from_secs(5), "call returned after {took:?}");
    let seen = wait_state(&states, ConnState::Reconnecting, Duration::from_secs(5));
    assert_eq!(seen, vec![ConnState::Connected, ConnState::Reconnecting]);

    // The link cut: calls fail fast; after 3 failures the breaker opens and
    // answers UNAVAILABLE without touching the network.
    proxy.set(Mode::Cut);
    let mut opened = false;
    for _ in 0..20 {
        let t = Instant::now();
        let r = client.kv_get("cfg", "k").await;
        assert!(t.elapsed() < Duration::from_secs(5), "call returned after {:?}", t.elapsed());
        if let Err(Error::Unavailable(m)) = &r {
            assert!(m.contains("circuit breaker"), "{m}");
            assert!(t.elapsed() < Duration::from_secs(1), "an open breaker answers at once");
            opened = true;
            break;
        }
        assert!(r.is_err(), "a call through a cut link succeeded");
    }
    assert!(opened, "breaker did not open");
    assert!(client.metrics().encode().contains("flowmesh_client_breaker_state 1\n"), "breaker gauge: open");

    // Link back: the state returns to CONNECTED, the restored link closes
    // the breaker and calls succeed again.
    proxy.set(Mode::Pass);
    wait_state(&states, ConnState::Connected, Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(5);
    let value = loop {
        match client.kv_get("cfg", "k").await {
            Ok(e) => break e.value,
            Err(Error::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("after the link came back: {e}"),
        }
    };
    assert_eq!(&value[..], b"v1");
    client.publish("after", Record::new("ok")).await.unwrap();
    assert!(states.try_iter().all(|c| c.state != ConnState::Disconnected));
    let text = client.metrics().encode();
    assert!(text.contains("flowmesh_client_breaker_state 0\n"), "breaker gauge: closed again\n{text}");
    assert!(text.contains("flowmesh_client_reconnects_total 1\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gives_up_after_max_reconnect_attempts() {
    let mut broker = Broker::start("mem://");
    let opts = options(&[
        ("heartbeat_ms", "100"),
        ("reconnect_initial_ms", "20"),
        ("reconnect_max_ms", "20"),
        ("reconnect_jitter_ms", "0"),
        ("max_reconnect_attempts", "3"),
    ]);
    let client = Client::connect(&broker.url(), &opts).await.unwrap();
    let states = client.engine().connection().unwrap().listen();
    broker.kill();
    let seen = wait_state(&states, ConnState::Disconnected, Duration::from_secs(10));
    assert_eq!(seen, vec![ConnState::Connected, ConnState::Reconnecting, ConnState::Disconnected]);
    let t = Instant::now();
    assert!(matches!(client.kv_get("b", "k").await, Err(Error::Disconnected(_))));
    assert!(t.elapsed() < Duration::from_secs(1), "a client that gave up answers at once");
}

/// 4 producers publish 100,000 messages in batches while the broker is
/// killed with SIGKILL and restarted; 2 subscribers read throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_kill_under_load_loses_and_duplicates_nothing() {
    const PRODUCERS: u64 = 4;
    const PER_PRODUCER: u64 = 25_000;
    const BATCH: u64 = 20;
    let dir = tempfile::tempdir().unwrap();
    let data = format!("file://{}", dir.path().display());
    let addr = free_addr();
    let t = Instant::now();
    let mut broker = Broker::start_with(&data, &addr, &["--fsync", "interval"]);
    // Deadlines follow this machine's speed: how long a start took now
    // bounds how long the restart may take (with its recovery of the data).
    let startup = t.elapsed();
    let budget = Duration::from_secs(20).max(startup * 50);
    let url = broker.url();
    let timeout_ms = budget.as_millis().to_string();
    // The kill resets the connections: no fast heartbeat needed to notice.
    let opts = options(&[
        ("heartbeat_ms", "1000"),
        ("reconnect_initial_ms", "50"),
        ("reconnect_max_ms", "400"),
        ("reconnect_jitter_ms", "20"),
        ("max_retries", "30"),
        ("request_timeout_ms", &timeout_ms),
    ]);
    let setup = Client::connect(&url, &opts).await.unwrap();
    setup.create_stream("load", StreamConfig { partitions: 4, ..Default::default() }).await.unwrap();

    let mut subscribers = Vec::new();
    for _ in 0..2 {
        let c = Client::connect(&url, &opts).await.unwrap();
        let spec = SubscribeSpec { partition: None, start: StartFrom::Earliest, group: None };
        let feed = c.subscribe("load", spec).await.unwrap();
        subscribers.push((c, feed));
    }

    let acked = Arc::new(AtomicU64::new(0));
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let client = Client::connect(&url, &opts).await.unwrap();
        let acked = acked.clone();
        producers.push(tokio::spawn(async move {
            let mut done: HashMap<String, (u32, u64)> = HashMap::new();
            let mut failed = 0u64;
            for b in 0..PER_PRODUCER / BATCH {
                let payloads: Vec<String> = (0..BATCH).map(|i| format!("p{p}-{}", b * BATCH + i)).collect();
                let records = payloads.iter().map(|s| Record::new(s.clone())).collect();
                match client.publish_batch("load", records).await {
                    Ok(positions) => {
                        for (s, pos) in payloads.into_iter().zip(positions) {
                            done.insert(s, (pos.partition, pos.offset));
                        }
                        acked.fetch_add(BATCH, Ordering::Relaxed);
                    }
                    Err(Error::Disconnected(_) | Error::Timeout(_) | Error::Unavailable(_)) => failed += 1,
                    Err(e) => panic!("producer {p}: {e}"),
                }
            }
            (done, failed)
        }));
    }

    // Kill the broker a third of the way in, restart it on the same data.
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.load(Ordering::Relaxed) < PRODUCERS * PER_PRODUCER / 3 {
        assert!(Instant::now() < deadline, "producers made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    broker.kill();
    let killed_at = acked.load(Ordering::Relaxed);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _restarted = Broker::start_on(&data, &addr);
    let downtime = t.elapsed();

    let mut acknowledged: HashMap<String, (u32, u64)> = HashMap::new();
    let mut failed_batches = 0;
    for p in producers {
        let (done, failed) = tokio::time::timeout(budget * 6, p).await.expect("producer hung").unwrap();
        acknowledged.extend(done);
        failed_batches += failed;
    }
    eprintln!(
        "start took {startup:?}, the restart {downtime:?} (call budget {budget:?}); killed at {killed_at} \
         acknowledged; {} acknowledged in the end, {failed_batches} batches failed",
        acknowledged.len()
    );
    assert!(killed_at < PRODUCERS * PER_PRODUCER, "the kill happened after the load");
    // Retries ride out the restart: publishes are idempotent (message ids),
    // so a batch waits for the broker within its deadline and never fails
    // just because the restart was slow.
    assert_eq!(failed_batches, 0, "batches failed although the broker was back within their deadline");

    // Everything stored, read back partition by partition.
    let reader = Client::connect(&url, &opts).await.unwrap();
    let info = reader.stream_info("load").await.unwrap();
    let mut stored: HashMap<String, (u32, u64)> = HashMap::new();
    for part in &info.partitions {
        let mut next = part.earliest;
        while next < part.latest {
            let msgs = reader.read("load", part.partition, next, 10_000).await.unwrap();
            assert!(!msgs.is_empty());
            for m in msgs {
                let s = String::from_utf8(m.payload.to_vec()).unwrap();
                let previous = stored.insert(s.clone(), (m.partition, m.offset));
                assert!(previous.is_none(), "{s} stored twice: at {previous:?} and {}/{}", m.partition, m.offset);
                next = m.offset + 1;
            }
        }
    }
    for (s, pos) in &acknowledged {
        assert_eq!(stored.get(s), Some(pos), "acknowledged {s} not stored where acknowledged");
    }
    assert!(acknowledged.len() as u64 >= PRODUCERS * PER_PRODUCER - failed_batches * BATCH);

    // Each subscriber saw every stored message once, in offset order per partition.
    let total = stored.len();
    for (_client, mut feed) in subscribers {
        let mut next: HashMap<u32, u64> = HashMap::new();
        let mut seen = 0;
        while seen < total {
            let m = tokio::time::timeout(Duration::from_secs(60), feed.next())
                .await
                .expect("subscriber stalled")
                .expect("subscription ended")
                .expect("subscription failed");
            let expected = next.entry(m.partition).or_insert(0);
            assert_eq!(m.offset, *expected, "partition {} out of order", m.partition);
            *expected += 1;
            seen += 1;
        }
        assert_eq!(seen, total);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_watch_resumes_after_a_cut_link_and_reports_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = format!("file://{}", dir.path().display());
    let addr = free_addr();
    let mut broker = Broker::start_with(&data, &addr, &["--fsync", "interval"]);
    let proxy = Proxy::start(&addr);
    let opts = options(&[
        ("heartbeat_ms", "100"),
        ("reconnect_initial_ms", "20"),
        ("reconnect_max_ms", "100"),
        ("reconnect_jitter_ms", "0"),
    ]);
    let watcher = Client::connect(&proxy.url(), &opts).await.unwrap();
    let writer = Client::connect(&broker.url(), &opts).await.unwrap();
    let mut watch = watcher.kv_watch("cfg", "app.").await.unwrap();
    async fn next(w: &mut flowmesh::KvEventStream) -> flowmesh::KvEvent {
        let item = tokio::time::timeout(Duration::from_secs(10), w.next()).await.expect("watch stalled");
        item.expect("watch ended").expect("watch failed")
    }
    // Cut before any change: the watch resumes from where it started.
    proxy.set(Mode::Cut);
    writer.kv_set("cfg", "app.a", "1", 0).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.set(Mode::Pass);
    let e = next(&mut watch).await;
    assert_eq!((e.key.as_str(), &e.value[..]), ("app.a", &b"1"[..]));
    // Cut again after a change: what happened meanwhile arrives once, in order.
    proxy.set(Mode::Cut);
    writer.kv_set("cfg", "app.b", "2", 0).await.unwrap();
    writer.kv_set("cfg", "other", "x", 0).await.unwrap();
    writer.kv_delete("cfg", "app.a").await.unwrap();
    writer.kv_set("cfg", "app.b", "3", 0).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.set(Mode::Pass);
    let mut got = Vec::new();
    for _ in 0..3 {
        let e = next(&mut watch).await;
        got.push((e.op, e.key, String::from_utf8(e.value.to_vec()).unwrap(), e.revision));
    }
    use flowmesh::KvOp::*;
    let ops: Vec<_> = got.iter().map(|(op, k, v, _)| (*op, k.as_str(), v.as_str())).collect();
    assert_eq!(ops, vec![(Put, "app.b", "2"), (Delete, "app.a", ""), (Put, "app.b", "3")]);
    assert!(got.windows(2).all(|w| w[0].3 < w[1].3), "revisions in order: {got:?}");
    writer.kv_set("cfg", "app.c", "4", 0).await.unwrap();
    assert_eq!(next(&mut watch).await.key, "app.c", "live again, nothing repeated");
    // A restarted broker has no history to replay from: the watch ends with
    // a clear error instead of silently missing changes.
    broker.kill();
    let _restarted = Broker::start_on(&data, &addr);
    let end = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.expect("watch did not end");
    match end {
        Some(Err(Error::Conflict(m))) => assert!(m.contains("reopened"), "{m}"),
        other => panic!("expected a Conflict ending the watch, got {other:?}"),
    }
}
