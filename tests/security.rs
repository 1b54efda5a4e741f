//! Security of the broker: TLS with certificates made at test
//! time, token authentication and SIGHUP reload, tenant isolation, the audit
//! stream, per-token limits. Every test starts its own broker on loopback.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{free_addr, Broker};
use flowmesh::server::auth::hash_token;
use flowmesh::{Client, Error, Options, Record, RetryPolicy, StartFrom, StreamConfig, SubscribeSpec};
use futures::StreamExt;

/// A CA and a server certificate for `localhost` / 127.0.0.1, as PEM files.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn new() -> Certs {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "flowmesh test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let mut srv = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        srv.distinguished_name.push(DnType::CommonName, "localhost");
        let srv_key = KeyPair::generate().unwrap();
        let srv_cert = srv.signed_by(&srv_key, &issuer).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), srv_cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), srv_key.serialize_pem()).unwrap();
        Certs { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn serve_args(&self) -> Vec<String> {
        vec!["--tls-cert".into(), self.path("server.pem"), "--tls-key".into(), self.path("server.key")]
    }
}

fn start(extra: &[String]) -> Broker {
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    Broker::start_with("mem://", &free_addr(), &extra)
}

fn opts(pairs: &[(&str, &str)]) -> Options {
    pairs.iter().try_fold(Options::new(), |o, (k, v)| o.with(k, v)).unwrap()
}

