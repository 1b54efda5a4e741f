//! Crash tests: what was acknowledged survives `kill -9` of the process that
//! wrote it (embedded engine in a child process, and the broker).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Broker;
use flowmesh::{Client, Error, Options, Record};

/// Runs the CLI against `url`, reads the acknowledgements it prints (one
/// per line) until `want` arrived, then kills it with SIGKILL.
fn ack_lines_then_kill(url: &str, args: &[&str], want: usize) -> Vec<String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowmesh"));
    cmd.args(args).args(["--url", url]);
    common::crash::acks_then_kill(&mut cmd, want, Duration::from_secs(60), |_| true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_of_an_embedded_writer() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let published = ack_lines_then_kill(&url, &["pub", "crash", "m", "--count", "1000000"], 300);
    let enqueued = ack_lines_then_kill(&url, &["queue", "enqueue", "jobs", "j", "--count", "1000000"], 200);
    let revisions = ack_lines_then_kill(&url, &["kv", "set", "cfg", "k", "v", "--count", "1000000"], 200);

    let c = Client::connect(&url, &Options::new()).await.expect("reopen after kill -9");
    let msgs = c.read("crash", 0, 0, usize::MAX).await.unwrap();
    assert!(msgs.len() >= published.len(), "lost acknowledged messages");
    for (i, line) in published.iter().enumerate() {
        assert_eq!(line, &format!("0 {i}"));
        assert_eq!(msgs[i].payload, format!("m-{i}").as_bytes());
    }
    let stats = c.queue_stats("jobs").await.unwrap();
    assert!(stats.pending as usize >= enqueued.len(), "lost acknowledged jobs: {stats:?}");
    let first = c.reserve("jobs", 30_000, 0).await.unwrap().unwrap();
    assert_eq!((first.id, &first.payload[..]), (1, &b"j-0"[..]));
    for (i, rev) in revisions.iter().enumerate() {
        let e = c.kv_get("cfg", &format!("k-{i}")).await.unwrap();
        assert_eq!(e.value, format!("v-{i}").as_bytes());
        assert_eq!(e.revision.to_string(), *rev);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_mid_publish_fails_fast_and_keeps_acknowledged_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = format!("file://{}", dir.path().display());
    let addr = common::free_addr();
    let mut broker = Broker::start_on(&data, &addr);
    let opts = Options::new().with("request_timeout_ms", "3000").unwrap();
    let client = Client::connect(&broker.url(), &opts).await.unwrap();

    let producer = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let started = Instant::now();
            loop {
                let i = acked.len();
                let t = Instant::now();
                match client.publish("orders", Record::new(format!("o-{i}"))).await {
                    Ok(pos) => acked.push(pos.offset),
                    Err(e) => return (acked, e, t.elapsed()),
                }
                assert!(started.elapsed() < Duration::from_secs(60), "broker never went away");
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.kill();
    let (acked, err, stalled) = tokio::time::timeout(Duration::from_secs(30), producer)
        .await
        .expect("publish hung after the broker died")
        .unwrap();
    assert!(!acked.is_empty());
    assert!(matches!(err, Error::Disconnected(_) | Error::Unavailable(_) | Error::Timeout(_)), "{err:?}");
    assert!(stalled < Duration::from_secs(10), "a call outlived its deadline: {stalled:?}");

    let broker = Broker::start_on(&data, &addr);
    let again = Client::connect(&broker.url(), &Options::new()).await.unwrap();
    let msgs = again.read("orders", 0, 0, usize::MAX).await.unwrap();
    assert!(msgs.len() >= acked.len(), "{} stored < {} acknowledged", msgs.len(), acked.len());
    for (i, offset) in acked.iter().enumerate() {
        assert_eq!(*offset, i as u64);
        assert_eq!(msgs[i].payload, format!("o-{i}").as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_no_broker_is_a_clear_error() {
    let addr = common::free_addr(); // nothing listens here
    let opts = Options::new().with("connect_timeout_ms", "2000").unwrap();
    let t = Instant::now();
    let err = Client::connect(&format!("grpc://{addr}"), &opts).await.err().expect("no broker");
    assert!(matches!(err, Error::Unavailable(_) | Error::Timeout(_)), "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_stops_gracefully_on_sigterm_with_open_streams() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(&format!("file://{}", dir.path().display()));
    let client = Client::connect(&broker.url(), &Options::new()).await.unwrap();
    let spec = flowmesh::SubscribeSpec { partition: None, start: flowmesh::StartFrom::Earliest, group: None };
    let _sub = client.subscribe("live", spec).await.unwrap();
    let _watch = client.kv_watch("cfg", "").await.unwrap();
    client.publish("live", Record::new("x")).await.unwrap(); // opens the publish stream too
                                                             // SAFETY: signalling our own child process.
    unsafe { libc::kill(broker.child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = broker.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "broker ignored SIGTERM with open streams");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "graceful shutdown exits 0, got {status:?}");
    let reopened = Client::connect(&format!("file://{}", dir.path().display()), &Options::new()).await.unwrap();
    assert_eq!(reopened.read("live", 0, 0, 10).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_resumes_after_broker_restart_without_loss_or_duplicates() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let data = format!("file://{}", dir.path().display());
    let addr = common::free_addr();
    let mut broker = Broker::start_on(&data, &addr);
    let opts = Options::new()
        .with("reconnect_initial_ms", "50")
        .unwrap()
        .with("reconnect_max_ms", "500")
        .unwrap()
        .with("reconnect_jitter_ms", "50")
        .unwrap()
        .with("request_timeout_ms", "3000")
        .unwrap();
    let client = Client::connect(&broker.url(), &opts).await.unwrap();
    let spec = flowmesh::SubscribeSpec { partition: None, start: flowmesh::StartFrom::Earliest, group: None };
    let mut sub = client.subscribe("resume", spec).await.unwrap();
    for i in 0..5 {
        client.publish("resume", Record::new(format!("r-{i}"))).await.unwrap();
    }
    for i in 0..5u64 {
        assert_eq!(next_message(&mut sub).await.offset, i);
    }
    broker.kill();
    let _broker = Broker::start_on(&data, &addr);
    for i in 5..10 {
        // The first publish after the restart may find the old link dead.
        let mut tries = 0;
        while let Err(e) = client.publish("resume", Record::new(format!("r-{i}"))).await {
            tries += 1;
            assert!(tries < 50, "publish never recovered: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for i in 5..10u64 {
        let m = next_message(&mut sub).await;
        assert_eq!((m.offset, m.payload.clone()), (i, bytes::Bytes::from(format!("r-{i}"))));
    }
    let extra = tokio::time::timeout(Duration::from_millis(300), sub.next()).await;
    assert!(extra.is_err(), "a message was delivered twice: {extra:?}");
}

async fn next_message(sub: &mut flowmesh::MessageStream) -> flowmesh::Message {
    use futures::StreamExt;
    let item = tokio::time::timeout(Duration::from_secs(30), sub.next()).await;
    item.expect("subscription stalled").expect("subscription ended").expect("feed error")
}

/// A child process being spawned holds copies of the parent's open files
/// (the data directory's lock too) until it execs: a client that closes and
/// reopens its directory meanwhile must not take its own lock for another
/// process's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_reopens_while_this_process_spawns_children() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spawner = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut spawned = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                Command::new("true").status().unwrap();
                spawned += 1;
            }
            spawned
        })
    };
    for i in 0..300u64 {
        let c = Client::connect(&url, &Options::new()).await.unwrap_or_else(|e| panic!("reopen {i}: {e}"));
        assert_eq!(c.kv_set("cfg", "round", i.to_string(), 0).await.unwrap(), i + 1);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(spawner.join().unwrap() > 0);
}
