//! `nats://` in production shape, on 3-node JetStream clusters on loopback:
//! brokers as stateless gateways in front of one cluster, a client failing
//! over between listed gateways, and faults of the cluster itself (a stream
//! leader killed, a node paused, the whole cluster restarted, a node cut off
//! from its peers, client processes killed mid-work). What must hold: every
//! acknowledged message stored exactly once at its acknowledged position,
//! subscribers seeing each once in order per partition, and queue jobs,
//! group offsets and KV revisions surviving. Every wait is bounded; the
//! bounds are generous (these run beside CPU hogs on two cores). They run
//! one at a time in `make test-nats-faults` (part of `make test`), not
//! beside the other suites: a 3-node cluster wants the machine's cores.

mod common;

use std::collections::HashMap;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proxy::{Mode, Proxy};
use common::{free_addr, Broker, NatsCluster};
use flowmesh::{Client, Error, Options, Position, Record, StartFrom, StreamConfig, SubscribeSpec};
use futures::StreamExt;

/// Upper bound on any single phase of a test (loaded 2-core machine).
const PHASE: Duration = Duration::from_secs(120);

fn options(pairs: &[(&str, &str)]) -> Options {
    pairs.iter().fold(Options::new(), |o, (k, v)| o.with(k, v).unwrap())
}

fn merged(a: &Options, b: &Options) -> Options {
    b.iter().fold(a.clone(), |o, (k, v)| o.with(k, v).unwrap())
}

