//! The engine contract: every engine (memory, durable, remote over memory,
//! remote over durable) must pass this suite unchanged.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{fixture, fixture_with, Backend};
use flowmesh::{Client, Error, KvOp, Options, Record, RetryPolicy, StartFrom, StreamConfig, SubscribeSpec};
use futures::StreamExt;

/// Upper bound for waiting on anything that should happen "soon".
const PATIENCE: Duration = Duration::from_secs(20);

async fn next_within<S: futures::Stream + Unpin>(s: &mut S) -> S::Item {
    tokio::time::timeout(PATIENCE, s.next()).await.expect("timed out waiting for an item").expect("stream ended")
}

fn spec(start: StartFrom) -> SubscribeSpec {
    SubscribeSpec { partition: None, start, group: None }
}

async fn publish_assigns_dense_offsets_and_reads_back(b: Backend) {
    let f = fixture(b).await;
    let c = &f.client;
    let first = c.publish("orders", Record::new("a").with_header("type", "created").with_key("k1")).await.unwrap();
    assert_eq!((first.partition, first.offset), (0, 0));
    let batch: Vec<Record> = (1..=5).map(|i| Record::new(format!("m{i}"))).collect();
    let pos = c.publish_batch("orders", batch).await.unwrap();
    assert_eq!(pos.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    let msgs = c.read("orders", 0, 0, 100).await.unwrap();
    assert_eq!(msgs.len(), 6);
    assert_eq!(msgs[0].headers, vec![("type".to_string(), "created".to_string())]);
    assert_eq!(msgs[0].key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(msgs[0].stream, "default/default/orders");
    assert!(msgs[0].timestamp_ms > 1_600_000_000_000);
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m.offset, i as u64);
    }
    assert_eq!(&msgs[5].payload[..], b"m5");
    let tail = c.read("orders", 0, 4, 1).await.unwrap();
    assert_eq!(tail.len(), 1);
    assert_eq!(&tail[0].payload[..], b"m4");
    assert!(c.read("orders", 0, 6, 10).await.unwrap().is_empty());
    assert_eq!(c.latest_offset("orders", 0).await.unwrap(), 6);
}

async fn unknown_streams_and_bad_input_are_clear_errors(b: Backend) {
    let f = fixture(b).await;
    let c = &f.client;
    assert!(matches!(c.read("never", 0, 0, 1).await, Err(Error::NotFound(_))));
    assert!(matches!(c.stream_info("never").await, Err(Error::NotFound(_))));
    c.publish("s", Record::new("x")).await.unwrap();
    assert!(matches!(c.read("s", 7, 0, 1).await, Err(Error::NotFound(_))));
    for bad in ["", "a/b", "../x", "white space", "t/n/x/y"] {
        assert!(matches!(c.publish(bad, Record::new("x")).await, Err(Error::InvalidArgument(_))), "{bad:?}");
    }
    let big = Record::new(vec![0u8; 8 * 1024 * 1024 + 1]);
    assert!(matches!(c.publish("s", big).await, Err(Error::TooLarge(_))));
    assert!(matches!(c.kv_set("b", "", Bytes::from("v"), 0).await, Err(Error::InvalidArgument(_))));
    assert!(matches!(c.get_offset("s", "g", 0).await, Err(Error::NotFound(_))));
}

async fn partitions_route_by_key_and_round_robin(b: Backend) {
    let f = fixture(b).await;
    let c = &f.client;
    let cfg = StreamConfig { partitions: 4, ..Default::default() };
    c.create_stream("parts", cfg).await.unwrap();
    c.create_stream("parts", cfg).await.unwrap(); // idempotent
    let other = StreamConfig { partitions: 2, ..Default::default() };
    assert!(matches!(c.create_stream("parts", other).await, Err(Error::AlreadyExists(_))));
    let mut seen = HashSet::new();
    for _ in 0..8 {
        seen.insert(c.publish("parts", Record::new("rr")).await.unwrap().partition);
    }
    assert_eq!(seen.len(), 4, "round robin should use every partition");
    let mut by_key: HashMap<String, u32> = HashMap::new();
    for i in 0..40 {
        let key = format!("user-{}", i % 10);
        let p = c.publish("parts", Record::new("k").with_key(key.clone())).await.unwrap().partition;
        assert_eq!(*by_key.entry(key).or_insert(p), p, "a key must always map to one partition");
    }
    let info = c.stream_info("parts").await.unwrap();
    assert_eq!(info.partitions.iter().map(|p| p.latest).sum::<u64>(), 48);
}

async fn subscribe_start_positions(b: Backend) {
    let f = fixture(b).await;
    let c = &f.client;
    for i in 0..3 {
        c.publish("feed", Record::new(format!("old{i}"))).await.unwrap();
    }
    let mut earliest = c.subscribe("feed", spec(StartFrom::Earliest)).await.unwrap();
    let mut latest = c.subscribe("feed", spec(StartFrom::Latest)).await.unwrap();
    let mut at = c.subscribe("feed", spec(StartFrom::Offset(2))).await.unwrap();
    c.publish("feed", Record::new("new")).await.unwrap();
    for want in ["old0", "old1", "old2", "new"] {
        assert_eq!(&next_within(&mut earliest).await.unwrap().payload[..], want.as_bytes());
    }
    assert_eq!(&next_within(&mut latest).await.unwrap().payload[..], b"new");
    assert_eq!(&next_within(&mut at).await.unwrap().payload[..], b"old2");
    assert_eq!(&next_within(&mut at).await.unwrap().payload[..], b"new");
}

