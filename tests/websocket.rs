//! The core client over `ws://`: the remote engine tunnelled through the
//! broker's `--ws` listener, with the reconnect and resume of `grpc://`.

mod common;

use std::time::{Duration, Instant};

use common::{free_addr, wait_for_port, Broker};
use flowmesh::{Client, Error, Options, Record, StartFrom, SubscribeSpec};
use futures::StreamExt;

/// Upper bound for anything that should happen "soon" (a loaded machine).
const PATIENCE: Duration = Duration::from_secs(30);

async fn next_within<S: futures::Stream + Unpin>(s: &mut S) -> S::Item {
    tokio::time::timeout(PATIENCE, s.next()).await.expect("timed out waiting for an item").expect("stream ended")
}

fn start(data: &str, addr: &str, ws: &str) -> Broker {
    let b = Broker::start_with(data, addr, &["--ws", ws]);
    wait_for_port(ws);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_and_resumes_after_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = format!("file://{}", dir.path().display());
    let (addr, ws) = (free_addr(), free_addr());
    let mut broker = start(&data, &addr, &ws);
    let opts = Options::new().with("reconnect_initial_ms", "50").unwrap();
    let c = Client::connect(&format!("ws://{ws}"), &opts).await.unwrap();
    for i in 0..5 {
        c.publish("feed", Record::new(format!("m{i}"))).await.unwrap();
    }
    let spec = SubscribeSpec { partition: Some(0), start: StartFrom::Earliest, group: None };
    let mut sub = c.subscribe("feed", spec).await.unwrap();
    for i in 0..5 {
        assert_eq!(&next_within(&mut sub).await.unwrap().payload[..], format!("m{i}").as_bytes());
    }
    c.kv_set("cfg", "k", "v1", 0).await.unwrap();
    assert_eq!(&c.kv_get("cfg", "k").await.unwrap().value[..], b"v1");

    broker.kill();
    broker = start(&data, &addr, &ws);
    // Publishing retries through the reconnect; bounded by PATIENCE.
    let deadline = Instant::now() + PATIENCE;
    let mut sent = 5;
    while sent < 8 {
        match c.publish("feed", Record::new(format!("m{sent}"))).await {
            Ok(_) => sent += 1,
            Err(Error::Disconnected(_) | Error::Unavailable(_) | Error::Timeout(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("publish after the restart: {e}"),
        }
    }
    // The subscription resumes where it stopped: no loss, no repeat.
    for i in 5..8 {
        assert_eq!(&next_within(&mut sub).await.unwrap().payload[..], format!("m{i}").as_bytes());
    }
    assert_eq!(&c.kv_get("cfg", "k").await.unwrap().value[..], b"v1");
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_and_wrong_ports_are_clear_errors() {
    for bad in ["ws://", "ws://host-without-port", "wss://:1", "ws://h:notaport"] {
        match Client::connect(bad, &Options::new()).await {
            Err(Error::InvalidArgument(_)) => {}
            other => panic!("{bad}: {:?}", other.map(|_| ())),
        }
    }
    // A gRPC port is not a WebSocket endpoint: refused, not a hang.
    let addr = free_addr();
    let _broker = Broker::start("mem://");
    let grpc = _broker.addr.clone();
    let opts = Options::new().with("connect_timeout_ms", "5000").unwrap();
    match tokio::time::timeout(PATIENCE, Client::connect(&format!("ws://{grpc}"), &opts)).await {
        Ok(Err(Error::Unavailable(_) | Error::Timeout(_))) => {}
        other => panic!("ws:// to a gRPC port: {:?}", other.map(|r| r.map(|_| ()))),
    }
    match Client::connect(&format!("ws://{addr}"), &opts).await {
        Err(Error::Unavailable(_)) => {}
        other => panic!("ws:// to a closed port: {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_uses_the_brokers_tls_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flowmesh"))
        .args(["tls", "dev-certs", "--host", "localhost", "--host", "127.0.0.1", "--out"])
        .arg(certs.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let p = |f: &str| certs.path().join(f).display().to_string();
    let (addr, ws) = (free_addr(), free_addr());
    let (cert, key) = (p("server.pem"), p("server-key.pem"));
    let b = Broker::start_with("mem://", &addr, &["--ws", &ws, "--tls-cert", &cert, "--tls-key", &key]);
    wait_for_port(&ws);
    let trusted = Options::new().with("tls_ca_file", &p("ca.pem")).unwrap();
    let c = Client::connect(&format!("wss://{ws}"), &trusted).await.unwrap();
    c.kv_set("cfg", "k", "tls", 0).await.unwrap();
    assert_eq!(&c.kv_get("cfg", "k").await.unwrap().value[..], b"tls");
    // Without the private CA the certificate is not trusted; plaintext ws:// to a TLS port fails too.
    let opts = Options::new().with("connect_timeout_ms", "5000").unwrap();
    for url in [format!("wss://{ws}"), format!("ws://{ws}")] {
        match tokio::time::timeout(PATIENCE, Client::connect(&url, &opts)).await {
            Ok(Err(Error::Unavailable(_) | Error::Timeout(_))) => {}
            other => panic!("{url}: {:?}", other.map(|r| r.map(|_| ()))),
        }
    }
    drop(b);
}
