//! Damaged files: a flipped byte in a segment, a queue or KV write-ahead log
//! or a stream's offsets file is found and reported (file and byte range),
//! every intact acknowledged record stays readable, nothing is cut off but
//! a torn tail, and `flowmesh check --repair` moves the damage aside.

use std::path::{Path, PathBuf};
use std::process::Command;

use flowmesh::{Client, Error, Options, Record, StartFrom, SubscribeSpec, TxnOp};
use futures::StreamExt;

const MESSAGES: usize = 2000;

fn url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

fn payload(i: usize) -> String {
    format!("{:-<100}", format!("message-{i:05}"))
}

/// Every file under `dir` whose name ends with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().map(Result::unwrap) {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.to_str().unwrap().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn flip(path: &Path, at: usize) {
    let mut data = std::fs::read(path).unwrap();
    data[at] ^= 0x5a;
    std::fs::write(path, data).unwrap();
}

/// Runs `flowmesh check` and returns (exit code, stdout).
fn check(dir: &Path, repair: bool) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowmesh"));
    cmd.arg("check").arg(dir);
    if repair {
        cmd.arg("--repair");
    }
    let out = cmd.output().expect("run flowmesh check");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn publish_all(dir: &Path, opts: &Options) {
    let c = Client::connect(&url(dir), opts).await.unwrap();
    for chunk in (0..MESSAGES).collect::<Vec<_>>().chunks(100) {
        let batch = chunk.iter().map(|&i| Record::new(payload(i))).collect();
        c.publish_batch("orders", batch).await.unwrap();
    }
}

