//! A real full disk: a 16 MiB tmpfs filled through `file://` and through a
//! broker. Writes fail with a clear error, everything acknowledged stays
//! readable, and writes succeed again once space is freed. Mounting needs
//! root; where it is not permitted the test says so and passes, and the
//! injected-ENOSPC tests of the storage layer (`fault_tests`) cover the same
//! behaviour.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Broker;
use flowmesh::{Client, Options, Record};

struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount() -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "flowmesh-test"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: `mount -t tmpfs` is not permitted here; the injected ENOSPC tests cover a full disk");
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Takes `mib` MiB of the disk, to give back later.
fn filler(dir: &Path, name: &str, mib: usize) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, vec![7u8; mib << 20]).unwrap();
    path
}

fn is_full(e: &flowmesh::Error) -> bool {
    e.to_string().contains("No space left on device")
}

/// Fills the disk through `c` for streams, then queues, then KV (freeing a
/// filler before each), checks what was acknowledged, frees the rest and
/// writes again. Returns the acknowledged counts.
async fn fill(c: &Client, mnt: &Path) -> (u64, u64, u64) {
    let fillers = [filler(mnt, "filler-a", 2), filler(mnt, "filler-b", 2), filler(mnt, "filler-c", 2)];
    let payload = vec![b'p'; 1000];
    let (mut messages, mut jobs, mut keys) = (0u64, 0u64, 0u64);
    loop {
        let batch = (0..50).map(|_| Record::new(payload.clone())).collect();
        match c.publish_batch("orders", batch).await {
            Ok(p) => messages += p.len() as u64,
            Err(e) => {
                assert!(is_full(&e), "{e}");
                break;
            }
        }
        assert!(messages < 1_000_000, "the disk never filled");
    }
    std::fs::remove_file(&fillers[0]).unwrap();
    loop {
        match c.enqueue("jobs", Record::new(payload.clone()), 0, 0).await {
            Ok(_) => jobs += 1,
            Err(e) => {
                assert!(is_full(&e), "{e}");
                break;
            }
        }
        assert!(jobs < 1_000_000, "the disk never filled");
    }
    std::fs::remove_file(&fillers[1]).unwrap();
    loop {
        match c.kv_set("cfg", &format!("k{keys}"), payload.clone(), 0).await {
            Ok(_) => keys += 1,
            Err(e) => {
                assert!(is_full(&e), "{e}");
                break;
            }
        }
        assert!(keys < 1_000_000, "the disk never filled");
    }
    assert!(messages > 1000 && jobs > 100 && keys > 100, "{messages} {jobs} {keys}");
    readable(c, messages, jobs, keys).await;

    std::fs::remove_file(&fillers[2]).unwrap();
    c.publish("orders", Record::new("after")).await.unwrap();
    c.enqueue("jobs", Record::new("after"), 0, 0).await.unwrap();
    c.kv_set("cfg", "after", "v", 0).await.unwrap();
    (messages + 1, jobs + 1, keys + 1)
}

async fn readable(c: &Client, messages: u64, jobs: u64, keys: u64) {
    let mut read = 0u64;
    while read < messages {
        let batch = c.read("orders", 0, read, 10_000).await.unwrap();
        assert!(!batch.is_empty(), "acknowledged message {read} missing");
        read += batch.len() as u64;
    }
    assert_eq!(c.latest_offset("orders", 0).await.unwrap(), messages);
    assert_eq!(c.queue_stats("jobs").await.unwrap().pending, jobs);
    assert_eq!(c.kv_keys("cfg", "").await.unwrap().len() as u64, keys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_tmpfs_fails_writes_clearly_and_keeps_every_acknowledged_write() {
    let Some(fs) = Tmpfs::mount() else { return };
    let url = format!("file://{}/data", fs.path().display());
    let c = Client::connect(&url, &Options::new()).await.unwrap();
    let (messages, jobs, keys) = fill(&c, fs.path()).await;
    drop(c);
    let c = Client::connect(&url, &Options::new()).await.unwrap();
    readable(&c, messages, jobs, keys).await;
    eprintln!("file:// on a 16 MiB tmpfs: {messages} messages, {jobs} jobs, {keys} keys acknowledged and kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_tmpfs_under_the_broker_fails_writes_clearly_and_keeps_every_acknowledged_write() {
    let Some(fs) = Tmpfs::mount() else { return };
    let data = format!("file://{}/data", fs.path().display());
    let addr = common::free_addr();
    let mut broker = Broker::start_on(&data, &addr);
    let c = Client::connect(&broker.url(), &Options::new()).await.unwrap();
    let (messages, jobs, keys) = fill(&c, fs.path()).await;
    drop(c);
    broker.kill();
    let broker = Broker::start_on(&data, &addr);
    let c = Client::connect(&broker.url(), &Options::new()).await.unwrap();
    readable(&c, messages, jobs, keys).await;
    eprintln!("broker on a 16 MiB tmpfs: {messages} messages, {jobs} jobs, {keys} keys acknowledged and kept");
}
