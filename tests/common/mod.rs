//! Shared test fixtures: a client per back end, so one contract suite runs
//! unchanged against every engine.
#![allow(dead_code)]

pub mod crash;
pub mod proxy;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowmesh::{Client, Options};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Mem,
    File,
    RemoteMem,
    RemoteFile,
    /// One nats-server (JetStream), shared by the tests of this binary.
    Nats,
    /// A 3-node JetStream cluster, shared by the tests of this binary.
    NatsCluster,
}

/// Keeps whatever a test client needs alive (temp dirs, a broker process).
pub struct Fixture {
    pub client: Client,
    pub url: String,
    pub dir: Option<tempfile::TempDir>,
    pub broker: Option<Broker>,
    pub options: Options,
}

impl Fixture {
    /// A fresh client on the same engine (for restart and multi-client tests).
    pub async fn reconnect(&self) -> Client {
        Client::connect(&self.url, &self.options).await.expect("reconnect")
    }
}

pub struct Broker {
    pub child: Child,
    pub addr: String,
    pub data: String,
}

impl Broker {
    pub fn start(data: &str) -> Broker {
        Broker::start_with(data, &free_addr(), &[])
    }

    pub fn start_on(data: &str, addr: &str) -> Broker {
        Broker::start_with(data, addr, &[])
    }

    pub fn start_with(data: &str, addr: &str, extra: &[&str]) -> Broker {
        let child = Command::new(env!("CARGO_BIN_EXE_flowmesh"))
            .args(["serve", "--listen", addr, "--data", data])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start flowmesh serve");
        wait_for_port(addr);
        Broker { child, addr: addr.to_owned(), data: data.to_owned() }
    }

    pub fn url(&self) -> String {
        format!("grpc://{}", self.addr)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

pub fn wait_for_port(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("broker did not listen on {addr} within 20 s");
}

/// A nats-server or cluster started by scripts/nats-cluster.sh in a temp dir.
/// Each test takes a JetStream account of its own, so tests share servers
/// without sharing resources.
pub struct NatsCluster {
    pub dir: std::path::PathBuf,
    pub url: String,
    next_account: std::sync::atomic::AtomicU32,
    /// Outlives this process on purpose: it wipes the servers after it.
    _watchdog: Child,
}

pub const NATS_ACCOUNTS: u32 = 64;

fn nats_script() -> String {
    format!("{}/scripts/nats-cluster.sh", env!("CARGO_MANIFEST_DIR"))
}

impl NatsCluster {
    /// Starts `nodes` servers; a watchdog wipes them once this process is gone.
    pub fn start(nodes: u32) -> NatsCluster {
        let dir = tempfile::Builder::new().prefix("fm-nats-").tempdir().unwrap().keep();
        let out = Command::new(nats_script())
            .arg("start")
            .env("NATS_CLUSTER_DIR", &dir)
            .env("NATS_NODES", nodes.to_string())
            .env("NATS_TEST_ACCOUNTS", NATS_ACCOUNTS.to_string())
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/nats-cluster.sh");
        assert!(out.status.success(), "scripts/nats-cluster.sh start failed (is Go available to build nats-server?)");
        let url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let watchdog = format!(
            "while kill -0 {} 2>/dev/null; do sleep 1; done; NATS_CLUSTER_DIR='{}' '{}' wipe",
            std::process::id(),
            dir.display(),
            nats_script()
        );
        let watchdog = Command::new("bash")
            .args(["-c", &watchdog])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats watchdog");
        NatsCluster { dir, url, next_account: std::sync::atomic::AtomicU32::new(1), _watchdog: watchdog }
    }

    /// Runs a nats-cluster.sh subcommand on this cluster.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new(nats_script())
            .args(args)
            .env("NATS_CLUSTER_DIR", &self.dir)
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/nats-cluster.sh");
        assert!(out.status.success(), "nats-cluster.sh {args:?} failed");
        String::from_utf8(out.stdout).unwrap()
    }

    /// Connect options for a fresh account of this cluster.
    pub fn account(&self) -> Options {
        let n = self.next_account.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(n <= NATS_ACCOUNTS, "more tests than NATS test accounts");
        Options::new().with("user", &format!("t{n}")).unwrap().with("password", "t").unwrap()
    }

    pub fn wipe(&self) {
        let _ = Command::new(nats_script()).arg("wipe").env("NATS_CLUSTER_DIR", &self.dir).status();
    }
}

static NATS_SINGLE: std::sync::OnceLock<NatsCluster> = std::sync::OnceLock::new();
static NATS_TRIO: std::sync::OnceLock<NatsCluster> = std::sync::OnceLock::new();

extern "C" fn wipe_nats_at_exit() {
    for c in [NATS_SINGLE.get(), NATS_TRIO.get()].into_iter().flatten() {
        c.wipe();
    }
}

/// The shared single server (`nodes` 1) or 3-node cluster of this test binary.
pub fn shared_nats(nodes: u32) -> &'static NatsCluster {
    let cell = if nodes == 1 { &NATS_SINGLE } else { &NATS_TRIO };
    cell.get_or_init(|| {
        static AT_EXIT: std::sync::Once = std::sync::Once::new();
        AT_EXIT.call_once(|| unsafe {
            libc::atexit(wipe_nats_at_exit);
        });
        NatsCluster::start(nodes)
    })
}