/// Reads the whole partition, stepping past failing ranges as the error
/// says; returns the intact offsets and the errors met.
async fn read_around_damage(c: &Client) -> (Vec<u64>, Vec<Error>) {
    let (mut seen, mut errors, mut offset) = (Vec::new(), Vec::new(), 0u64);
    let latest = c.latest_offset("orders", 0).await.unwrap();
    while offset < latest && errors.len() < 10 {
        match c.read("orders", 0, offset, 500).await {
            Ok(batch) => {
                for m in &batch {
                    assert_eq!(m.payload, payload(m.offset as usize).as_bytes(), "offset {}", m.offset);
                    seen.push(m.offset);
                }
                offset = batch.last().expect("a read short of the end returns something").offset + 1;
            }
            Err(e) => {
                let msg = e.to_string();
                let next = msg.split("read from offset ").nth(1).expect("the error says where to resume");
                offset = next.split_whitespace().next().unwrap().parse().unwrap();
                errors.push(e);
            }
        }
    }
    (seen, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_mid_segment_loses_only_its_record_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    publish_all(dir.path(), &Options::new()).await;
    let seg = files(dir.path(), ".log").into_iter().find(|p| p.parent().unwrap().ends_with("p0")).unwrap();
    let size = std::fs::metadata(&seg).unwrap().len();
    flip(&seg, size as usize / 2);

    let c = Client::connect(&url(dir.path()), &Options::new()).await.unwrap();
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), size, "nothing is truncated");
    assert_eq!(c.latest_offset("orders", 0).await.unwrap(), MESSAGES as u64);
    let (seen, errors) = read_around_damage(&c).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    let msg = errors[0].to_string();
    assert!(matches!(errors[0], Error::Internal(_)), "{msg}");
    assert!(msg.contains(&seg.display().to_string()) && msg.contains("bytes "), "names file and position: {msg}");
    assert!(seen.len() >= MESSAGES - 2, "intact records readable: {} of {MESSAGES}", seen.len());
    // A subscriber gets every record before the damage, then the error.
    let spec = SubscribeSpec { partition: Some(0), start: StartFrom::Earliest, group: None };
    let mut sub = c.subscribe("orders", spec).await.unwrap();
    let mut delivered = 0;
    while let Some(item) = sub.next().await {
        match item {
            Ok(m) => assert_eq!(m.offset, delivered),
            Err(e) => {
                assert!(e.to_string().contains("damaged"), "{e}");
                break;
            }
        }
        delivered += 1;
    }
    let first_missing = seen.iter().enumerate().find(|(i, &o)| o != *i as u64).map(|(i, _)| i as u64);
    assert_eq!(Some(delivered), first_missing);
    drop(sub);
    drop(c);

    let (code, out) = check(dir.path(), false);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&seg.display().to_string()) && out.contains("damaged"), "{out}");
    let (code, out) = check(dir.path(), true);
    assert_eq!(code, 0, "{out}");
    assert_eq!(files(dir.path(), ".log").len(), 3, "segment, offsets and the transaction log, no more");
    assert_eq!(files(dir.path(), "").iter().filter(|p| p.to_str().unwrap().contains(".log.damaged-")).count(), 1);
    let (code, out) = check(dir.path(), false);
    assert_eq!(code, 0, "repaired: {out}");

    // After the repair reads step over the quarantined offsets.
    let c = Client::connect(&url(dir.path()), &Options::new()).await.unwrap();
    let (all, errors) = read_around_damage(&c).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(all, seen);
    let spec = SubscribeSpec { partition: Some(0), start: StartFrom::Earliest, group: None };
    let sub = c.subscribe("orders", spec).await.unwrap();
    let got: Vec<u64> = sub.take(seen.len()).map(|m| m.unwrap().offset).collect().await;
    assert_eq!(got, seen, "a subscriber steps over the quarantined offsets");
    c.publish("orders", Record::new(payload(MESSAGES))).await.unwrap();
    assert_eq!(c.read("orders", 0, MESSAGES as u64, 10).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_at_the_end_of_an_older_segment_is_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::new().with("segment_bytes", "8192").unwrap();
    publish_all(dir.path(), &opts).await;
    let segs: Vec<PathBuf> =
        files(dir.path(), ".log").into_iter().filter(|p| p.parent().unwrap().ends_with("p0")).collect();
    assert!(segs.len() > 3, "{} segments", segs.len());
    // The last record of the second segment.
    let victim = &segs[1];
    let size = std::fs::metadata(victim).unwrap().len() as usize;
    flip(victim, size - 5);

    let c = Client::connect(&url(dir.path()), &opts).await.unwrap();
    assert_eq!(std::fs::metadata(victim).unwrap().len() as usize, size, "an older segment is never cut");
    let (seen, errors) = read_around_damage(&c).await;
    assert_eq!((seen.len(), errors.len()), (MESSAGES - 1, 1), "{errors:?}");
    assert!(errors[0].to_string().contains(&victim.display().to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_and_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    publish_all(dir.path(), &Options::new()).await;
    let seg = files(dir.path(), ".log").into_iter().find(|p| p.parent().unwrap().ends_with("p0")).unwrap();
    let size = std::fs::metadata(&seg).unwrap().len();
    // The start of a frame whose write never completed.
    let mut data = std::fs::read(&seg).unwrap();
    data.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, b'x', b'y']);
    std::fs::write(&seg, data).unwrap();

    let c = Client::connect(&url(dir.path()), &Options::new()).await.unwrap();
    assert_eq!(c.read("orders", 0, 0, usize::MAX).await.unwrap().len(), MESSAGES);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), size);
    let aside = files(dir.path(), &format!(".log.torn-{size}-{}", size + 10));
    assert_eq!(aside.len(), 1);
    assert_eq!(std::fs::read(&aside[0]).unwrap().len(), 10);
    c.publish("orders", Record::new(payload(MESSAGES))).await.unwrap();
    assert_eq!(c.read("orders", 0, 0, usize::MAX).await.unwrap().len(), MESSAGES + 1);
}