fn port(b: &Broker) -> &str {
    b.addr.rsplit(':').next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connect_and_round_trip() {
    let certs = Certs::new();
    let broker = start(&certs.serve_args());
    let ca = certs.path("ca.pem");
    // By host name, and by IP with an explicit server name.
    for (url, extra) in [
        (format!("grpcs://localhost:{}", port(&broker)), None),
        (format!("grpcs://{}", broker.addr), Some("localhost")),
    ] {
        let mut o = opts(&[("tls_ca_file", &ca)]);
        if let Some(name) = extra {
            o.set("tls_server_name", name).unwrap();
        }
        let c = Client::connect(&url, &o).await.expect("TLS connect");
        let pos = c.publish("tls", Record::new("over tls")).await.unwrap();
        let got = c.read("tls", pos.partition, pos.offset, 1).await.unwrap();
        assert_eq!(&got[0].payload[..], b"over tls");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_and_wrong_name_are_refused() {
    let certs = Certs::new();
    let other = Certs::new();
    let broker = start(&certs.serve_args());
    let url = format!("grpcs://localhost:{}", port(&broker));
    let err = Client::connect(&url, &opts(&[("tls_ca_file", &other.path("ca.pem"))])).await.err().unwrap();
    assert!(matches!(&err, Error::Unavailable(m) if m.contains("certificate")), "{err:?}");
    let named = opts(&[("tls_ca_file", &certs.path("ca.pem")), ("tls_server_name", "broker.example")]);
    let err = Client::connect(&url, &named).await.err().unwrap();
    assert!(matches!(&err, Error::Unavailable(m) if m.contains("tls_server_name")), "{err:?}");
    // System roots do not know the private CA.
    let err = Client::connect(&url, &Options::new()).await.err().unwrap();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    // A CA file that is not PEM is a bad argument, not a network error.
    let junk = certs.dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let err = Client::connect(&url, &opts(&[("tls_ca_file", junk.to_str().unwrap())])).await.err().unwrap();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_tls_mismatch_fail_fast() {
    let certs = Certs::new();
    let tls_broker = start(&certs.serve_args());
    let plain_broker = start(&[]);
    // Default request timeout (10 s): a mismatch must not wait for it.
    let o = opts(&[("connect_timeout_ms", "3000"), ("tls_ca_file", &certs.path("ca.pem"))]);
    let t0 = Instant::now();
    let err = Client::connect(&format!("grpc://{}", tls_broker.addr), &o).await.err().unwrap();
    assert!(matches!(&err, Error::Unavailable(m) if m.contains("grpcs://")), "{err:?}");
    let err = Client::connect(&format!("grpcs://localhost:{}", port(&plain_broker)), &o).await.err().unwrap();
    assert!(matches!(&err, Error::Unavailable(m) if m.contains("plaintext")), "{err:?}");
    assert!(t0.elapsed() < Duration::from_secs(3), "mismatches took {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_refuses_bad_tls_files() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("c.pem");
    std::fs::write(&cert, "garbage").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flowmesh"))
        .args(["serve", "--listen", &free_addr(), "--data", "mem://", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TLS"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `flowmesh tls dev-certs` writes a CA and a server certificate that a
/// broker serves and a client trusts with tls_ca_file; it never overwrites
/// certificates unless asked to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_certs_make_a_ca_and_a_server_certificate_clients_accept() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let dev_certs = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_flowmesh"))
            .args(["tls", "dev-certs", "--host", "localhost", "--host", "127.0.0.1", "--out"])
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let made = dev_certs(&[]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    assert!(
        String::from_utf8_lossy(&made.stdout).contains("tls_ca_file="),
        "{}",
        String::from_utf8_lossy(&made.stdout)
    );
    for (file, mode) in
        [("ca.pem", None), ("ca-key.pem", Some(0o600)), ("server.pem", None), ("server-key.pem", Some(0o600))]
    {
        let meta = std::fs::metadata(out.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        if let Some(mode) = mode {
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
        }
    }
    let p = |f: &str| out.join(f).display().to_string();
    let broker = start(&["--tls-cert".into(), p("server.pem"), "--tls-key".into(), p("server-key.pem")]);
    let o = opts(&[("tls_ca_file", &p("ca.pem"))]);
    for url in [format!("grpcs://localhost:{}", port(&broker)), format!("grpcs://{}", broker.addr)] {
        let c = Client::connect(&url, &o).await.unwrap_or_else(|e| panic!("{url}: {e:?}"));
        let pos = c.publish("dev", Record::new("trusted")).await.unwrap();
        assert_eq!(&c.read("dev", pos.partition, pos.offset, 1).await.unwrap()[0].payload[..], b"trusted");
    }
    // A second run keeps the existing files, unless --force.
    let before = std::fs::read(out.join("ca.pem")).unwrap();
    let again = dev_certs(&[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(std::fs::read(out.join("ca.pem")).unwrap(), before);
    assert!(dev_certs(&["--force"]).status.success());
    assert_ne!(std::fs::read(out.join("ca.pem")).unwrap(), before);
}

/// The quick self-signed certificate (`openssl req -x509`: CA:TRUE) served
/// as the broker's own certificate: the client says what is wrong and how
/// to fix it, not just `CaUsedAsEndEntity`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_certificate_served_as_the_server_certificate_gets_a_fix() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let broker = start(&[
        "--tls-cert".into(),
        cert_path.display().to_string(),
        "--tls-key".into(),
        key_path.display().to_string(),
    ]);
    let url = format!("grpcs://localhost:{}", port(&broker));
    let err = Client::connect(&url, &opts(&[("tls_ca_file", cert_path.to_str().unwrap())])).await.err().unwrap();
    let msg = match &err {
        Error::Unavailable(m) => m.clone(),
        other => panic!("{other:?}"),
    };
    assert!(msg.contains("CaUsedAsEndEntity"), "{msg}");
    assert!(msg.contains("CA certificate as its own certificate"), "{msg}");
    assert!(msg.contains("flowmesh tls dev-certs"), "{msg}");
}

/// Writes an access file; each token is (id, secret, tenant, grants JSON, limits JSON).
fn write_access(path: &Path, tokens: &[(&str, &str, &str, &str, &str)]) {
    let entries: Vec<String> = tokens
        .iter()
        .map(|(id, secret, tenant, grants, limits)| {
            format!(
                r#"{{"id":"{id}","sha256":"{}","tenant":"{tenant}","grants":{grants},"limits":{limits}}}"#,
                hash_token(secret)
            )
        })
        .collect();
    std::fs::write(path, format!(r#"{{"tokens":[{}]}}"#, entries.join(","))).unwrap();
}

const ALL: &str = r#"[{"namespace":"*","ops":["*"]}]"#;
const READ_ONLY: &str = r#"[{"namespace":"*","ops":["read","subscribe","kv_read"]}]"#;

struct Secured {
    broker: Broker,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

fn secured(tokens: &[(&str, &str, &str, &str, &str)]) -> Secured {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.json");
    write_access(&file, tokens);
    let broker = start(&["--access-file".into(), file.display().to_string()]);
    Secured { broker, file, _dir: dir }
}

async fn client(s: &Secured, tenant: &str, token: Option<&str>) -> Client {
    let mut o = opts(&[("tenant", tenant), ("request_timeout_ms", "5000")]);
    if let Some(t) = token {
        o.set("token", t).unwrap();
    }
    Client::connect(&s.broker.url(), &o).await.expect("connect")
}

fn unauthorized<T: std::fmt::Debug>(r: flowmesh::Result<T>) -> String {
    match r {
        Err(Error::Unauthorized(m)) => m,
        other => panic!("expected FM_ERR_UNAUTHORIZED, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_wrong_tokens_are_unauthorized() {
    let s = secured(&[("a", "secret-a", "acme", ALL, "{}")]);
    let none = client(&s, "acme", None).await;
    let m = unauthorized(none.publish("s", Record::new("x")).await);
    assert!(m.contains("requires a token"), "{m}");
    let wrong = client(&s, "acme", Some("secret-b")).await;
    let m = unauthorized(wrong.kv_get("b", "k").await);
    assert!(m.contains("not accepted"), "{m}");
    unauthorized(wrong.enqueue("q", Record::new("x"), 0, 0).await);
    let good = client(&s, "acme", Some("secret-a")).await;
    good.publish("s", Record::new("x")).await.unwrap();
    // A client with a token against a broker without an access file still works.
    let open = start(&[]);
    let o = opts(&[("token", "anything")]);
    Client::connect(&open.url(), &o).await.unwrap().publish("s", Record::new("x")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated_without_existence_leaks() {
    let s = secured(&[("a", "secret-a", "acme", ALL, "{}"), ("g", "secret-g", "globex", ALL, "{}")]);
    let acme = client(&s, "acme", Some("secret-a")).await;
    acme.publish("orders", Record::new("acme order")).await.unwrap();
    acme.kv_set("cfg", "k", "v", 0).await.unwrap();
    let globex = client(&s, "globex", Some("secret-g")).await;
    // Existing and missing resources of another tenant get the same answer.
    let existing = unauthorized(globex.read("acme/default/orders", 0, 0, 10).await);
    let missing = unauthorized(globex.read("acme/default/nothing-here", 0, 0, 10).await);
    assert_eq!(existing.replace("orders", "X"), missing.replace("nothing-here", "X"));
    unauthorized(globex.publish("acme/default/orders", Record::new("intrusion")).await);
    unauthorized(globex.kv_get("acme/default/cfg", "k").await);
    unauthorized(globex.kv_keys("acme/default/cfg", "").await);
    unauthorized(
        globex
            .subscribe("acme/default/orders", SubscribeSpec { partition: None, start: StartFrom::Latest, group: None })
            .await
            .map(|_| ()),
    );
    // Nothing was written across tenants.
    assert_eq!(acme.read("orders", 0, 0, 10).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_access_file() {
    let s = secured(&[("a", "secret-a", "acme", ALL, "{}")]);
    let b = client(&s, "acme", Some("secret-b")).await;
    unauthorized(b.publish("s", Record::new("x")).await);
    write_access(&s.file, &[("a", "secret-a", "acme", ALL, "{}"), ("b", "secret-b", "acme", ALL, "{}")]);
    let hup = |pid: u32| unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    assert_eq!(hup(s.broker.child.id()), 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match b.publish("s", Record::new("x")).await {
            Ok(_) => break,
            Err(Error::Unauthorized(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => panic!("token b was not admitted after SIGHUP: {other:?}"),
        }
    }
    // The reload is in the tenant's audit trail.
    let admin = client(&s, "acme", Some("secret-a")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let trail = admin.read("acme/_system/_audit", 0, 0, 100).await.unwrap_or_default();
        let text: Vec<String> = trail.iter().map(|m| String::from_utf8_lossy(&m.payload).into_owned()).collect();
        if text.iter().any(|t| t.contains(r#""operation":"token_reload""#) && t.contains(r#""outcome":"ok""#)) {
            break;
        }
        assert!(Instant::now() < deadline, "no token_reload record: {text:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A broken file on reload keeps the previous table.
    std::fs::write(&s.file, "{ not json").unwrap();
    assert_eq!(hup(s.broker.child.id()), 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.publish("s", Record::new("still")).await.expect("old table kept after a bad reload");
    // Revoking takes effect on the next reload.
    write_access(&s.file, &[("a", "secret-a", "acme", ALL, "{}")]);
    assert_eq!(hup(s.broker.child.id()), 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.publish("s", Record::new("x")).await.is_ok() {
        assert!(Instant::now() < deadline, "revoked token still admitted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_stream_records_refusals_and_admin_actions() {
    let s = secured(&[
        ("acme-admin", "secret-a", "acme", ALL, "{}"),
        ("acme-ro", "secret-r", "acme", READ_ONLY, "{}"),
        ("globex-admin", "secret-g", "globex", ALL, "{}"),
        ("initech-admin", "secret-i", "initech", ALL, "{}"),
    ]);
    let admin = client(&s, "acme", Some("secret-a")).await;
    let ro = client(&s, "acme", Some("secret-r")).await;
    let none = client(&s, "acme", None).await;
    let globex = client(&s, "globex", Some("secret-g")).await;
    // The script: 2 admin actions, 4 refusals, 2 ordinary allowed calls.
    admin.create_stream("events", StreamConfig { partitions: 2, ..Default::default() }).await.unwrap();
    admin.set_retry_policy("jobs", RetryPolicy::default()).await.unwrap();
    admin.publish("events", Record::new("allowed")).await.unwrap();
    ro.read("events", 0, 0, 10).await.unwrap();
    unauthorized(ro.publish("events", Record::new("denied")).await);
    unauthorized(none.kv_get("cfg", "k").await);
    unauthorized(globex.read("acme/default/events", 0, 0, 1).await);
    unauthorized(ro.set_retry_policy("jobs", RetryPolicy::default()).await);
    // Reading the trail needs an admin grant; writing it is for the broker only.
    unauthorized(ro.read("acme/_system/_audit", 0, 0, 10).await);
    unauthorized(admin.publish("acme/_system/_audit", Record::new("forged")).await);

    let expected: Vec<(&str, &str, Option<&str>)> = vec![
        ("create_stream", "ok", Some("acme-admin")),
        ("set_retry_policy", "ok", Some("acme-admin")),
        ("publish", "denied", Some("acme-ro")),
        ("kv_read", "unauthenticated", None),
        ("read", "denied", Some("globex-admin")),
        ("admin", "denied", Some("acme-ro")),
        ("read", "denied", Some("acme-ro")),
        ("publish", "denied", Some("acme-admin")),
    ];
    // The writer is asynchronous: poll, bounded, until every record is in.
    let deadline = Instant::now() + Duration::from_secs(10);
    let records = loop {
        let msgs = admin.read("acme/_system/_audit", 0, 0, 100).await.unwrap_or_default();
        if msgs.len() >= expected.len() || Instant::now() > deadline {
            break msgs;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let events: Vec<serde_json::Value> = records.iter().map(|m| serde_json::from_slice(&m.payload).unwrap()).collect();
    let got: Vec<(String, String, Option<String>)> = events
        .iter()
        .map(|e| {
            (
                e["operation"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
                e["token_id"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let want: Vec<(String, String, Option<String>)> =
        expected.iter().map(|(o, r, t)| (o.to_string(), r.to_string(), t.map(str::to_owned))).collect();
    assert_eq!(got, want, "audit trail: {events:#?}");
    for e in &events {
        assert_eq!(e["tenant"], "acme");
        assert!(e["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(e["time"].as_str().unwrap().ends_with('Z'));
        let text = e.to_string();
        assert!(!text.contains("secret-"), "a token leaked into the audit trail: {text}");
    }
    assert_eq!(events[0]["resource"], "acme/default/events");
    // An admin can subscribe to a trail that has no record yet (it is created).
    let initech = client(&s, "initech", Some("secret-i")).await;
    let early = SubscribeSpec { partition: None, start: StartFrom::Earliest, group: None };
    let sub = initech.subscribe("initech/_system/_audit", early).await;
    assert!(sub.is_ok(), "{:?}", sub.err());
    // The other tenant's trail has its own refusal, and an admin can subscribe to a trail.
    let mut feed = globex
        .subscribe("globex/_system/_audit", SubscribeSpec { partition: None, start: StartFrom::Earliest, group: None })
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), feed.next()).await.unwrap().unwrap().unwrap();
    let ev: serde_json::Value = serde_json::from_slice(&first.payload).unwrap();
    assert_eq!((ev["outcome"].as_str(), ev["resource"].as_str()), (Some("denied"), Some("acme/default/events")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_token_limits_refuse_clearly_and_spare_others() {
    let limited = r#"{"max_in_flight":1,"max_subscriptions":1,"max_message_bytes":16}"#;
    let s = secured(&[("small", "secret-s", "acme", ALL, limited), ("big", "secret-b", "acme", ALL, "{}")]);
    let small = client(&s, "acme", Some("secret-s")).await;
    let big = client(&s, "acme", Some("secret-b")).await;
    // Message size.
    small.publish("s", Record::new("short")).await.unwrap();
    let err = small.publish("s", Record::new("a payload of more than sixteen bytes")).await.unwrap_err();
    assert!(matches!(&err, Error::TooLarge(m) if m.contains("small")), "{err:?}");
    let err = small.kv_set("b", "k", vec![0u8; 17], 0).await.unwrap_err();
    assert!(matches!(err, Error::TooLarge(_)), "{err:?}");
    big.publish("s", Record::new("a payload of more than sixteen bytes")).await.unwrap();
    // Subscriptions: a second one is refused until the first is dropped.
    let first = small.kv_watch("b", "").await.unwrap();
    let err = small.kv_watch("b", "").await.err().unwrap();
    assert!(matches!(&err, Error::Unavailable(m) if m.contains("subscriptions")), "{err:?}");
    let _other = big.kv_watch("b", "").await.unwrap();
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    while small.kv_watch("b", "").await.is_err() {
        assert!(Instant::now() < deadline, "subscription slot not given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // In flight: a long poll holds the one slot; the next call is refused at
    // once. The first probe can reach the broker before the long poll does
    // and refuse it instead, so a long poll that ended without the probes
    // ever being refused is started again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (waiter, err) = 'held: loop {
        assert!(Instant::now() < deadline, "the long poll never held the slot");
        let waiter = {
            let small = small.clone();
            tokio::spawn(async move { small.reserve("jobs", 30_000, 3000).await })
        };
        while !waiter.is_finished() {
            match small.queue_stats("jobs").await {
                Err(e) => break 'held (waiter, e),
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        match waiter.await.unwrap() {
            Err(Error::Unavailable(m)) if m.contains("in flight") => {} // a probe held the slot
            Ok(None) => {}                                              // the probes missed the poll
            other => panic!("the long poll ended with {other:?}"),
        }
    };
    assert!(matches!(&err, Error::Unavailable(m) if m.contains("in flight")), "{err:?}");
    big.queue_stats("jobs").await.unwrap();
    // Those refusals are the broker's answers, not link failures: even a
    // breaker that opens on the first failure stays closed.
    let mut o = opts(&[("tenant", "acme"), ("token", "secret-s"), ("breaker_threshold", "1")]);
    o.set("breaker_timeout_ms", "60000").unwrap();
    let touchy = Client::connect(&s.broker.url(), &o).await.expect("connect");
    for _ in 0..5 {
        match touchy.queue_stats("jobs").await {
            Err(Error::Unavailable(m)) => assert!(m.contains("in flight") && !m.contains("breaker"), "{m}"),
            Ok(_) => break, // the long poll ended meanwhile
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(waiter.await.unwrap().unwrap().is_none());
    small.queue_stats("jobs").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_tenants_get_no_audit_stream() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.json");
    write_access(&file, &[("a", "secret-a", "acme", ALL, "{}")]);
    let data = dir.path().join("data");
    let extra = ["--access-file".to_string(), file.display().to_string()];
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let broker = Broker::start_with(&format!("file://{}", data.display()), &free_addr(), &extra);
    let o = opts(&[("tenant", "ghost")]);
    let anon = Client::connect(&broker.url(), &o).await.unwrap();
    unauthorized(anon.publish("s", Record::new("x")).await);
    let o = opts(&[("tenant", "acme"), ("token", "secret-a")]);
    let acme = Client::connect(&broker.url(), &o).await.unwrap();
    unauthorized(acme.read("ghost/default/s", 0, 0, 1).await);
    // A refusal for a known tenant, written after the others: once it is in
    // acme's trail, the writer has handled the ghost events too.
    unauthorized(acme.publish("acme/_system/_audit", Record::new("forged")).await);
    let deadline = Instant::now() + Duration::from_secs(10);
    while acme.read("acme/_system/_audit", 0, 0, 10).await.unwrap_or_default().len() < 2 {
        assert!(Instant::now() < deadline, "acme's trail never got its records");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut found = Vec::new();
    let mut stack = vec![data.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.to_string_lossy().contains("ghost") {
                found.push(p.clone());
            }
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    assert!(found.is_empty(), "a made-up tenant got storage: {found:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_survive_a_graceful_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.json");
    write_access(&file, &[("a", "secret-a", "acme", ALL, "{}")]);
    let data = format!("file://{}", dir.path().join("data").display());
    let extra = ["--access-file".to_string(), file.display().to_string()];
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let o = opts(&[("tenant", "acme"), ("token", "secret-a")]);
    let mut broker = Broker::start_with(&data, &free_addr(), &extra);
    let c = Client::connect(&broker.url(), &o).await.unwrap();
    c.set_retry_policy("jobs", RetryPolicy::default()).await.unwrap();
    // SIGTERM right away: the queued record is written before the broker exits.
    assert_eq!(unsafe { libc::kill(broker.child.id() as i32, libc::SIGTERM) }, 0);
    let status = broker.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    drop(c);
    let broker = Broker::start_with(&data, &broker.addr.clone(), &extra);
    let c = Client::connect(&broker.url(), &o).await.unwrap();
    let trail = c.read("acme/_system/_audit", 0, 0, 10).await.unwrap();
    let text: Vec<String> = trail.iter().map(|m| String::from_utf8_lossy(&m.payload).into_owned()).collect();
    assert!(text.iter().any(|t| t.contains(r#""operation":"set_retry_policy""#)), "{text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_connection_limits_spare_the_other_connections_of_a_token() {
    let limits = r#"{"max_in_flight_per_connection":1,"max_subscriptions_per_connection":1}"#;
    let s = secured(&[("app", "secret-p", "acme", ALL, limits)]);
    let one = client(&s, "acme", Some("secret-p")).await;
    let two = client(&s, "acme", Some("secret-p")).await;
    let waiter = {
        let one = one.clone();
        tokio::spawn(async move { one.reserve("jobs", 30_000, 1500).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = one.queue_stats("jobs").await.unwrap_err();
    assert!(matches!(&err, Error::Unavailable(m) if m.contains("per connection")), "{err:?}");
    two.queue_stats("jobs").await.expect("another connection of the same token");
    assert!(waiter.await.unwrap().unwrap().is_none());
    one.queue_stats("jobs").await.unwrap();
    let _w = one.kv_watch("b", "").await.unwrap();
    assert!(one.kv_watch("b", "").await.is_err());
    let _w2 = two.kv_watch("b", "").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_ends_the_subscriptions_and_watches_of_revoked_tokens() {
    let narrowed = r#"[{"namespace":"other","ops":["*"]}]"#;
    let s = secured(&[
        ("a", "secret-a", "acme", ALL, "{}"),
        ("b", "secret-b", "acme", ALL, "{}"),
        ("c", "secret-c", "acme", ALL, "{}"),
    ]);
    let (a, b, c) = (
        client(&s, "acme", Some("secret-a")).await,
        client(&s, "acme", Some("secret-b")).await,
        client(&s, "acme", Some("secret-c")).await,
    );
    a.create_stream("s", Default::default()).await.unwrap();
    let latest = || SubscribeSpec { partition: None, start: StartFrom::Latest, group: None };
    let mut kept = a.subscribe("s", latest()).await.unwrap();
    let mut revoked = b.subscribe("s", latest()).await.unwrap();
    let mut revoked_watch = b.kv_watch("cfg", "").await.unwrap();
    let mut narrowed_watch = c.kv_watch("cfg", "").await.unwrap();
    let within = Duration::from_secs(15);
    a.publish("s", Record::new("before")).await.unwrap();
    a.kv_set("cfg", "k", "1", 0).await.unwrap();
    for feed in [&mut kept, &mut revoked] {
        let m = tokio::time::timeout(within, feed.next()).await.expect("delivered").unwrap().unwrap();
        assert_eq!(&m.payload[..], b"before");
    }
    for w in [&mut revoked_watch, &mut narrowed_watch] {
        let e = tokio::time::timeout(within, w.next()).await.expect("watched").unwrap().unwrap();
        assert_eq!(e.key, "k");
    }
    // b is removed, c keeps its token but loses its grant on the namespace.
    write_access(&s.file, &[("a", "secret-a", "acme", ALL, "{}"), ("c", "secret-c", "acme", narrowed, "{}")]);
    assert_eq!(unsafe { libc::kill(s.broker.child.id() as i32, libc::SIGHUP) }, 0);
    let m = match tokio::time::timeout(within, revoked.next()).await.expect("subscription not ended") {
        Some(Err(Error::Unauthorized(m))) => m,
        other => panic!("expected FM_ERR_UNAUTHORIZED ending the subscription, got {other:?}"),
    };
    assert!(m.contains("revoked"), "{m}");
    assert!(tokio::time::timeout(within, revoked.next()).await.expect("ended").is_none(), "nothing after the end");
    match tokio::time::timeout(within, revoked_watch.next()).await.expect("watch not ended") {
        Some(Err(Error::Unauthorized(m))) => assert!(m.contains("revoked"), "{m}"),
        other => panic!("expected FM_ERR_UNAUTHORIZED ending the watch, got {other:?}"),
    }
    match tokio::time::timeout(within, narrowed_watch.next()).await.expect("watch not ended") {
        Some(Err(Error::Unauthorized(m))) => assert!(m.contains("no kv_read grant"), "{m}"),
        other => panic!("expected FM_ERR_UNAUTHORIZED ending the watch, got {other:?}"),
    }
    // The token that is still valid keeps its subscription.
    a.publish("s", Record::new("after")).await.unwrap();
    let m = tokio::time::timeout(within, kept.next()).await.expect("still delivering").unwrap().unwrap();
    assert_eq!(&m.payload[..], b"after");
    unauthorized(b.subscribe("s", latest()).await.map(|_| ()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_lifecycle_is_scoped_by_grants_and_audited() {
    let orders_only = r#"[{"resource":"acme/default/orders*","ops":["*"]}]"#;
    let s = secured(&[
        ("a", "secret-a", "acme", ALL, "{}"),
        ("o", "secret-o", "acme", orders_only, "{}"),
        ("r", "secret-r", "acme", READ_ONLY, "{}"),
        ("g", "secret-g", "globex", ALL, "{}"),
    ]);
    let acme = client(&s, "acme", Some("secret-a")).await;
    for name in ["orders", "orders-eu", "payments"] {
        acme.publish(name, Record::new("x")).await.unwrap();
    }
    acme.enqueue("jobs", Record::new("j"), 0, 0).await.unwrap();
    acme.kv_set("cfg", "k", "v", 0).await.unwrap();
    let globex = client(&s, "globex", Some("secret-g")).await;
    globex.publish("mine", Record::new("g")).await.unwrap();

    // Listing shows only what the token may use.
    assert_eq!(
        acme.list_streams("").await.unwrap(),
        ["acme/default/orders", "acme/default/orders-eu", "acme/default/payments"]
    );
    let orders = client(&s, "acme", Some("secret-o")).await;
    assert_eq!(orders.list_streams("").await.unwrap(), ["acme/default/orders", "acme/default/orders-eu"]);
    assert!(orders.list_queues("").await.unwrap().is_empty());
    assert_eq!(globex.list_streams("").await.unwrap(), ["globex/default/mine"]);
    // Another tenant's resources can be neither listed, deleted nor purged.
    unauthorized(globex.list_streams("acme/").await);
    unauthorized(globex.list_queues("acme/default/").await);
    unauthorized(globex.list_buckets("acme/default/").await);
    assert!(globex.list_streams("a").await.unwrap().is_empty(), "only globex/default/ is listed");
    unauthorized(globex.delete_stream("acme/default/orders").await);
    unauthorized(globex.delete_queue("acme/default/jobs").await);
    unauthorized(globex.delete_bucket("acme/default/cfg").await);
    unauthorized(globex.purge_stream("acme/default/orders").await);
    unauthorized(globex.purge_queue("acme/default/jobs").await);
    unauthorized(globex.extend("acme/default/jobs", 1, 1000).await);
    let upd = flowmesh::StreamUpdate { max_messages: Some(1), ..Default::default() };
    unauthorized(globex.update_stream("acme/default/orders", upd).await);
    // Missing resources of another tenant get the same answer as existing ones.
    let existing = unauthorized(globex.delete_stream("acme/default/orders").await);
    let missing = unauthorized(globex.delete_stream("acme/default/nothing").await);
    assert_eq!(existing.replace("orders", "X"), missing.replace("nothing", "X"));
    // Deleting and purging need an admin grant, also inside the tenant.
    let ro = client(&s, "acme", Some("secret-r")).await;
    unauthorized(ro.delete_stream("orders").await);
    unauthorized(ro.purge_stream("orders").await);
    unauthorized(orders.delete_stream("payments").await);
    assert_eq!(acme.read("orders", 0, 0, 10).await.unwrap().len(), 1, "nothing was removed");

    // Allowed calls go through and are in the audit trail.
    assert_eq!(orders.purge_stream("orders").await.unwrap(), 1);
    orders.delete_stream("orders-eu").await.unwrap();
    acme.delete_queue("jobs").await.unwrap();
    acme.update_stream("payments", upd).await.unwrap();
    let want = [
        ("purge_stream", "acme/default/orders"),
        ("delete_stream", "acme/default/orders-eu"),
        ("delete_queue", "acme/default/jobs"),
        ("update_stream", "acme/default/payments"),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let msgs = acme.read("acme/_system/_audit", 0, 0, 1000).await.unwrap_or_default();
        let events: Vec<serde_json::Value> = msgs.iter().map(|m| serde_json::from_slice(&m.payload).unwrap()).collect();
        let ok = |op: &str, res: &str| {
            events.iter().any(|e| e["operation"] == op && e["resource"] == res && e["outcome"] == "ok")
        };
        let denied_list = events.iter().any(|e| e["operation"] == "list_streams" && e["outcome"] == "denied");
        if want.iter().all(|(op, res)| ok(op, res)) && denied_list {
            break;
        }
        assert!(Instant::now() < deadline, "audit trail lacks lifecycle records: {events:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