async fn consumer_groups_commit_and_resume(b: Backend) {
    let f = fixture(b).await;
    let c = &f.client;
    for i in 0..10 {
        c.publish("events", Record::new(format!("e{i}"))).await.unwrap();
    }
    let group = SubscribeSpec { partition: Some(0), start: StartFrom::Committed, group: Some("workers".into()) };
    let mut s = c.subscribe("events", group.clone()).await.unwrap();
    let m = next_within(&mut s).await.unwrap();
    assert_eq!(m.offset, 0, "no commit yet: start at earliest");
    drop(s);
    c.commit_offset("events", "workers", 0, 6).await.unwrap();
    assert_eq!(c.get_offset("events", "workers", 0).await.unwrap(), 6);
    let state = c.group_state("events", "workers").await.unwrap();
    assert_eq!(state.partitions[0].committed, Some(6));
    assert_eq!(state.partitions[0].latest, 10);
    assert_eq!(state.partitions[0].lag, 3);
    let mut s = c.subscribe("events", group).await.unwrap();
    assert_eq!(next_within(&mut s).await.unwrap().offset, 7, "resume after the committed offset");
    assert!(matches!(c.commit_offset("events", "workers", 9, 1).await, Err(Error::NotFound(_))));
}

async fn concurrent_producers_and_subscriber_lose_nothing(b: Backend) {
    let f = fixture(b).await;
    let c = f.client.clone();
    c.create_stream("busy", StreamConfig { partitions: 3, ..Default::default() }).await.unwrap();
    let mut sub = c.subscribe("busy", spec(StartFrom::Earliest)).await.unwrap();
    const PRODUCERS: usize = 4;
    const EACH: usize = 500;
    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                let r = Record::new(format!("{p}:{i}")).with_key(format!("producer-{p}"));
                if i % 50 == 0 {
                    c.publish_batch("busy", vec![r.clone(), Record::new(format!("{p}:b{i}"))]).await.unwrap();
                } else {
                    c.publish("busy", r).await.unwrap();
                }
            }
        }));
    }
    let total = PRODUCERS * EACH + PRODUCERS * (EACH / 50);
    let mut seen = HashSet::new();
    let mut last_offset: HashMap<u32, u64> = HashMap::new();
    let mut per_producer_last: HashMap<String, usize> = HashMap::new();
    while seen.len() < total {
        let m = next_within(&mut sub).await.unwrap();
        if let Some(prev) = last_offset.insert(m.partition, m.offset) {
            assert_eq!(m.offset, prev + 1, "gap or reorder in partition {}", m.partition);
        }
        let text = String::from_utf8(m.payload.to_vec()).unwrap();
        assert!(seen.insert(text.clone()), "duplicate {text}");
        let (p, i) = text.split_once(':').unwrap();
        if let Ok(i) = i.parse::<usize>() {
            if let Some(prev) = per_producer_last.insert(p.to_owned(), i) {
                assert!(i > prev, "keyed messages of producer {p} out of order");
            }
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
}

async fn retention_by_count_and_age(b: Backend) {
    let f = fixture_with(b, Options::new().with("segment_bytes", "4096").unwrap()).await;
    let c = &f.client;
    let cfg = StreamConfig { partitions: 1, max_messages: 100, ..Default::default() };
    c.create_stream("bounded", cfg).await.unwrap();
    for i in 0..1000 {
        c.publish("bounded", Record::new(format!("{i:0>100}"))).await.unwrap();
    }
    let info = c.stream_info("bounded").await.unwrap().partitions[0];
    assert_eq!(info.latest, 1000);
    assert!(info.earliest > 0, "old messages must be dropped");
    assert!(info.latest - info.earliest >= 100, "at least max_messages are kept");
    assert!(info.latest - info.earliest < 200, "kept {} messages", info.latest - info.earliest);
    let first = c.read("bounded", 0, 0, 1).await.unwrap();
    assert_eq!(first[0].offset, info.earliest, "reads below the retained range start at earliest");

    let aged = StreamConfig { partitions: 1, max_age_ms: 200, ..Default::default() };
    c.create_stream("aged", aged).await.unwrap();
    for _ in 0..10 {
        c.publish("aged", Record::new("x")).await.unwrap();
    }
    let deadline = Instant::now() + PATIENCE;
    loop {
        let p = c.stream_info("aged").await.unwrap().partitions[0];
        if p.earliest == 10 {
            break;
        }
        assert!(Instant::now() < deadline, "aged messages never expired: {p:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn queue_orders_by_priority_then_fifo(b: Backend) {
    let f = fixture(b).await;
    let c = &f.client;
    let low1 = c.enqueue("jobs", Record::new("low1"), 0, 0).await.unwrap();
    let high = c.enqueue("jobs", Record::new("high"), 0, 10).await.unwrap();
    let low2 = c.enqueue("jobs", Record::new("low2"), 0, 0).await.unwrap();
    assert!(low1 >= 1 && high > low1 && low2 > high);
    let order: Vec<u64> = c.receive("jobs", 10, 30_000, 0).await.unwrap().iter().map(|j| j.id).collect();
    assert_eq!(order, vec![high, low1, low2]);
    let s = c.queue_stats("jobs").await.unwrap();
    assert_eq!((s.pending, s.in_flight), (0, 3));
    for id in order {
        c.ack("jobs", id).await.unwrap();
    }
    assert!(matches!(c.ack("jobs", high).await, Err(Error::NotFound(_))));
    assert_eq!(c.queue_stats("jobs").await.unwrap(), Default::default());
}

async fn queue_delay_and_long_poll(b: Backend) {
    let f = fixture(b).await;
    let c = f.client.clone();
    c.enqueue("later", Record::new("d"), 300, 0).await.unwrap();
    assert_eq!(c.queue_stats("later").await.unwrap().delayed, 1);
    assert!(c.reserve("later", 1000, 0).await.unwrap().is_none(), "a delayed job is not ready yet");
    let job = c.reserve("later", 1000, 20_000).await.unwrap().expect("delayed job arrives");
    assert_eq!(&job.payload[..], b"d");

    // A long poll wakes when a job is enqueued, long before its wait ends.
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            (c.reserve("wake", 1000, 60_000).await.unwrap(), t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.enqueue("wake", Record::new("now"), 0, 0).await.unwrap();
    let (job, waited) = waiter.await.unwrap();
    assert_eq!(&job.expect("woken with the job").payload[..], b"now");
    assert!(waited < Duration::from_secs(30), "long poll did not wake on enqueue ({waited:?})");
}

async fn visibility_timeout_redelivers_with_next_attempt(b: Backend) {
    let f = fixture(b).await;
    let c = &f.client;
    let id = c.enqueue("vis", Record::new("v").with_header("trace", "t1"), 0, 0).await.unwrap();
    let first = c.reserve("vis", 200, 0).await.unwrap().unwrap();
    assert_eq!((first.id, first.attempt), (id, 1));
    assert_eq!(first.headers, vec![("trace".to_string(), "t1".to_string())]);
    let again = c.reserve("vis", 10_000, 20_000).await.unwrap().expect("redelivered after visibility timeout");
    assert_eq!((again.id, again.attempt), (id, 2));
    c.ack("vis", id).await.unwrap();
}

async fn an_ack_after_the_visibility_ran_out_takes_or_is_refused_never_lost(b: Backend) {
    let f = fixture(b).await;
    let c = &f.client;
    let id = c.enqueue("late", Record::new("l"), 0, 0).await.unwrap();
    assert_eq!(c.reserve("late", 200, 0).await.unwrap().unwrap().id, id);
    tokio::time::sleep(Duration::from_millis(600)).await;
    // The embedded engines still take the ack; nats:// refuses it (the
    // reservation is gone). Either way the job is settled exactly once.
    match c.ack("late", id).await {
        Ok(()) => assert!(c.reserve("late", 10_000, 500).await.unwrap().is_none(), "acked, yet delivered again"),
        Err(Error::Conflict(_)) => {
            let again = c.reserve("late", 10_000, 20_000).await.unwrap().expect("a refused ack leaves the job queued");
            assert_eq!((again.id, again.attempt), (id, 2));
            c.ack("late", id).await.unwrap();
        }
        other => panic!("ack after the visibility ran out: {other:?}"),
    }
    assert!(matches!(c.ack("late", id).await, Err(Error::NotFound(_))), "a second ack");
}

async fn nack_retry_policy_and_dead_letters(b: Backend) {
    let f = fixture(b).await;
    let c = &f.client;
    let policy = RetryPolicy { max_attempts: 2, initial_backoff_ms: 50, max_backoff_ms: 1000, multiplier: 2.0 };
    c.set_retry_policy("work", policy).await.unwrap();
    assert_eq!(c.get_retry_policy("work").await.unwrap(), policy);
    let bad = RetryPolicy { multiplier: 0.5, ..policy };
    assert!(matches!(c.set_retry_policy("work", bad).await, Err(Error::InvalidArgument(_))));

    let id = c.enqueue("work", Record::new("flaky").with_header("kind", "a"), 0, 0).await.unwrap();
    let other = c.enqueue("work", Record::new("other").with_header("kind", "b"), 0, 0).await.unwrap();
    assert!(matches!(c.nack("work", id, 0).await, Err(Error::Conflict(_))), "nack needs a reservation");
    // Deliver and fail each job twice; with backoff they may come back apart.
    let mut deliveries: HashMap<u64, u32> = HashMap::new();
    let deadline = Instant::now() + PATIENCE;
    while deliveries.values().sum::<u32>() < 4 {
        assert!(Instant::now() < deadline, "jobs were not redelivered: {deliveries:?}");
        for j in c.receive("work", 2, 30_000, 1_000).await.unwrap() {
            let n = deliveries.entry(j.id).or_default();
            *n += 1;
            assert_eq!(j.attempt, *n, "attempt counts deliveries");
            c.nack("work", j.id, 0).await.unwrap();
        }
    }
    let deadline = Instant::now() + PATIENCE;
    while c.queue_stats("work").await.unwrap().dead < 2 {
        assert!(Instant::now() < deadline);
        let back = c.receive("work", 2, 30_000, 100).await.unwrap();
        assert!(back.is_empty(), "dead jobs must not come back: {back:?}");
    }
    let dead = c.dlq_list("work", 0).await.unwrap();
    assert_eq!(dead.iter().map(|j| j.id).collect::<Vec<_>>(), vec![id, other]);
    c.dlq_replay("work", id).await.unwrap();
    assert!(matches!(c.dlq_replay("work", id).await, Err(Error::NotFound(_))));
    let replayed = c.reserve("work", 30_000, 5_000).await.unwrap().unwrap();
    assert_eq!((replayed.id, replayed.attempt), (id, 1), "replay resets attempts");
    c.ack("work", id).await.unwrap();
    let n = c.dlq_replay_all("work", Some(("kind".into(), "zzz".into()))).await.unwrap();
    assert_eq!(n, 0);
    assert_eq!(c.dlq_replay_all("work", Some(("kind".into(), "b".into()))).await.unwrap(), 1);
    let s = c.queue_stats("work").await.unwrap();
    assert_eq!((s.pending, s.dead), (1, 0));
}

async fn queue_workers_process_each_job_once(b: Backend) {
    let f = fixture(b).await;
    let c = f.client.clone();
    const JOBS: usize = 800;
    let producer = {
        let c = c.clone();
        tokio::spawn(async move {
            for i in 0..JOBS {
                c.enqueue("pool", Record::new(i.to_string()), 0, (i % 3) as i32).await.unwrap();
            }
        })
    };
    let mut workers = Vec::new();
    for _ in 0..4 {
        let c = c.clone();
        workers.push(tokio::spawn(async move {
            let mut done = Vec::new();
            while let Some(job) = c.reserve("pool", 30_000, 1_000).await.unwrap() {
                c.ack("pool", job.id).await.unwrap();
                done.push(String::from_utf8(job.payload.to_vec()).unwrap());
            }
            done
        }));
    }
    producer.await.unwrap();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), JOBS, "every job processed exactly once");
    assert_eq!(unique.len(), JOBS);
}

async fn kv_set_get_delete_list_and_revisions(b: Backend) {
    let f = fixture(b).await;
    let c = &f.client;
    let r1 = c.kv_set("cfg", "user:1", Bytes::from("alice"), 0).await.unwrap();
    let r2 = c.kv_set("cfg", "user:1", Bytes::from("alicia"), 0).await.unwrap();
    assert!(r2 > r1);
    let e = c.kv_get("cfg", "user:1").await.unwrap();
    assert_eq!((&e.value[..], e.revision), (&b"alicia"[..], r2));
    c.kv_set("cfg", "user:2", Bytes::from("bob"), 0).await.unwrap();
    c.kv_set("cfg", "system", Bytes::from("x"), 0).await.unwrap();
    c.kv_set("cfg", "user:0", Bytes::new(), 0).await.unwrap();
    assert_eq!(c.kv_keys("cfg", "user:").await.unwrap(), vec!["user:0", "user:1", "user:2"]);
    assert_eq!(c.kv_keys("cfg", "").await.unwrap().len(), 4);
    assert!(c.kv_exists("cfg", "user:2").await.unwrap());
    assert!(c.kv_delete("cfg", "user:2").await.unwrap());
    assert!(!c.kv_delete("cfg", "user:2").await.unwrap(), "deleting an absent key is fine");
    assert!(!c.kv_exists("cfg", "user:2").await.unwrap());
    assert!(matches!(c.kv_get("cfg", "user:2").await, Err(Error::NotFound(_))));
    assert_eq!(c.kv_get("cfg", "user:0").await.unwrap().value.len(), 0);
}

async fn kv_ttl_and_compare_and_set(b: Backend) {
    let f = fixture(b).await;
    let c = &f.client;
    c.kv_set("sess", "tmp", Bytes::from("x"), 150).await.unwrap();
    assert!(c.kv_exists("sess", "tmp").await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!c.kv_exists("sess", "tmp").await.unwrap(), "expired keys are invisible");
    assert!(matches!(c.kv_get("sess", "tmp").await, Err(Error::NotFound(_))));
    assert!(c.kv_keys("sess", "").await.unwrap().is_empty());

    let r1 = c.kv_cas("sess", "lock", Bytes::from("a"), 0).await.unwrap();
    assert!(matches!(c.kv_cas("sess", "lock", Bytes::from("b"), 0).await, Err(Error::Conflict(_))));
    assert!(matches!(c.kv_cas("sess", "lock", Bytes::from("b"), r1 + 100).await, Err(Error::Conflict(_))));
    let r2 = c.kv_cas("sess", "lock", Bytes::from("b"), r1).await.unwrap();
    assert!(r2 > r1);
    assert_eq!(&c.kv_get("sess", "lock").await.unwrap().value[..], b"b");
}

async fn kv_watch_sees_changes_in_order(b: Backend) {
    let f = fixture(b).await;
    let c = &f.client;
    let mut w = c.kv_watch("flags", "app.").await.unwrap();
    let r1 = c.kv_set("flags", "app.dark", Bytes::from("on"), 0).await.unwrap();
    c.kv_set("flags", "other", Bytes::from("ignored"), 0).await.unwrap();
    let r2 = c.kv_set("flags", "app.dark", Bytes::from("off"), 0).await.unwrap();
    c.kv_delete("flags", "app.dark").await.unwrap();
    c.kv_set("flags", "app.tmp", Bytes::from("t"), 100).await.unwrap();
    let e = next_within(&mut w).await.unwrap();
    assert_eq!((e.op, e.key.as_str(), &e.value[..], e.revision), (KvOp::Put, "app.dark", &b"on"[..], r1));
    let e = next_within(&mut w).await.unwrap();
    assert_eq!((e.op, &e.value[..], e.revision), (KvOp::Put, &b"off"[..], r2));
    let e = next_within(&mut w).await.unwrap();
    assert_eq!((e.op, e.key.as_str()), (KvOp::Delete, "app.dark"));
    assert_eq!(next_within(&mut w).await.unwrap().op, KvOp::Put);
    let e = next_within(&mut w).await.unwrap();
    assert_eq!((e.op, e.key.as_str()), (KvOp::Expire, "app.tmp"));
}

async fn two_clients_share_one_engine(b: Backend) {
    let f = fixture(b).await;
    let other = f.reconnect().await;
    f.client.kv_set("shared", "k", Bytes::from("v"), 0).await.unwrap();
    assert_eq!(&other.kv_get("shared", "k").await.unwrap().value[..], b"v");
    other.enqueue("q", Record::new("j"), 0, 0).await.unwrap();
    assert!(f.client.reserve("q", 1000, 5000).await.unwrap().is_some());
}

async fn message_ids_store_each_record_once(b: Backend) {
    let f = fixture_with(b, Options::new().with("tenant", "dedup").unwrap()).await;
    let c = &f.client;
    c.create_stream("once", StreamConfig { partitions: 3, ..Default::default() }).await.unwrap();
    let first = c.publish("once", Record::new("a").with_msg_id("id-1").with_key("k")).await.unwrap();
    // The same id again (a retried publish): the first position, no copy.
    let again = c.publish("once", Record::new("a").with_msg_id("id-1").with_key("k")).await.unwrap();
    assert_eq!(again, first);
    // A batch mixing known ids, an id repeated inside the batch, new ids and
    // records without ids.
    let batch = vec![
        Record::new("a").with_msg_id("id-1").with_key("k"),
        Record::new("b").with_msg_id("id-2"),
        Record::new("b").with_msg_id("id-2"),
        Record::new("plain"),
        Record::new("c").with_msg_id("id-3"),
    ];
    let pos = c.publish_batch("once", batch).await.unwrap();
    assert_eq!(pos[0], first);
    assert_eq!(pos[1], pos[2]);
    assert_ne!(pos[1], pos[4]);
    let info = c.stream_info("once").await.unwrap();
    let stored: u64 = info.partitions.iter().map(|p| p.latest - p.earliest).sum();
    assert_eq!(stored, 4, "a, b, plain, c stored once each");
    // Ids do not show up as headers.
    let msgs = c.read("once", pos[1].partition, pos[1].offset, 1).await.unwrap();
    assert_eq!(&msgs[0].payload[..], b"b");
    assert!(msgs[0].headers.is_empty());
    // The window survives a restart of a durable engine or broker.
    if let Some(dir) = f.dir.as_ref().filter(|_| matches!(b, Backend::File | Backend::RemoteFile)) {
        let data = format!("file://{}", dir.path().display());
        let opts = Options::new().with("tenant", "dedup").unwrap();
        let (client, _broker) = if let Some(mut broker) = f.broker {
            broker.kill();
            let restarted = common::Broker::start_on(&data, &broker.addr);
            (Client::connect(&restarted.url(), &opts).await.unwrap(), Some(restarted))
        } else {
            drop(f.client);
            (Client::connect(&data, &opts).await.unwrap(), None)
        };
        let after = client.publish("once", Record::new("c").with_msg_id("id-3")).await.unwrap();
        assert_eq!(after, pos[4]);
        let info = client.stream_info("once").await.unwrap();
        assert_eq!(info.partitions.iter().map(|p| p.latest - p.earliest).sum::<u64>(), 4);
    }
}

// ---- resource lifecycle ----

/// Restarts the fixture's engine (a durable one or the broker in front of
/// it) and returns a new client; `None` for in-memory engines.
async fn restart(f: &mut common::Fixture, b: Backend) -> Option<Client> {
    let dir = f.dir.as_ref().filter(|_| matches!(b, Backend::File | Backend::RemoteFile))?;
    let data = format!("file://{}", dir.path().display());
    if let Some(broker) = f.broker.as_mut() {
        broker.kill();
        let restarted = common::Broker::start_on(&data, &broker.addr);
        let client = Client::connect(&restarted.url(), &f.options).await.unwrap();
        *broker = restarted;
        return Some(client);
    }
    let placeholder = Client::connect("mem://", &Options::new()).await.unwrap();
    drop(std::mem::replace(&mut f.client, placeholder));
    Some(Client::connect(&data, &f.options).await.unwrap())
}

/// The directory of a durable resource (`kind` = streams, queues, kv).
fn resource_path(f: &common::Fixture, kind: &str, name: &str) -> Option<std::path::PathBuf> {
    f.dir.as_ref().map(|d| d.path().join(kind).join("default/default").join(name))
}

async fn lists_are_scoped_filtered_and_qualified(b: Backend) {
    let f = fixture(b).await;
    let c = &f.client;
    for s in ["orders", "orders-eu", "payments"] {
        c.publish(s, Record::new("x")).await.unwrap();
    }
    c.publish("other/ns/orders-x", Record::new("x")).await.unwrap();
    c.create_stream("fast", StreamConfig { tier: flowmesh::Tier::Memory, ..Default::default() }).await.unwrap();
    c.enqueue("jobs", Record::new("j"), 0, 0).await.unwrap();
    c.enqueue("other/ns/jobs", Record::new("j"), 0, 0).await.unwrap();
    c.kv_set("settings", "k", Bytes::from("v"), 0).await.unwrap();
    c.kv_set("sessions", "k", Bytes::from("v"), 0).await.unwrap();
    assert_eq!(c.list_streams("ord").await.unwrap(), ["default/default/orders", "default/default/orders-eu"]);
    assert_eq!(
        c.list_streams("").await.unwrap(),
        ["default/default/fast", "default/default/orders", "default/default/orders-eu", "default/default/payments"]
    );
    assert_eq!(c.list_streams("other/").await.unwrap(), ["other/ns/orders-x"]);
    assert!(c.list_streams("zzz").await.unwrap().is_empty());
    assert_eq!(c.list_queues("").await.unwrap(), ["default/default/jobs"]);
    assert_eq!(c.list_buckets("se").await.unwrap(), ["default/default/sessions", "default/default/settings"]);
    assert_eq!(c.list_buckets("set").await.unwrap(), ["default/default/settings"]);
    assert!(matches!(c.list_streams("bad prefix").await, Err(Error::InvalidArgument(_))));
}

async fn delete_stream_ends_feeds_frees_files_and_survives_restart(b: Backend) {
    let mut f = fixture(b).await;
    let c = f.client.clone();
    c.create_stream("gone", StreamConfig { partitions: 2, ..Default::default() }).await.unwrap();
    for i in 0..20 {
        c.publish("gone", Record::new(format!("m{i}"))).await.unwrap();
    }
    c.publish("kept", Record::new("k")).await.unwrap();
    c.commit_offset("gone", "g", 0, 3).await.unwrap();
    let mut sub = c.subscribe("gone", spec(StartFrom::Latest)).await.unwrap();
    if let Some(p) = resource_path(&f, "streams", "gone") {
        assert!(p.join("meta.json").exists(), "durable streams live in {}", p.display());
    }
    c.delete_stream("gone").await.unwrap();
    let end = tokio::time::timeout(PATIENCE, sub.next()).await.expect("the feed must end");
    assert!(matches!(end, Some(Err(Error::NotFound(_)))), "{end:?}");
    assert!(matches!(c.delete_stream("gone").await, Err(Error::NotFound(_))));
    assert!(matches!(c.stream_info("gone").await, Err(Error::NotFound(_))));
    assert!(matches!(c.delete_stream("never").await, Err(Error::NotFound(_))));
    assert_eq!(c.list_streams("").await.unwrap(), ["default/default/kept"]);
    if let Some(p) = resource_path(&f, "streams", "gone") {
        assert!(!p.exists(), "{} still exists", p.display());
    }
    if let Some(c2) = restart(&mut f, b).await {
        assert_eq!(c2.list_streams("").await.unwrap(), ["default/default/kept"]);
        assert!(matches!(c2.stream_info("gone").await, Err(Error::NotFound(_))));
        let p = resource_path(&f, "streams", "gone").unwrap();
        assert!(!p.exists());
        let trash = f.dir.as_ref().unwrap().path().join("trash");
        assert!(!trash.exists() || std::fs::read_dir(&trash).unwrap().next().is_none());
        // A later publish re-creates it empty, offsets from 0, no old offsets.
        let pos = c2.publish("gone", Record::new("new")).await.unwrap();
        assert_eq!(pos.offset, 0);
        assert!(matches!(c2.get_offset("gone", "g", 0).await, Err(Error::NotFound(_))));
    } else {
        let pos = c.publish("gone", Record::new("new")).await.unwrap();
        assert_eq!((pos.partition, pos.offset), (0, 0));
        assert_eq!(c.stream_info("gone").await.unwrap().partitions.len(), 1);
    }
}

async fn delete_while_another_client_publishes(b: Backend) {
    let f = fixture(b).await;
    let producer = f.reconnect().await;
    producer.publish("busy", Record::new("first")).await.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let task = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent < 100_000 {
                producer.publish("busy", Record::new("m")).await.expect("publishes never fail around a delete");
                sent += 1;
            }
            (sent, producer)
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    f.client.delete_stream("busy").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut sent, producer) = task.await.unwrap();
    // A fast engine may reach the cap before the delete: one more publish
    // makes sure something lands after it.
    producer.publish("busy", Record::new("m")).await.unwrap();
    sent += 1;
    // What was published after the delete is in a new stream, dense from 0.
    let info = f.client.stream_info("busy").await.unwrap();
    let latest = info.partitions[0].latest;
    assert!(latest <= sent, "{latest} > {sent}");
    let msgs = f.client.read("busy", 0, 0, latest as usize).await.unwrap();
    assert_eq!(msgs.len() as u64, latest);
    assert!(msgs.iter().enumerate().all(|(i, m)| m.offset == i as u64 && &m.payload[..] == b"m"));
}

async fn delete_queue_and_bucket_end_waiters_and_watches(b: Backend) {
    let mut f = fixture(b).await;
    let c = f.client.clone();
    c.enqueue("work", Record::new("a"), 0, 0).await.unwrap();
    let reserved = c.reserve("work", 60_000, 1000).await.unwrap().unwrap();
    c.enqueue("work", Record::new("b"), 60_000, 0).await.unwrap();
    c.kv_set("conf", "k", Bytes::from("v"), 0).await.unwrap();
    let mut watch = c.kv_watch("conf", "").await.unwrap();
    c.kv_set("conf", "k", Bytes::from("v2"), 0).await.unwrap();
    assert_eq!(&next_within(&mut watch).await.unwrap().value[..], b"v2");
    // An empty queue someone long-polls on.
    c.queue_stats("idle").await.unwrap();
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move { c.reserve("idle", 1000, 15_000).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.delete_queue("idle").await.unwrap();
    let r = tokio::time::timeout(PATIENCE, waiter).await.expect("the long poll must end").unwrap();
    assert!(matches!(r, Err(Error::NotFound(_))), "{r:?}");
    c.delete_queue("work").await.unwrap();
    assert!(matches!(c.delete_queue("work").await, Err(Error::NotFound(_))));
    assert!(matches!(c.ack("work", reserved.id).await, Err(Error::NotFound(_))));
    assert_eq!(c.queue_stats("work").await.unwrap(), flowmesh::QueueStats::default(), "re-created empty");
    c.delete_bucket("conf").await.unwrap();
    let end = tokio::time::timeout(PATIENCE, watch.next()).await.expect("the watch must end");
    assert!(matches!(end, Some(Err(Error::NotFound(_)))), "{end:?}");
    assert!(matches!(c.delete_bucket("conf").await, Err(Error::NotFound(_))));
    for kind in ["queues/default/default/idle", "kv/default/default/conf"] {
        if let Some(d) = &f.dir {
            assert!(!d.path().join(kind).exists(), "{kind} still on disk");
        }
    }
    assert!(matches!(c.kv_get("conf", "k").await, Err(Error::NotFound(_))));
    c.delete_bucket("conf").await.unwrap(); // the read re-created it (empty), like any use
    assert!(matches!(c.delete_bucket("never").await, Err(Error::NotFound(_))));
    c.kv_set("kept", "k", Bytes::from("v"), 0).await.unwrap();
    c.delete_queue("work").await.unwrap(); // re-created by queue_stats above
    if let Some(d) = &f.dir {
        assert!(!d.path().join("queues/default/default/work").exists());
    }
    if let Some(c2) = restart(&mut f, b).await {
        assert!(c2.list_queues("").await.unwrap().is_empty());
        assert_eq!(c2.list_buckets("").await.unwrap(), ["default/default/kept"]);
        assert!(matches!(c2.kv_get("conf", "k").await, Err(Error::NotFound(_))));
    }
}

async fn purge_stream_keeps_offsets_and_clamps_groups(b: Backend) {
    let mut f = fixture(b).await;
    let c = f.client.clone();
    c.create_stream("log", StreamConfig { partitions: 2, ..Default::default() }).await.unwrap();
    for i in 0..10 {
        c.publish("log", Record::new(format!("m{i}")).with_key(format!("k{}", i % 2))).await.unwrap();
    }
    let info = c.stream_info("log").await.unwrap();
    let ends: Vec<u64> = info.partitions.iter().map(|p| p.latest).collect();
    c.commit_offset("log", "g", 0, 0).await.unwrap();
    c.commit_offset("log", "ahead", 0, ends[0] - 1).await.unwrap();
    assert_eq!(c.purge_stream("log").await.unwrap(), 10);
    assert_eq!(c.purge_stream("log").await.unwrap(), 0);
    assert!(matches!(c.purge_stream("never").await, Err(Error::NotFound(_))));
    let info = c.stream_info("log").await.unwrap();
    for (p, end) in info.partitions.iter().zip(&ends) {
        assert_eq!((p.earliest, p.latest), (*end, *end));
    }
    let state = c.group_state("log", "g").await.unwrap();
    assert_eq!(state.partitions[0].committed, Some(ends[0] - 1), "clamped to the end of what was purged");
    assert_eq!(state.partitions[0].lag, 0);
    assert!(c.read("log", 0, 0, 100).await.unwrap().is_empty());
    let c = match restart(&mut f, b).await {
        Some(c2) => c2,
        None => c,
    };
    let pos = c.publish("log", Record::new("after").with_key("k0")).await.unwrap();
    assert_eq!(pos.offset, ends[pos.partition as usize], "offsets keep growing");
    let group = SubscribeSpec { partition: Some(0), start: StartFrom::Committed, group: Some("g".into()) };
    let mut sub = c.subscribe("log", group).await.unwrap();
    if pos.partition == 0 {
        assert_eq!(&next_within(&mut sub).await.unwrap().payload[..], b"after");
    }
    assert_eq!(c.group_state("log", "g").await.unwrap().partitions[0].committed, Some(ends[0] - 1));
}

async fn purge_queue_leaves_in_flight_jobs(b: Backend) {
    let f = fixture(b).await;
    let c = &f.client;
    for i in 0..4 {
        c.enqueue("q", Record::new(format!("ready{i}")), 0, 0).await.unwrap();
    }
    c.enqueue("q", Record::new("later"), 60_000, 0).await.unwrap();
    let busy = c.reserve("q", 60_000, 1000).await.unwrap().unwrap();
    assert_eq!(c.purge_queue("q").await.unwrap(), 4, "3 pending + 1 delayed");
    let stats = c.queue_stats("q").await.unwrap();
    assert_eq!((stats.pending, stats.delayed, stats.in_flight), (0, 0, 1));
    c.ack("q", busy.id).await.unwrap();
    assert!(c.reserve("q", 1000, 100).await.unwrap().is_none());
    assert!(matches!(c.purge_queue("never").await, Err(Error::NotFound(_))));
    // Dead jobs stay in the dead-letter queue.
    c.set_retry_policy("dl", RetryPolicy { max_attempts: 1, ..Default::default() }).await.unwrap();
    c.enqueue("dl", Record::new("x"), 0, 0).await.unwrap();
    let j = c.reserve("dl", 60_000, 1000).await.unwrap().unwrap();
    c.nack("dl", j.id, 0).await.unwrap();
    assert_eq!(c.purge_queue("dl").await.unwrap(), 0);
    assert_eq!(c.queue_stats("dl").await.unwrap().dead, 1);
}

async fn extend_gives_more_time_and_races_the_timeout(b: Backend) {
    let f = fixture(b).await;
    let c = &f.client;
    c.enqueue("slow", Record::new("job"), 0, 0).await.unwrap();
    let j = c.reserve("slow", 300, 1000).await.unwrap().unwrap();
    c.extend("slow", j.id, 60_000).await.unwrap();
    assert!(c.reserve("slow", 1000, 800).await.unwrap().is_none(), "extended: not redelivered");
    assert!(matches!(c.extend("slow", 999_999, 1000).await, Err(Error::NotFound(_))));
    assert!(matches!(c.extend("slow", j.id, 0).await, Err(Error::InvalidArgument(_))));
    c.ack("slow", j.id).await.unwrap();
    assert!(matches!(c.extend("slow", j.id, 1000).await, Err(Error::NotFound(_))));
    // Visibility ran out: the job is no longer reserved.
    c.enqueue("slow", Record::new("job2"), 0, 0).await.unwrap();
    let j = c.reserve("slow", 100, 1000).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(matches!(c.extend("slow", j.id, 60_000).await, Err(Error::Conflict(_))));
    let again = c.reserve("slow", 60_000, 1000).await.unwrap().unwrap();
    assert_eq!((again.id, again.attempt), (j.id, 2));
    c.ack("slow", again.id).await.unwrap();
    // Racing: an extend that succeeds keeps the job; one that loses finds it
    // released for someone else. Never both, never neither.
    for round in 0..15u64 {
        c.enqueue("race", Record::new("r"), 0, 0).await.unwrap();
        let j = c.reserve("race", 60, 1000).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(round * 8)).await;
        match c.extend("race", j.id, 60_000).await {
            Ok(()) => assert!(c.reserve("race", 60_000, 200).await.unwrap().is_none(), "round {round}"),
            Err(Error::Conflict(_)) => {
                let r = c.reserve("race", 60_000, 5000).await.unwrap().expect("released job");
                assert_eq!(r.id, j.id);
            }
            Err(e) => panic!("round {round}: {e}"),
        }
        c.ack("race", j.id).await.unwrap();
    }
}

async fn update_stream_changes_retention_and_grows_partitions(b: Backend) {
    let mut f = fixture(b).await;
    let c = f.client.clone();
    c.create_stream("cfg", StreamConfig { partitions: 2, ..Default::default() }).await.unwrap();
    for i in 0..4 {
        c.publish("cfg", Record::new(format!("m{i}"))).await.unwrap();
    }
    let mut sub = c.subscribe("cfg", spec(StartFrom::Earliest)).await.unwrap();
    let upd = flowmesh::StreamUpdate { partitions: Some(4), max_age_ms: Some(3_600_000), ..Default::default() };
    let cfg = c.update_stream("cfg", upd).await.unwrap();
    assert_eq!((cfg.partitions, cfg.max_age_ms, cfg.max_messages), (4, 3_600_000, 0));
    let info = c.stream_info("cfg").await.unwrap();
    assert_eq!(info.partitions.len(), 4);
    assert_eq!(info.config.max_age_ms, 3_600_000);
    let mut seen = HashSet::new();
    for _ in 0..8 {
        seen.insert(c.publish("cfg", Record::new("rr")).await.unwrap().partition);
    }
    assert_eq!(seen.len(), 4, "round robin reaches the new partitions");
    for _ in 0..4 {
        next_within(&mut sub).await.unwrap(); // the old messages still arrive
    }
    let shrink = flowmesh::StreamUpdate { partitions: Some(3), ..Default::default() };
    assert!(matches!(c.update_stream("cfg", shrink).await, Err(Error::InvalidArgument(_))));
    assert!(matches!(c.update_stream("cfg", Default::default()).await, Err(Error::InvalidArgument(_))));
    let upd = flowmesh::StreamUpdate { max_messages: Some(5), ..Default::default() };
    assert!(matches!(c.update_stream("never", upd).await, Err(Error::NotFound(_))));
    // Retention by count applies from now on (memory: at once; files drop
    // whole segments, so only an upper bound holds there).
    c.update_stream("cfg", upd).await.unwrap();
    c.publish("cfg", Record::new("x").with_key("k")).await.unwrap();
    let info = c.stream_info("cfg").await.unwrap();
    assert_eq!(info.config.max_messages, 5);
    assert_eq!(info.config.max_age_ms, 3_600_000, "unchanged by the second update");
    if let Some(c2) = restart(&mut f, b).await {
        let info = c2.stream_info("cfg").await.unwrap();
        assert_eq!((info.partitions.len(), info.config.max_messages), (4, 5));
        assert_eq!(info.partitions.iter().map(|p| p.latest).sum::<u64>(), 13);
    }
}

contract_tests!(
    message_ids_store_each_record_once,
    publish_assigns_dense_offsets_and_reads_back,
    unknown_streams_and_bad_input_are_clear_errors,
    partitions_route_by_key_and_round_robin,
    subscribe_start_positions,
    consumer_groups_commit_and_resume,
    concurrent_producers_and_subscriber_lose_nothing,
    retention_by_count_and_age,
    queue_orders_by_priority_then_fifo,
    queue_delay_and_long_poll,
    visibility_timeout_redelivers_with_next_attempt,
    an_ack_after_the_visibility_ran_out_takes_or_is_refused_never_lost,
    nack_retry_policy_and_dead_letters,
    queue_workers_process_each_job_once,
    kv_set_get_delete_list_and_revisions,
    kv_ttl_and_compare_and_set,
    kv_watch_sees_changes_in_order,
    two_clients_share_one_engine,
);

/// Names with every character a name may hold, and a name too long for a
/// NATS stream name raw, through each lifecycle call; keys NATS subjects
/// could not carry raw, through a transaction.
async fn unusual_names_and_keys_through_lifecycle_calls(b: Backend) {
    let f = fixture(b).await;
    let c = &f.client;
    let long = format!("t{}/n{}/s{}", "x".repeat(127), "y".repeat(127), "z".repeat(127));
    let names = ["a.b_c-d", "_x.", "Z-9.9", long.as_str()];
    for n in names {
        c.create_stream(n, StreamConfig { partitions: 2, ..Default::default() }).await.unwrap();
        c.publish(n, Record::new("m").with_key("k")).await.unwrap();
        c.enqueue(n, Record::new("j"), 0, 0).await.unwrap();
        c.kv_set(n, "k", Bytes::from("v"), 0).await.unwrap();
    }
    let q = |n: &str| if n.contains('/') { n.to_owned() } else { format!("default/default/{n}") };
    let mut short: Vec<String> = names[..3].iter().map(|n| q(n)).collect();
    short.sort();
    assert_eq!(c.list_streams("").await.unwrap(), short);
    assert_eq!(c.list_queues("").await.unwrap(), short);
    assert_eq!(c.list_buckets("").await.unwrap(), short);
    assert_eq!(c.list_streams("a.").await.unwrap(), [q("a.b_c-d")]);
    let tenant = &long[..129]; // "t…/": the long name's tenant, qualified
    for list in [c.list_streams(&long[..130]).await, c.list_queues(tenant).await, c.list_buckets(&long).await] {
        assert_eq!(list.unwrap(), std::slice::from_ref(&long));
    }
    let upd = flowmesh::StreamUpdate { partitions: Some(3), ..Default::default() };
    assert_eq!(c.update_stream(&long, upd).await.unwrap().partitions, 3);
    assert_eq!(c.purge_stream(&long).await.unwrap(), 1);
    assert_eq!(c.purge_queue(&long).await.unwrap(), 1);
    let keys = ["a.b", "*", ">", "sp ace", "ü/ß", "_2E", "x\u{1F600}"];
    let ops = keys.iter().map(|k| flowmesh::TxnOp::Put {
        bucket: long.clone(),
        key: (*k).into(),
        value: Bytes::from(*k),
        ttl_ms: 0,
    });
    c.kv_txn(ops.collect()).await.unwrap();
    let listed = c.kv_txn(vec![flowmesh::TxnOp::List { bucket: long.clone(), prefix: String::new() }]).await.unwrap();
    let flowmesh::TxnResult::List(entries) = &listed[0] else { panic!("{listed:?}") };
    let mut want: Vec<&str> = keys.iter().copied().chain(["k"]).collect();
    want.sort();
    assert_eq!(entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), want);
    assert!(entries.iter().filter(|e| e.key != "k").all(|e| e.value == e.key.as_bytes()));
    for n in names {
        c.delete_stream(n).await.unwrap();
        c.delete_queue(n).await.unwrap();
        c.delete_bucket(n).await.unwrap();
        assert!(matches!(c.delete_stream(n).await, Err(Error::NotFound(_))));
    }
    assert!(c.list_streams("").await.unwrap().is_empty());
    assert!(c.list_buckets(tenant).await.unwrap().is_empty());
    for bad in ["a b", "a*", "a>", "", "a/b"] {
        assert!(matches!(c.delete_stream(bad).await, Err(Error::InvalidArgument(_))), "{bad:?}");
        assert!(matches!(c.purge_queue(bad).await, Err(Error::InvalidArgument(_))), "{bad:?}");
        assert!(matches!(c.delete_bucket(bad).await, Err(Error::InvalidArgument(_))), "{bad:?}");
    }
}

mod lifecycle {
    use super::*;

    contract_tests!(
        lists_are_scoped_filtered_and_qualified,
        delete_stream_ends_feeds_frees_files_and_survives_restart,
        delete_while_another_client_publishes,
        delete_queue_and_bucket_end_waiters_and_watches,
        purge_stream_keeps_offsets_and_clamps_groups,
        purge_queue_leaves_in_flight_jobs,
        extend_gives_more_time_and_races_the_timeout,
        update_stream_changes_retention_and_grows_partitions,
        unusual_names_and_keys_through_lifecycle_calls,
    );
}