/// Flips a byte mid-file in the write-ahead log named `name`, checks that
/// `use_it` fails naming it, repairs, and returns a fresh client.
async fn damage_wal_then_repair(dir: &Path, name: &str, use_it: impl AsyncFn(&Client) -> Result<(), Error>) -> Client {
    let wal = files(dir, name).pop().unwrap();
    let size = std::fs::metadata(&wal).unwrap().len();
    flip(&wal, size as usize / 2);
    {
        let c = Client::connect(&url(dir), &Options::new()).await.unwrap();
        let err = use_it(&c).await.expect_err("a damaged log is refused");
        let msg = err.to_string();
        assert!(msg.contains(&wal.display().to_string()) && msg.contains("bytes "), "{msg}");
        assert!(msg.contains("flowmesh check --repair"), "{msg}");
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), size, "nothing is cut");
    }
    let (code, out) = check(dir, false);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&wal.display().to_string()), "{out}");
    let (code, out) = check(dir, true);
    assert_eq!(code, 0, "{out}");
    assert_eq!(files(dir, "").iter().filter(|p| p.to_str().unwrap().contains(&format!("{name}.damaged-"))).count(), 1);
    Client::connect(&url(dir), &Options::new()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_queue_log_is_refused_until_repaired_then_keeps_its_intact_jobs() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = Client::connect(&url(dir.path()), &Options::new()).await.unwrap();
        for i in 0..400 {
            c.enqueue("jobs", Record::new(payload(i)), 0, 0).await.unwrap();
        }
    }
    let c = damage_wal_then_repair(dir.path(), "queue.log", async |c| c.queue_stats("jobs").await.map(drop)).await;
    let pending = c.queue_stats("jobs").await.unwrap().pending;
    assert!((398..=399).contains(&pending), "{pending} of 400 jobs intact");
    let jobs = c.receive("jobs", 400, 30_000, 0).await.unwrap();
    assert!(jobs.iter().all(|j| j.payload == payload(j.id as usize - 1).as_bytes()));
    assert_eq!(c.enqueue("jobs", Record::new("more"), 0, 0).await.unwrap(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_kv_log_is_refused_until_repaired_then_keeps_its_intact_keys() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = Client::connect(&url(dir.path()), &Options::new()).await.unwrap();
        for i in 0..400 {
            c.kv_set("cfg", &format!("k{i}"), payload(i), 0).await.unwrap();
        }
    }
    let c = damage_wal_then_repair(dir.path(), "bucket.log", async |c| c.kv_get("cfg", "k0").await.map(drop)).await;
    let keys = c.kv_keys("cfg", "").await.unwrap();
    assert!((398..=399).contains(&keys.len()), "{} of 400 keys intact", keys.len());
    for k in keys {
        let i: usize = k[1..].parse().unwrap();
        let e = c.kv_get("cfg", &k).await.unwrap();
        assert_eq!((e.value.as_ref(), e.revision), (payload(i).as_bytes(), i as u64 + 1));
    }
    assert_eq!(c.kv_set("cfg", "new", "v", 0).await.unwrap(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_offsets_log_is_refused_until_repaired_then_keeps_its_intact_commits() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = Client::connect(&url(dir.path()), &Options::new()).await.unwrap();
        c.publish("orders", Record::new("one")).await.unwrap();
        for g in 0..200 {
            c.commit_offset("orders", &format!("group-{g}"), 0, g).await.unwrap();
        }
    }
    let c =
        damage_wal_then_repair(dir.path(), "offsets.log", async |c| c.read("orders", 0, 0, 1).await.map(drop)).await;
    assert_eq!(c.read("orders", 0, 0, 10).await.unwrap().len(), 1);
    let mut intact = 0;
    for g in 0..200 {
        match c.get_offset("orders", &format!("group-{g}"), 0).await {
            Ok(o) => {
                assert_eq!(o, g);
                intact += 1;
            }
            Err(e) => assert!(matches!(e, Error::NotFound(_)), "{e}"),
        }
    }
    assert!((198..=199).contains(&intact), "{intact} of 200 commits intact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_transaction_log_is_refused_until_repaired() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = Client::connect(&url(dir.path()), &Options::new()).await.unwrap();
        for i in 0..200 {
            let put = |bucket: &str| TxnOp::Put {
                bucket: bucket.into(),
                key: format!("k{i}"),
                value: payload(i).into(),
                ttl_ms: 0,
            };
            c.kv_txn(vec![put("left"), put("right")]).await.unwrap();
        }
    }
    let log = files(dir.path(), "txn/kv.log").pop().expect("the transaction log");
    let size = std::fs::metadata(&log).unwrap().len();
    assert!(size > 0, "the log still holds the transactions");
    flip(&log, size as usize / 2);
    let err = Client::connect(&url(dir.path()), &Options::new()).await.err().expect("a damaged log is refused");
    let msg = err.to_string();
    assert!(msg.contains(&log.display().to_string()) && msg.contains("flowmesh check --repair"), "{msg}");
    let (code, out) = check(dir.path(), false);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&log.display().to_string()), "{out}");
    let (code, out) = check(dir.path(), true);
    assert_eq!(code, 0, "{out}");
    // The buckets had every transaction already: nothing is lost but the log's copy.
    let c = Client::connect(&url(dir.path()), &Options::new()).await.unwrap();
    for bucket in ["left", "right"] {
        assert_eq!(c.kv_keys(bucket, "").await.unwrap().len(), 200, "{bucket}");
    }
}

#[test]
fn check_refuses_a_directory_in_use_and_a_non_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _) = check(dir.path(), false);
    assert_eq!(code, 2, "not a data directory: not found");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = rt.block_on(Client::connect(&url(dir.path()), &Options::new())).unwrap();
    rt.block_on(c.publish("orders", Record::new("x"))).unwrap();
    let (code, _) = check(dir.path(), false);
    assert_eq!(code, 10, "in use by a process: unavailable");
    drop(c);
    let (code, out) = check(dir.path(), false);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no damage"), "{out}");
}