pub async fn fixture(backend: Backend) -> Fixture {
    fixture_with(backend, Options::new()).await
}

pub async fn fixture_with(backend: Backend, options: Options) -> Fixture {
    if let Backend::Nats | Backend::NatsCluster = backend {
        let nats = shared_nats(if backend == Backend::Nats { 1 } else { 3 });
        let options = nats.account().iter().try_fold(options, |o, (k, v)| o.with(k, v)).unwrap();
        let client = Client::connect(&nats.url, &options).await.expect("connect to nats");
        return Fixture { client, url: nats.url.clone(), dir: None, broker: None, options };
    }
    let (url, dir, broker) = match backend {
        Backend::Mem => (format!("mem://t{}", unique()), None, None),
        Backend::File => {
            let dir = tempfile::tempdir().unwrap();
            (format!("file://{}", dir.path().display()), Some(dir), None)
        }
        Backend::RemoteMem => {
            let b = Broker::start("mem://");
            (b.url(), None, Some(b))
        }
        Backend::Nats | Backend::NatsCluster => unreachable!(),
        Backend::RemoteFile => {
            let dir = tempfile::tempdir().unwrap();
            // Storage options belong to the broker when the engine is remote.
            let segment = options.get("segment_bytes").map(|s| vec!["--segment-bytes", s]).unwrap_or_default();
            let b = Broker::start_with(&format!("file://{}", dir.path().display()), &free_addr(), &segment);
            (b.url(), Some(dir), Some(b))
        }
    };
    if broker.is_some() {
        let mut client_side = options.iter().filter(|(k, _)| *k != "segment_bytes");
        let client_side = client_side.try_fold(Options::new(), |o, (k, v)| o.with(k, v)).unwrap();
        let client = Client::connect(&url, &client_side).await.expect("connect");
        return Fixture { client, url, dir, broker, options: client_side };
    }
    let client = Client::connect(&url, &options).await.expect("connect");
    Fixture { client, url, dir, broker, options }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed) + std::process::id() as u64 * 1_000_000
}

/// Runs each listed async contract test against every back end: the
/// embedded engines, the broker in front of each, a nats-server (and a
/// 3-node cluster, ignored by default: `make test-nats-cluster`).
#[macro_export]
macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        mod mem {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::common::Backend::Mem).await } )*
        }
        mod file {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::common::Backend::File).await } )*
        }
        mod remote_mem {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::common::Backend::RemoteMem).await } )*
        }
        mod remote_file {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::common::Backend::RemoteFile).await } )*
        }
        mod nats {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::common::Backend::Nats).await } )*
        }
        mod nats_cluster {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               #[ignore = "3-node cluster: make test-nats-cluster"]
               async fn $name() { super::$name($crate::common::Backend::NatsCluster).await } )*
        }
    };
}