/// Messages per producer in the fault tests (4 producers): FM_NATS_FAULT_MESSAGES.
fn per_producer(default: u64) -> u64 {
    std::env::var("FM_NATS_FAULT_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A broker serving the cluster's data for the account in `account`.
fn gateway(cluster: &NatsCluster, account: &Options) -> Broker {
    let mut extra = Vec::new();
    for (k, v) in account.iter() {
        extra.push("--data-option".to_owned());
        extra.push(format!("{k}={v}"));
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    Broker::start_with(&cluster.url, &free_addr(), &extra)
}

/// One node per line of `nats-cluster.sh status`: (pid if running, monitor port).
fn nodes(cluster: &NatsCluster) -> Vec<(Option<u32>, u16)> {
    cluster
        .ctl(&["status"])
        .lines()
        .map(|l| {
            let pid = l.split("running pid ").nth(1).and_then(|r| r.split(' ').next()?.parse().ok());
            let monitor = l.split("monitor=").nth(1).and_then(|m| m.trim().parse().ok()).expect("monitor port");
            (pid, monitor)
        })
        .collect()
}

fn client_port(cluster: &NatsCluster, node: usize) -> u16 {
    let line = cluster.ctl(&["status"]).lines().nth(node - 1).expect("node line").to_owned();
    line.split("client=").nth(1).and_then(|r| r.split(' ').next()?.parse().ok()).expect("client port")
}

/// The node (1-based) leading the JetStream stream of `account` that
/// carries partition 0 of a flowmesh stream (`FMS_<name>_0`).
fn leader_of_partition0(cluster: &NatsCluster, account: &str) -> Option<usize> {
    for (pid, monitor) in nodes(cluster) {
        pid?;
        let url = format!("http://127.0.0.1:{monitor}/jsz?acc={account}&streams=true");
        let Ok(out) = Command::new("curl").args(["-fsS", "--max-time", "5", &url]).output() else { continue };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else { continue };
        for acc in v["account_details"].as_array().into_iter().flatten() {
            for s in acc["stream_detail"].as_array().into_iter().flatten() {
                let name = s["name"].as_str().unwrap_or_default();
                if name.starts_with("FMS_") && name.ends_with("_0") {
                    if let Some(l) = s["cluster"]["leader"].as_str() {
                        return l.trim_start_matches('n').parse().ok();
                    }
                }
            }
        }
    }
    None
}

/// The JetStream account of a test account's options (user tN -> TN).
fn account_name(account: &Options) -> String {
    account.get("user").expect("test account user").to_uppercase()
}

/// Publishes `n` records `<id>-<i>` with key `key`, each retried (same msg
/// id, so stored once) until acknowledged; returns each one's position.
async fn produce(client: Client, stream: String, id: String, n: u64, progress: Arc<AtomicU64>) -> Vec<Position> {
    let mut acked = Vec::with_capacity(n as usize);
    let mut failures = 0u64;
    for i in 0..n {
        let deadline = Instant::now() + PHASE;
        loop {
            let rec = Record::new(format!("{id}-{i}")).with_key(id.clone()).with_msg_id(format!("{id}-{i}"));
            match client.publish(&stream, rec).await {
                Ok(pos) => {
                    acked.push(pos);
                    progress.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    failures += 1;
                    assert!(Instant::now() < deadline, "{id}-{i} not acknowledged within {PHASE:?}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    eprintln!("producer {id}: {n} acknowledged, {failures} failed attempts retried");
    acked
}

/// Every message of every partition of `stream`, by partition.
async fn read_all(client: &Client, stream: &str) -> HashMap<u32, Vec<flowmesh::Message>> {
    try_read_all(client, stream).await.unwrap()
}

async fn try_read_all(client: &Client, stream: &str) -> flowmesh::Result<HashMap<u32, Vec<flowmesh::Message>>> {
    let info = client.stream_info(stream).await?;
    let mut all = HashMap::new();
    for p in info.partitions {
        let mut got: Vec<flowmesh::Message> = Vec::new();
        let mut next = p.earliest;
        while next < p.latest {
            let batch = client.read(stream, p.partition, next, 1000).await?;
            assert!(!batch.is_empty(), "partition {} has a hole at {next} (latest {})", p.partition, p.latest);
            next = batch.last().unwrap().offset + 1;
            got.extend(batch);
        }
        all.insert(p.partition, got);
    }
    Ok(all)
}

/// Every acknowledged record is stored exactly once, at its position.
fn check_exactly_once(acked: &HashMap<String, Position>, stored: &HashMap<u32, Vec<flowmesh::Message>>) {
    let mut seen: HashMap<String, (u32, u64)> = HashMap::new();
    for (p, msgs) in stored {
        for m in msgs {
            let payload = String::from_utf8(m.payload.to_vec()).unwrap();
            if let Some(first) = seen.insert(payload.clone(), (*p, m.offset)) {
                panic!("{payload} stored twice: at {first:?} and at ({p}, {})", m.offset);
            }
        }
    }
    for (payload, pos) in acked {
        assert_eq!(seen.get(payload), Some(&(pos.partition, pos.offset)), "{payload} not where it was acknowledged");
    }
}

/// Reads a subscription until it saw `total` messages: each partition's
/// offsets must come once, in order, without gaps.
async fn watch_subscription(mut feed: flowmesh::MessageStream, total: usize) -> HashMap<String, (u32, u64)> {
    let mut last: HashMap<u32, u64> = HashMap::new();
    let mut seen = HashMap::new();
    while seen.len() < total {
        let m = tokio::time::timeout(PHASE, feed.next())
            .await
            .unwrap_or_else(|_| panic!("subscriber stalled after {} of {total}", seen.len()))
            .expect("subscription ended")
            .expect("subscription failed");
        if let Some(prev) = last.insert(m.partition, m.offset) {
            assert_eq!(m.offset, prev + 1, "partition {} went from {prev} to {}", m.partition, m.offset);
        }
        let payload = String::from_utf8(m.payload.to_vec()).unwrap();
        assert!(seen.insert(payload.clone(), (m.partition, m.offset)).is_none(), "subscriber saw {payload} twice");
    }
    seen
}

/// 4 producers and a subscriber on a fresh 4-partition stream of a fresh
/// account while `fault` runs (given the account and the acknowledged
/// count so far); then checks exactly-once with a fresh client.
async fn publish_through<F, Fut>(cluster: &NatsCluster, per: u64, fault: F)
where
    F: FnOnce(Options, Arc<AtomicU64>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let account = cluster.account();
    let opts = merged(&account, &options(&[("request_timeout_ms", "10000")]));
    let client = Client::connect(&cluster.url, &opts).await.unwrap();
    let stream = "orders".to_owned();
    client.create_stream(&stream, StreamConfig { partitions: 4, ..Default::default() }).await.unwrap();
    let spec = SubscribeSpec { partition: None, start: StartFrom::Earliest, group: None };
    let feed = client.subscribe(&stream, spec).await.unwrap();
    let subscriber = tokio::spawn(watch_subscription(feed, 4 * per as usize));
    let started = Instant::now();
    let progress = Arc::new(AtomicU64::new(0));
    let producers: Vec<_> = (0..4)
        .map(|p| tokio::spawn(produce(client.clone(), stream.clone(), format!("p{p}"), per, progress.clone())))
        .collect();
    fault(account.clone(), progress.clone()).await;
    let mut acked = HashMap::new();
    for (p, h) in producers.into_iter().enumerate() {
        for (i, pos) in h.await.unwrap().into_iter().enumerate() {
            acked.insert(format!("p{p}-{i}"), pos);
        }
    }
    let took = started.elapsed();
    eprintln!("{} publishes acknowledged in {took:?} ({:.0}/s)", acked.len(), acked.len() as f64 / took.as_secs_f64());
    let seen = subscriber.await.unwrap();
    // A fresh client on the healed cluster reads what the first one wrote.
    let reader = Client::connect(&cluster.url, &opts).await.unwrap();
    let stored = read_all(&reader, &stream).await;
    check_exactly_once(&acked, &stored);
    for (payload, pos) in &acked {
        assert_eq!(seen.get(payload), Some(&(pos.partition, pos.offset)), "subscriber saw {payload} elsewhere");
    }
}

/// Waits (bounded) until `progress` reaches `n`.
async fn until_progress(progress: &AtomicU64, n: u64) {
    let deadline = Instant::now() + PHASE;
    while progress.load(Ordering::Relaxed) < n {
        assert!(Instant::now() < deadline, "fewer than {n} publishes acknowledged within {PHASE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- gateways

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "3-node clusters: make test-nats-faults"]
async fn two_gateways_serve_the_same_data() {
    let cluster = common::shared_nats(3);
    let account = cluster.account();
    let (ga, gb) = (gateway(cluster, &account), gateway(cluster, &account));
    let a = Client::connect(&ga.url(), &Options::new()).await.unwrap();
    let b = Client::connect(&gb.url(), &Options::new()).await.unwrap();

    // Streams: publish through A, consume and commit through B.
    a.create_stream("events", StreamConfig { partitions: 2, ..Default::default() }).await.unwrap();
    let mut positions = Vec::new();
    for i in 0..50 {
        positions
            .push(a.publish("events", Record::new(format!("e{i}")).with_key(format!("k{}", i % 5))).await.unwrap());
    }
    let spec = SubscribeSpec { partition: None, start: StartFrom::Earliest, group: Some("billing".into()) };
    let seen = watch_subscription(b.subscribe("events", spec).await.unwrap(), 50).await;
    for (i, pos) in positions.iter().enumerate() {
        assert_eq!(seen[&format!("e{i}")], (pos.partition, pos.offset));
    }
    b.commit_offset("events", "billing", positions[7].partition, positions[7].offset).await.unwrap();
    assert_eq!(a.get_offset("events", "billing", positions[7].partition).await.unwrap(), positions[7].offset);
    let read = a.read("events", positions[7].partition, positions[7].offset, 1).await.unwrap();
    assert_eq!(&read[0].payload[..], b"e7");

    // Queues: enqueued through A, reserved and acked through B; a job
    // reserved through A and never acked comes back through B.
    let id = a.enqueue("jobs", Record::new("j1"), 0, 0).await.unwrap();
    let job = b.reserve("jobs", 30_000, 10_000).await.unwrap().expect("job through B");
    assert_eq!((job.id, &job.payload[..]), (id, &b"j1"[..]));
    b.ack("jobs", job.id).await.unwrap();
    let id2 = b.enqueue("jobs", Record::new("j2"), 0, 0).await.unwrap();
    let held = a.reserve("jobs", 1500, 10_000).await.unwrap().expect("job through A");
    assert_eq!(held.id, id2);
    let again = b.reserve("jobs", 30_000, 20_000).await.unwrap().expect("job back after its visibility timeout");
    assert_eq!((again.id, again.attempt), (id2, 2));
    b.ack("jobs", again.id).await.unwrap();
    let stats = a.queue_stats("jobs").await.unwrap();
    assert_eq!((stats.pending, stats.in_flight), (0, 0), "{stats:?}");

    // KV: written through both, compare-and-set across them, watched on A.
    let mut watch = a.kv_watch("cfg", "").await.unwrap();
    let r1 = a.kv_set("cfg", "mode", "on", 0).await.unwrap();
    assert_eq!(b.kv_get("cfg", "mode").await.unwrap().revision, r1);
    let r2 = b.kv_cas("cfg", "mode", "off", r1).await.unwrap();
    assert!(matches!(a.kv_cas("cfg", "mode", "stale", r1).await, Err(Error::Conflict(_))));
    let e = a.kv_get("cfg", "mode").await.unwrap();
    assert_eq!((&e.value[..], e.revision), (&b"off"[..], r2));
    for want in [r1, r2] {
        let ev = tokio::time::timeout(PHASE, watch.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(ev.revision, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "3-node clusters: make test-nats-faults"]
async fn a_client_fails_over_between_listed_gateways() {
    let cluster = common::shared_nats(3);
    let account = cluster.account();
    let mut ga = gateway(cluster, &account);
    let gb = gateway(cluster, &account);
    let url = format!("grpc://{},{}", ga.addr, gb.addr);
    let opts = options(&[
        ("heartbeat_ms", "500"),
        ("request_timeout_ms", "10000"),
        ("reconnect_initial_ms", "50"),
        ("reconnect_max_ms", "500"),
        ("max_retries", "10"),
    ]);
    let client = Client::connect(&url, &opts).await.unwrap();
    client.create_stream("ticks", StreamConfig { partitions: 2, ..Default::default() }).await.unwrap();
    let spec = SubscribeSpec { partition: None, start: StartFrom::Earliest, group: None };
    let feed = client.subscribe("ticks", spec).await.unwrap();
    let total = 600u64;
    let subscriber = tokio::spawn(watch_subscription(feed, total as usize));
    client.kv_set("state", "k", "before", 0).await.unwrap();

    // Publish one by one; kill A (the current broker) a third of the way.
    let progress = Arc::new(AtomicU64::new(0));
    let producer = {
        let client = client.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut acked = HashMap::new();
            for i in 0..total {
                // The client's own retries carry the publish across the failover.
                let pos = client.publish("ticks", Record::new(format!("t{i}"))).await.expect("publish across failover");
                acked.insert(format!("t{i}"), pos);
                progress.fetch_add(1, Ordering::Relaxed);
            }
            acked
        })
    };
    until_progress(&progress, total / 3).await;
    ga.kill();
    let acked = tokio::time::timeout(PHASE, producer).await.expect("producer stalled").unwrap();
    let seen = tokio::time::timeout(PHASE, subscriber).await.expect("subscriber stalled").unwrap();
    assert_eq!(acked.len() as u64, total);
    let stored = read_all(&client, "ticks").await;
    check_exactly_once(&acked, &stored);
    for (payload, pos) in &acked {
        assert_eq!(seen.get(payload), Some(&(pos.partition, pos.offset)));
    }
    // Everything else goes on through B.
    assert_eq!(&client.kv_get("state", "k").await.unwrap().value[..], b"before");
    client.kv_set("state", "k", "after", 0).await.unwrap();
    let id = client.enqueue("work", Record::new("w"), 0, 0).await.unwrap();
    let job = client.reserve("work", 30_000, 10_000).await.unwrap().unwrap();
    assert_eq!(job.id, id);
    client.ack("work", job.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "3-node clusters: make test-nats-faults"]
async fn broker_urls_that_name_no_usable_broker_fail_clearly() {
    for bad in ["grpc://", "grpc://127.0.0.1:1,", "grpc://,127.0.0.1:1", "grpc://a:1,,b:2"] {
        let r = Client::connect(bad, &Options::new()).await;
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{bad}: {:?}", r.err());
    }
    // Two brokers, neither listening: an error within the connect timeout.
    let url = format!("grpc://{},{}", free_addr(), free_addr());
    let t = Instant::now();
    let r = Client::connect(&url, &options(&[("connect_timeout_ms", "2000")])).await;
    assert!(matches!(r, Err(Error::Unavailable(_)) | Err(Error::Timeout(_))), "{:?}", r.err());
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
    // The first listed broker down at connect: the client starts on the next.
    let cluster = common::shared_nats(3);
    let account = cluster.account();
    let gb = gateway(cluster, &account);
    let client = Client::connect(&format!("grpc://{},{}", free_addr(), gb.addr), &Options::new()).await.unwrap();
    client.kv_set("b", "k", "v", 0).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_urls_with_no_host_or_no_server_fail_clearly() {
    for bad in ["nats://", "nats://,", "nats://127.0.0.1:4222,,127.0.0.1:4223"] {
        let r = Client::connect(bad, &Options::new()).await;
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{bad}: {:?}", r.err());
    }
    let url = format!("nats://{},{}", free_addr(), free_addr());
    let t = Instant::now();
    let r = Client::connect(&url, &options(&[("connect_timeout_ms", "2000")])).await;
    let took = t.elapsed();
    assert!(matches!(r, Err(Error::Unavailable(_))), "{:?}", r.err());
    // Within the connect timeout (plus what a loaded machine adds).
    assert!(took < Duration::from_secs(6), "took {took:?}");
}

// ------------------------------------------------------------ cluster faults

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "3-node clusters: make test-nats-faults"]
async fn killing_the_stream_leader_loses_and_duplicates_nothing() {
    let cluster = NatsCluster::start(3);
    let per = per_producer(20_000);
    publish_through(&cluster, per, |account, progress| {
        let cluster = &cluster;
        async move {
            until_progress(&progress, per).await;
            let leader = leader_of_partition0(cluster, &account_name(&account)).expect("a leader of partition 0");
            eprintln!("killing node {leader} (leader of partition 0) after {} acks", progress.load(Ordering::Relaxed));
            cluster.ctl(&["kill", &leader.to_string()]);
            until_progress(&progress, 2 * per).await;
            cluster.ctl(&["restart", &leader.to_string()]);
        }
    })
    .await;
    cluster.wipe();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "3-node clusters: make test-nats-faults"]
async fn a_node_paused_for_ten_seconds_loses_and_duplicates_nothing() {
    let cluster = NatsCluster::start(3);
    let per = per_producer(3000);
    publish_through(&cluster, per, |account, progress| {
        let cluster = &cluster;
        async move {
            until_progress(&progress, per).await;
            let node = leader_of_partition0(cluster, &account_name(&account)).unwrap_or(2);
            let pid = nodes(cluster)[node - 1].0.expect("node running");
            eprintln!("pausing node {node} (pid {pid}) for 10 s");
            let signal = |sig| unsafe { libc::kill(pid as i32, sig) };
            assert_eq!(signal(libc::SIGSTOP), 0);
            tokio::time::sleep(Duration::from_secs(10)).await;
            assert_eq!(signal(libc::SIGCONT), 0);
        }
    })
    .await;
    cluster.wipe();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "3-node clusters: make test-nats-faults"]
async fn a_whole_cluster_restart_keeps_messages_jobs_offsets_and_revisions() {
    let cluster = NatsCluster::start(3);
    let account = cluster.account();
    let opts = merged(&account, &options(&[("request_timeout_ms", "10000")]));
    let client = Client::connect(&cluster.url, &opts).await.unwrap();
    client.create_stream("log", StreamConfig { partitions: 2, ..Default::default() }).await.unwrap();
    let mut acked = HashMap::new();
    for i in 0..200 {
        acked.insert(format!("m{i}"), client.publish("log", Record::new(format!("m{i}"))).await.unwrap());
    }
    client.commit_offset("log", "g", 1, 42).await.unwrap();
    let mut jobs = Vec::new();
    for i in 0..20 {
        jobs.push(client.enqueue("jobs", Record::new(format!("j{i}")), 0, 0).await.unwrap());
    }
    for _ in 0..5 {
        let j = client.reserve("jobs", 30_000, 10_000).await.unwrap().unwrap();
        client.ack("jobs", j.id).await.unwrap();
    }
    let mut revisions = HashMap::new();
    for i in 0..10 {
        revisions.insert(format!("k{i}"), client.kv_set("cfg", &format!("k{i}"), format!("v{i}"), 0).await.unwrap());
    }
    drop(client);

    cluster.ctl(&["stop"]);
    cluster.ctl(&["start"]);

    let client = Client::connect(&cluster.url, &opts).await.unwrap();
    check_exactly_once(&acked, &read_all(&client, "log").await);
    assert_eq!(client.get_offset("log", "g", 1).await.unwrap(), 42);
    let stats = client.queue_stats("jobs").await.unwrap();
    assert_eq!((stats.pending, stats.in_flight), (15, 0), "{stats:?}");
    let mut left = Vec::new();
    while let Some(j) = client.reserve("jobs", 30_000, 2_000).await.unwrap() {
        left.push(j.id);
        client.ack("jobs", j.id).await.unwrap();
    }
    left.sort_unstable();
    assert_eq!(left, jobs[5..].to_vec());
    for (k, rev) in &revisions {
        let e = client.kv_get("cfg", k).await.unwrap();
        assert_eq!((e.revision, String::from_utf8_lossy(&e.value).into_owned()), (*rev, k.replace('k', "v")));
    }
    cluster.wipe();
}

/// The route ports as `nats-cluster.sh status` lists them, by node.
fn route_ports(cluster: &NatsCluster) -> Vec<u16> {
    cluster
        .ctl(&["status"])
        .lines()
        .map(|l| l.split("route=").nth(1).and_then(|r| r.split(' ').next()?.parse().ok()).expect("route port"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "3-node clusters: make test-nats-faults"]
async fn an_isolated_node_cannot_acknowledge_and_the_majority_goes_on() {
    let cluster = NatsCluster::start(3);
    // Every route from node i to node j through a proxy of its own, so
    // cutting the four proxies at node 3 cuts it off, and only it.
    let ports = route_ports(&cluster);
    let mut proxies = HashMap::new();
    for from in 1..=3usize {
        for to in 1..=3usize {
            proxies.insert((from, to), Proxy::start(&format!("127.0.0.1:{}", ports[to - 1])));
        }
    }
    cluster.ctl(&["stop"]);
    for from in 1..=3usize {
        let lines: Vec<String> =
            (1..=3).map(|to| proxies[&(from, to)].addr.rsplit(':').next().unwrap().to_owned()).collect();
        std::fs::write(cluster.dir.join(format!("route-proxy.n{from}")), lines.join("\n") + "\n").unwrap();
    }
    cluster.ctl(&["start"]);
    let account = cluster.account();
    let opts = merged(&account, &options(&[("request_timeout_ms", "5000"), ("replicas", "3")]));
    let majority_url = format!("nats://127.0.0.1:{},127.0.0.1:{}", client_port(&cluster, 1), client_port(&cluster, 2));
    let majority = Client::connect(&majority_url, &opts).await.unwrap();
    let lonely = Client::connect(&format!("nats://127.0.0.1:{}", client_port(&cluster, 3)), &opts).await.unwrap();
    majority.create_stream("s", StreamConfig::default()).await.unwrap();
    let mut acked = HashMap::new();
    for i in 0..50 {
        acked.insert(format!("a{i}"), majority.publish("s", Record::new(format!("a{i}"))).await.unwrap());
    }
    acked.insert("l0".into(), lonely.publish("s", Record::new("l0")).await.unwrap());

    for (&(from, to), p) in &proxies {
        if (from == 3) != (to == 3) {
            p.set(Mode::Cut);
        }
    }
    // The cut-off node cannot acknowledge (it can not reach a quorum).
    let mut refused = 0;
    for i in 0..3 {
        match lonely.publish("s", Record::new(format!("x{i}")).with_msg_id(format!("x{i}"))).await {
            Ok(pos) => panic!("the isolated node acknowledged x{i} at {pos:?}"),
            Err(_) => refused += 1,
        }
    }
    assert_eq!(refused, 3);
    // The majority goes on (a new leader if node 3 led).
    let deadline = Instant::now() + PHASE;
    for i in 50..150 {
        loop {
            let rec = Record::new(format!("a{i}")).with_msg_id(format!("a{i}"));
            match majority.publish("s", rec).await {
                Ok(pos) => {
                    acked.insert(format!("a{i}"), pos);
                    break;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "majority did not go on: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    for p in proxies.values() {
        p.set(Mode::Pass);
    }
    // After the heal node 3 catches up: a read through it alone shows every
    // acknowledged message once (and none of the refused ones twice).
    let deadline = Instant::now() + PHASE;
    loop {
        // While it catches up, node 3 may answer "temporarily unavailable".
        let n = match try_read_all(&lonely, "s").await {
            Ok(stored) if stored.values().map(Vec::len).sum::<usize>() >= acked.len() => {
                check_exactly_once(&acked, &stored);
                break;
            }
            Ok(stored) => format!("{} messages", stored.values().map(Vec::len).sum::<usize>()),
            Err(e) => e.to_string(),
        };
        assert!(Instant::now() < deadline, "node 3 after the heal: {n}; want {} messages", acked.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(proxies);
    cluster.wipe();
}

// ------------------------------------------------- client processes killed

/// The role a re-executed test binary plays (FM_NATS_CHILD), see `child`.
const CHILD_ENV: &str = "FM_NATS_CHILD";
/// Starts each line a child says to its parent.
const MARK: &str = "child: ";

/// Runs this test binary again as a child process playing `role`.
fn spawn_child(role: &str, url: &str, account: &Options) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, role)
        .env("FM_NATS_URL", url)
        .env("FM_NATS_USER", account.get("user").unwrap())
        .env("FM_NATS_PASSWORD", account.get("password").unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let lines = std::io::BufReader::new(out).lines().map_while(|l| l.ok());
        for line in lines.filter_map(|l| l.strip_prefix(MARK).map(str::to_owned)) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// A client process: `consumer` commits each message of group g as it
/// processes it; `worker` reserves one job and then hangs mid-work. Each
/// prints what it did, one line per step, for the parent to kill it at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of the tests below"]
async fn child() {
    let Ok(role) = std::env::var(CHILD_ENV) else { return };
    let url = std::env::var("FM_NATS_URL").unwrap();
    let opts = options(&[
        ("user", &std::env::var("FM_NATS_USER").unwrap()),
        ("password", &std::env::var("FM_NATS_PASSWORD").unwrap()),
    ]);
    let client = Client::connect(&url, &opts).await.unwrap();
    let say = |line: String| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        // On a line of its own: libtest's "test child ... " has no newline.
        writeln!(out, "\n{MARK}{line}").and_then(|_| out.flush()).unwrap();
    };
    match role.as_str() {
        "consumer" => {
            let spec = SubscribeSpec { partition: Some(0), start: StartFrom::Committed, group: Some("g".into()) };
            let mut feed = client.subscribe("feed", spec).await.unwrap();
            while let Some(m) = feed.next().await {
                let m = m.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await; // the work
                client.commit_offset("feed", "g", 0, m.offset).await.unwrap();
                say(format!("committed {}", m.offset));
            }
        }
        "worker" => {
            let job = client.reserve("work", 3_000, 30_000).await.unwrap().expect("a job");
            say(format!("reserved {} {}", job.id, job.attempt));
            tokio::time::sleep(PHASE).await; // hangs mid-work until killed
        }
        other => panic!("unknown child role {other}"),
    }
}

/// Waits (bounded) for a line from a child that satisfies `want`.
fn wait_line(rx: &std::sync::mpsc::Receiver<String>, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PHASE;
    loop {
        let left = deadline.checked_duration_since(Instant::now()).expect("child said nothing useful in time");
        let line = rx.recv_timeout(left).expect("child output");
        if want(&line) {
            return line;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "3-node clusters: make test-nats-faults"]
async fn killed_client_processes_leave_offsets_and_jobs_to_others() {
    let cluster = common::shared_nats(3);
    let account = cluster.account();
    let client = Client::connect(&cluster.url, &account).await.unwrap();
    for i in 0..400 {
        client.publish("feed", Record::new(format!("f{i}"))).await.unwrap();
    }
    // The consumer is killed mid-stream; this process resumes after the
    // offset it committed last.
    let (mut consumer, lines) = spawn_child("consumer", &cluster.url, &account);
    let line = wait_line(&lines, |l| l.strip_prefix("committed ").and_then(|o| o.parse::<u64>().ok()) >= Some(50));
    consumer.kill().unwrap();
    consumer.wait().unwrap();
    let printed: u64 = line["committed ".len()..].parse().unwrap();
    let committed = client.get_offset("feed", "g", 0).await.unwrap();
    // It may have committed one more than it got to print.
    assert!(committed == printed || committed == printed + 1, "committed {committed}, printed {printed}");
    let spec = SubscribeSpec { partition: Some(0), start: StartFrom::Committed, group: Some("g".into()) };
    let mut feed = client.subscribe("feed", spec).await.unwrap();
    let m = tokio::time::timeout(PHASE, feed.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(m.offset, committed + 1);
    assert_eq!(String::from_utf8_lossy(&m.payload), format!("f{}", committed + 1));

    // The worker is killed holding a job: the job comes back after its
    // visibility timeout, to this process, as a second attempt.
    let id = client.enqueue("work", Record::new("w1"), 0, 0).await.unwrap();
    let (mut worker, lines) = spawn_child("worker", &cluster.url, &account);
    let line = wait_line(&lines, |l| l.starts_with("reserved "));
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert_eq!(line, format!("reserved {id} 1"));
    let job = client.reserve("work", 30_000, 60_000).await.unwrap().expect("the job back");
    assert_eq!((job.id, job.attempt, &job.payload[..]), (id, 2, &b"w1"[..]));
    client.ack("work", job.id).await.unwrap();
}

// ------------------------------------------------------- replicated tier

/// The replicated tier on a 3-node cluster: acknowledged publishes survive
/// the stream leader being killed mid-run, each stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "3-node clusters: make test-nats-faults"]
async fn replicated_publishes_survive_killing_the_leader() {
    let cluster = NatsCluster::start(3);
    let account = cluster.account();
    let client =
        Client::connect(&cluster.url, &merged(&account, &options(&[("request_timeout_ms", "10000")]))).await.unwrap();
    let replicated = flowmesh::PublishOptions { tier: flowmesh::DeliveryTier::Replicated, ..Default::default() };
    let n = per_producer(600);
    let mut acked = HashMap::new();
    let mut killed = None;
    for i in 0..n {
        if i == n / 3 {
            let leader = leader_of_partition0(&cluster, &account_name(&account)).expect("a leader of partition 0");
            eprintln!("killing node {leader} (leader of partition 0) after {i} replicated acks");
            cluster.ctl(&["kill", &leader.to_string()]);
            killed = Some(leader);
        }
        let deadline = Instant::now() + PHASE;
        let id = format!("r-{i}");
        let pos = loop {
            let rec = Record::new(id.clone()).with_msg_id(id.clone());
            match client.publish_with("pay.settled", rec, &replicated).await {
                Ok(Some(pos)) => break pos,
                Ok(None) => panic!("a replicated publish has a position"),
                Err(e) => {
                    assert!(Instant::now() < deadline, "{id} not acknowledged within {PHASE:?}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        acked.insert(id, pos);
    }
    let reader = Client::connect(&cluster.url, &account).await.unwrap();
    let stored = read_all(&reader, "pay").await;
    check_exactly_once(&acked, &stored);
    cluster.ctl(&["restart", &killed.expect("a node was killed").to_string()]);
    cluster.wipe();
}
