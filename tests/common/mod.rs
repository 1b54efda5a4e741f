//! Shared test fixtures: a client per back end, so one contract suite runs
//! unchanged against every engine.
#![allow(dead_code)]

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

pub async fn fixture(backend: Backend) -> Fixture {
    fixture_with(backend, Options::new()).await
}

pub async fn fixture_with(backend: Backend, options: Options) -> Fixture {
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

/// Runs each listed async contract test against every back end.
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
    };
}
