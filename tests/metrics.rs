//! Client metrics, broker metrics and the memory tier, checked
//! with exact counts after a known workload and parsed with a real
//! Prometheus text parser.

mod common;

use std::time::Duration;

use common::{fixture, free_addr, Backend, Broker};
use flowmesh::metrics::{report, Op};
use flowmesh::{Client, Error, Options, Record, RetryPolicy, StartFrom, StreamConfig, SubscribeSpec, Tier};
use futures::StreamExt;
use prometheus_parse::{Scrape, Value};

const PATIENCE: Duration = Duration::from_secs(20);

fn scrape(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("valid Prometheus text")
}

/// The value of the one sample named `name` whose labels include `labels`.
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&prometheus_parse::Sample> = s
        .samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(found.len(), 1, "expected one sample {name}{labels:?}, found {}", found.len());
    match &found[0].value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{name} is not a scalar: {other:?}"),
    }
}

/// (observations, +Inf bucket) of a histogram series; both must agree.
fn histogram_count(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let h = s
        .samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no histogram {name}{labels:?}"));
    let Value::Histogram(buckets) = &h.value else { panic!("{name} is not a histogram") };
    assert!(buckets.len() > 10, "buckets: {buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count), "cumulative buckets");
    buckets.last().unwrap().count
}

async fn next_within<S: futures::Stream + Unpin>(s: &mut S) -> S::Item {
    tokio::time::timeout(PATIENCE, s.next()).await.expect("timed out waiting for an item").expect("stream ended")
}

/// A known workload; every count below follows from it.
async fn workload(c: &Client) {
    c.create_stream("m", StreamConfig::default()).await.unwrap();
    for i in 0..5 {
        c.publish("m", Record::new(format!("msg-{i:04}"))).await.unwrap(); // 8 bytes each
    }
    let batch = (5..8).map(|i| Record::new(format!("msg-{i:04}"))).collect();
    c.publish_batch("m", batch).await.unwrap();
    let mut feed =
        c.subscribe("m", SubscribeSpec { partition: None, start: StartFrom::Earliest, group: None }).await.unwrap();
    for i in 0..8u64 {
        assert_eq!(next_within(&mut feed).await.unwrap().offset, i);
    }
    drop(feed);
    c.kv_set("b", "k1", "v1", 0).await.unwrap();
    c.kv_set("b", "k2", "v2", 0).await.unwrap();
    c.kv_get("b", "k1").await.unwrap();
    assert!(matches!(c.kv_get("b", "missing").await, Err(Error::NotFound(_))));
    c.enqueue("q", Record::new("job-a"), 0, 0).await.unwrap();
    c.enqueue("q", Record::new("job-b"), 0, 0).await.unwrap();
    let jobs = c.receive("q", 2, 30_000, 5_000).await.unwrap();
    assert_eq!(jobs.len(), 2);
    for j in jobs {
        c.ack("q", j.id).await.unwrap();
    }
}

async fn client_metrics_exact(backend: Backend) {
    let f = fixture(backend).await;
    workload(&f.client).await;
    let m = f.client.metrics();
    assert_eq!(m.operations(Op::Publish, "ok"), 6);
    assert_eq!(m.operations(Op::KvGet, "not_found"), 1);

    let s = scrape(&m.encode());
    let ops = "flowmesh_client_operations_total";
    assert_eq!(value(&s, ops, &[("op", "create_stream"), ("status", "ok")]), 1.0);
    assert_eq!(value(&s, ops, &[("op", "publish"), ("status", "ok")]), 6.0);
    assert_eq!(value(&s, ops, &[("op", "subscribe"), ("status", "ok")]), 1.0);
    assert_eq!(value(&s, ops, &[("op", "kv_set"), ("status", "ok")]), 2.0);
    assert_eq!(value(&s, ops, &[("op", "kv_get"), ("status", "ok")]), 1.0);
    assert_eq!(value(&s, ops, &[("op", "kv_get"), ("status", "not_found")]), 1.0);
    assert_eq!(value(&s, ops, &[("op", "enqueue"), ("status", "ok")]), 2.0);
    assert_eq!(value(&s, ops, &[("op", "reserve"), ("status", "ok")]), 1.0);
    assert_eq!(value(&s, ops, &[("op", "ack"), ("status", "ok")]), 2.0);
    assert_eq!(value(&s, "flowmesh_client_messages_published_total", &[]), 8.0);
    assert_eq!(value(&s, "flowmesh_client_published_bytes_total", &[]), 64.0);
    assert_eq!(value(&s, "flowmesh_client_messages_delivered_total", &[]), 8.0);
    assert_eq!(value(&s, "flowmesh_client_delivered_bytes_total", &[]), 64.0);
    assert_eq!(value(&s, "flowmesh_client_jobs_enqueued_total", &[]), 2.0);
    assert_eq!(value(&s, "flowmesh_client_jobs_received_total", &[]), 2.0);
    assert_eq!(value(&s, "flowmesh_client_in_flight", &[]), 0.0);
    assert_eq!(value(&s, "flowmesh_client_reconnects_total", &[]), 0.0);
    let lat = "flowmesh_client_operation_duration_seconds";
    assert_eq!(histogram_count(&s, lat, &[("op", "publish")]), 6.0);
    assert_eq!(histogram_count(&s, lat, &[("op", "kv_get")]), 2.0);
    // Operations never run have no series at all (no noise of zeros).
    assert!(!s.samples.iter().any(|x| x.labels.get("op") == Some("dlq_replay")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliability_hooks_are_exported() {
    let c = Client::connect("mem://", &Options::new()).await.unwrap();
    c.metrics().reconnect();
    c.metrics().reconnect();
    c.metrics().set_connection_state(2);
    c.metrics().set_breaker_state(1);
    let s = scrape(&c.metrics().encode());
    assert_eq!(value(&s, "flowmesh_client_reconnects_total", &[]), 2.0);
    assert_eq!(value(&s, "flowmesh_client_connection_state", &[]), 2.0);
    assert_eq!(value(&s, "flowmesh_client_breaker_state", &[]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_rejections_are_not_engine_calls() {
    let c = Client::connect("mem://", &Options::new().with("max_payload_bytes", "4").unwrap()).await.unwrap();
    assert!(matches!(c.publish("s", Record::new("too long")).await, Err(Error::TooLarge(_))));
    assert_eq!(c.metrics().operations(Op::Publish, "too_large"), 0);
    assert_eq!(c.metrics().operations(Op::Publish, "ok"), 0);
    // Engine-side errors are counted by kind.
    assert!(c.read("nope", 0, 0, 1).await.is_err());
    assert_eq!(c.metrics().operations(Op::Read, "not_found"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_metrics_exact() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_addr = free_addr();
    let b =
        Broker::start_with(&format!("file://{}", dir.path().display()), &free_addr(), &["--metrics", &metrics_addr]);
    common::wait_for_port(&metrics_addr);
    let c = Client::connect(&b.url(), &Options::new()).await.unwrap();
    c.create_stream("s", StreamConfig::default()).await.unwrap();
    for i in 0..10 {
        c.publish("s", Record::new(format!("m{i}"))).await.unwrap(); // 2 bytes each
    }
    c.commit_offset("s", "g", 0, 3).await.unwrap(); // 4 processed, lag 6
    let hot = StreamConfig { tier: Tier::Memory, max_messages: 5, ..Default::default() };
    c.create_stream("hot", hot).await.unwrap();
    c.publish_batch("hot", (0..8).map(|i| Record::new(format!("h{i}"))).collect()).await.unwrap();
    for k in ["a", "b", "c"] {
        c.kv_set("kv", k, "v", 0).await.unwrap();
    }
    assert!(c.kv_get("kv", "zz").await.is_err());
    for i in 0..4 {
        c.enqueue("q", Record::new(format!("j{i}")), 0, 0).await.unwrap();
    }
    c.enqueue("q", Record::new("later"), 60_000, 0).await.unwrap();
    c.set_retry_policy("q", RetryPolicy { max_attempts: 1, ..Default::default() }).await.unwrap();
    let dead = c.reserve("q", 30_000, 5_000).await.unwrap().unwrap();
    c.nack("q", dead.id, 0).await.unwrap(); // last attempt: to the DLQ
    let held = c.reserve("q", 30_000, 5_000).await.unwrap().unwrap(); // stays in flight
    assert_ne!(dead.id, held.id);

    let url = format!("http://{metrics_addr}/metrics");
    let text = report::fetch(&url, PATIENCE).await.unwrap();
    let s = scrape(&text);
    let req = "flowmesh_broker_requests_total";
    assert_eq!(value(&s, req, &[("service", "Streams"), ("method", "CreateStream"), ("status", "ok")]), 2.0);
    assert_eq!(value(&s, req, &[("service", "Streams"), ("method", "CommitOffset"), ("status", "ok")]), 1.0);
    assert_eq!(value(&s, req, &[("service", "Kv"), ("method", "Set"), ("status", "ok")]), 3.0);
    assert_eq!(value(&s, req, &[("service", "Kv"), ("method", "Get"), ("status", "not_found")]), 1.0);
    assert_eq!(value(&s, req, &[("service", "Queues"), ("method", "Enqueue"), ("status", "ok")]), 5.0);
    assert_eq!(value(&s, req, &[("service", "Queues"), ("method", "Nack"), ("status", "ok")]), 1.0);
    // Publishes are pipelined over one bidirectional stream: one request.
    assert_eq!(value(&s, req, &[("service", "Streams"), ("method", "Publish"), ("status", "ok")]), 1.0);
    let lat = "flowmesh_broker_request_duration_seconds";
    assert_eq!(histogram_count(&s, lat, &[("service", "Kv"), ("method", "Set")]), 3.0);
    assert_eq!(histogram_count(&s, lat, &[("service", "Queues"), ("method", "Enqueue")]), 5.0);
    assert_eq!(value(&s, "flowmesh_broker_connections", &[]), 1.0);
    // In flight = until response headers: the open publish stream is not counted.
    assert_eq!(value(&s, "flowmesh_broker_requests_in_flight", &[]), 0.0);
    let stream = [("stream", "default/default/s"), ("tier", "durable")];
    assert_eq!(value(&s, "flowmesh_broker_stream_messages", &stream), 10.0);
    assert_eq!(value(&s, "flowmesh_broker_stream_bytes", &stream), 20.0);
    let hot = [("stream", "default/default/hot"), ("tier", "memory")];
    assert_eq!(value(&s, "flowmesh_broker_stream_messages", &hot), 5.0, "bounded: oldest dropped");
    assert_eq!(
        value(&s, "flowmesh_broker_consumer_group_lag", &[("stream", "default/default/s"), ("group", "g")]),
        6.0
    );
    let q = [("queue", "default/default/q")];
    assert_eq!(value(&s, "flowmesh_broker_queue_pending", &q), 2.0);
    assert_eq!(value(&s, "flowmesh_broker_queue_in_flight", &q), 1.0);
    assert_eq!(value(&s, "flowmesh_broker_queue_delayed", &q), 1.0);
    assert_eq!(value(&s, "flowmesh_broker_dlq_size", &q), 1.0);
    assert_eq!(value(&s, "flowmesh_broker_kv_keys", &[("bucket", "default/default/kv")]), 3.0);
    assert!(value(&s, "flowmesh_broker_storage_bytes", &[]) > 20.0);

    // The broker meters its engine too: per message, where the publish stream is one request.
    let engine_ops = "flowmesh_broker_engine_operations_total";
    assert_eq!(value(&s, engine_ops, &[("op", "publish"), ("status", "ok")]), 11.0);
    assert_eq!(value(&s, engine_ops, &[("op", "kv_get"), ("status", "not_found")]), 1.0);
    assert_eq!(value(&s, "flowmesh_broker_engine_messages_published_total", &[]), 18.0);
    assert_eq!(value(&s, "flowmesh_broker_engine_published_bytes_total", &[]), 36.0);
    assert_eq!(histogram_count(&s, "flowmesh_broker_engine_operation_duration_seconds", &[("op", "publish")]), 11.0);

    // The readable table shows the same numbers.
    let table = report::render(&report::parse(&text));
    assert!(table.contains("default/default/hot") && table.contains("memory"), "{table}");
    assert!(table.contains("messages published 18  delivered 0"), "{table}");
    assert!(
        table.lines().any(|l| l.contains("default/default/q")
            && l.split_whitespace().collect::<Vec<_>>()[1..] == ["2", "1", "1", "1"]),
        "{table}"
    );

    // Other paths are 404; the CLI reports an unreachable URL clearly.
    assert!(matches!(
        report::fetch(&format!("http://{metrics_addr}/nope"), PATIENCE).await,
        Err(Error::Unavailable(_))
    ));
    assert!(matches!(report::fetch("ftp://x", PATIENCE).await, Err(Error::InvalidArgument(_))));
}

#[test]
fn stats_and_top_commands() {
    let metrics_addr = free_addr();
    let _b = Broker::start_with("mem://", &free_addr(), &["--metrics", &metrics_addr]);
    common::wait_for_port(&metrics_addr);
    let url = format!("http://{metrics_addr}/metrics");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flowmesh"))
        .args(["stats", "--metrics-url", &url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("connections"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flowmesh"))
        .args(["top", "--metrics-url", &url, "--iterations", "3", "--interval", "0.05"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches("flowmesh top").count(), 3);
    let dead = format!("http://{}/metrics", free_addr());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flowmesh"))
        .args(["stats", "--metrics-url", &dead])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

// ---- memory tier ----

fn memory(max_messages: u64) -> StreamConfig {
    StreamConfig { tier: Tier::Memory, max_messages, ..Default::default() }
}

/// Every file under `dir` whose path mentions `needle`.
fn files_named(dir: &std::path::Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.to_string_lossy().contains(needle) {
                found.push(p.display().to_string());
            }
            if p.is_dir() {
                todo.push(p);
            }
        }
    }
    found
}

async fn memory_tier_writes_no_files(backend: Backend) {
    let f = fixture(backend).await;
    let c = &f.client;
    c.create_stream("hotstream", memory(0)).await.unwrap();
    c.create_stream("coldstream", StreamConfig::default()).await.unwrap();
    for i in 0..50 {
        c.publish("hotstream", Record::new(format!("h{i}"))).await.unwrap();
        c.publish("coldstream", Record::new(format!("c{i}"))).await.unwrap();
    }
    c.commit_offset("hotstream", "g", 0, 10).await.unwrap();
    assert_eq!(c.read("hotstream", 0, 0, 100).await.unwrap().len(), 50);
    let info = c.stream_info("hotstream").await.unwrap();
    assert_eq!(info.config.tier, Tier::Memory);
    // Unset bounds get the documented defaults: a memory stream is always bounded.
    assert_eq!(info.config.max_messages, Tier::memory_default_max_messages());
    assert_eq!(info.config.max_bytes, Tier::memory_default_max_bytes());
    // Same name, other tier: a clear conflict.
    assert!(matches!(c.create_stream("hotstream", StreamConfig::default()).await, Err(Error::AlreadyExists(_))));
    c.engine().sync().await.unwrap();
    let dir = f.dir.as_ref().expect("a durable backend").path();
    assert!(files_named(dir, "hotstream").is_empty(), "{:?}", files_named(dir, "hotstream"));
    assert!(!files_named(dir, "coldstream").is_empty(), "the durable stream is on disk");
}

mod memory_tier_files {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn file() {
        memory_tier_writes_no_files(Backend::File).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn remote_file() {
        memory_tier_writes_no_files(Backend::RemoteFile).await
    }
}

async fn memory_tier_live_subscribers_get_everything(backend: Backend) {
    let f = fixture(backend).await;
    let c = &f.client;
    c.create_stream("live", memory(0)).await.unwrap();
    let spec = SubscribeSpec { partition: None, start: StartFrom::Latest, group: None };
    let mut subs = [c.subscribe("live", spec.clone()).await.unwrap(), c.subscribe("live", spec).await.unwrap()];
    let n = 2000u64;
    let producer = {
        let c = c.clone();
        tokio::spawn(async move {
            for chunk in 0..n / 100 {
                let batch = (0..100).map(|i| Record::new(format!("{}", chunk * 100 + i))).collect();
                c.publish_batch("live", batch).await.unwrap();
            }
        })
    };
    for sub in subs.iter_mut() {
        for i in 0..n {
            let m = next_within(sub).await.unwrap();
            assert_eq!((m.offset, &m.payload[..]), (i, i.to_string().as_bytes()));
        }
    }
    producer.await.unwrap();
}

async fn memory_tier_slow_consumer_is_bounded(backend: Backend) {
    let f = fixture(backend).await;
    let c = &f.client;
    c.create_stream("slow", memory(100)).await.unwrap();
    let mut sub =
        c.subscribe("slow", SubscribeSpec { partition: None, start: StartFrom::Earliest, group: None }).await.unwrap();
    // 10 MiB in all: more than a remote subscriber's transport buffers hold,
    // so the broker, too, has dropped messages this subscriber never read.
    let pad = "x".repeat(1024);
    let total = 10_000u64;
    for chunk in 0..total / 100 {
        c.publish_batch("slow", (0..100).map(|i| Record::new(format!("{}:{pad}", chunk * 100 + i))).collect())
            .await
            .unwrap();
    }
    // Memory stays bounded: only the newest 100 are retained.
    let info = c.stream_info("slow").await.unwrap();
    assert_eq!((info.partitions[0].earliest, info.partitions[0].latest), (total - 100, total));
    // The slow subscriber continues from the earliest retained offset; the
    // jump in offsets tells it what it missed.
    let mut offsets = Vec::new();
    while offsets.last() != Some(&(total - 1)) {
        offsets.push(next_within(&mut sub).await.unwrap().offset);
        assert!(offsets.len() as u64 <= total);
    }
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "in order");
    assert!((offsets.len() as u64) < total, "the subscriber missed what was dropped ({} received)", offsets.len());
    assert!(offsets.ends_with(&(total - 100..total).collect::<Vec<_>>()));
    if matches!(backend, Backend::Mem | Backend::File) {
        assert_eq!(offsets[0], total - 100, "an embedded subscriber that never ran skips to the retained window");
    }
}

#[test]
fn tier_option() {
    let cfg = Options::new().with("tier", "memory").unwrap().stream_config().unwrap();
    assert_eq!(cfg.tier, Tier::Memory);
    assert_eq!(Options::new().stream_config().unwrap().tier, Tier::Durable);
    let err = Options::new().with("tier", "fast").unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(ref m) if m.contains("durable or memory")), "{err}");
    assert!(Options::new().with("tier", "memory").unwrap().subscription().is_err(), "tier is a stream option");
}

contract_tests!(
    client_metrics_exact,
    memory_tier_live_subscribers_get_everything,
    memory_tier_slow_consumer_is_bounded
);

#[test]
fn broker_logs_requests_at_debug_level() {
    let addr = free_addr();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_flowmesh"))
        .args(["serve", "--listen", &addr, "--data", "mem://", "--log-json"])
        .env("RUST_LOG", "flowmesh=debug")
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    common::wait_for_port(&addr);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = Client::connect(&format!("grpc://{addr}"), &Options::new()).await.unwrap();
        c.kv_set("logged", "k", "v", 0).await.unwrap();
    });
    // The log line is written when the response is; give the writer a moment (bounded).
    let deadline = std::time::Instant::now() + PATIENCE;
    let text = loop {
        let text = std::fs::read_to_string(log.path()).unwrap();
        if text.contains("\"method\":\"Set\"") || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    let line =
        text.lines().find(|l| l.contains("\"method\":\"Set\"")).unwrap_or_else(|| panic!("no request log in:\n{text}"));
    let v: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    assert_eq!(v["level"], "DEBUG");
    assert_eq!(v["fields"]["service"], "Kv");
    assert_eq!(v["fields"]["status"], "ok");
    assert!(v["fields"]["elapsed_us"].is_u64());
}
