//! Storage faults injected through `fault`: power loss at random points of
//! a concurrent workload, failed fsyncs and a full disk (the same through
//! an in-process broker: `server::storage_fault_tests`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::fault;
use super::{EmbeddedConfig, EmbeddedEngine, FsyncPolicy};
use crate::engine::{Engine, Record, StreamConfig};
use crate::error::Error;

const STREAM: &str = "t/n/orders";
const QUEUE: &str = "t/n/jobs";
const BUCKET: &str = "t/n/cfg";

/// A small xorshift generator: reproducible from the seed it prints.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let seed = std::env::var("FM_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| (super::now_ms() as u64).wrapping_mul(2654435761) | 1);
        eprintln!("fault test seed: FM_FAULT_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

pub(crate) fn open(dir: &Path, fsync: FsyncPolicy) -> Arc<EmbeddedEngine> {
    let cfg = EmbeddedConfig { dir: Some(dir.to_owned()), fsync, segment_bytes: 4096, max_payload_bytes: 1 << 20 };
    Arc::new(EmbeddedEngine::open(cfg, None).expect("the store opens"))
}

/// What the engine acknowledged (or, for lazy policies, made durable).
#[derive(Default, Clone)]
struct Acked {
    /// (partition, offset) -> payload
    messages: BTreeMap<(u32, u64), Bytes>,
    /// job id -> payload, for jobs enqueued and not acknowledged as done
    jobs: BTreeMap<u64, Bytes>,
    done: HashSet<u64>,
    /// key -> (revision, Some(value) or None = deleted)
    keys: HashMap<String, (u64, Option<Bytes>)>,
    /// Keys and jobs whose last write failed at the crash: either outcome is right.
    doubt_keys: HashSet<String>,
    doubt_jobs: HashSet<u64>,
}

/// One worker: `ops` random operations (of the first `kinds` kinds) until
/// one fails (the power went out). Each worker has keys of its own, so its
/// sequential acknowledgements give the exact order of its writes.
async fn workload(engine: Arc<EmbeddedEngine>, acked: Arc<Mutex<Acked>>, who: u64, seed: u64, ops: u64, kinds: u64) {
    let mut rng = Rng(seed | 1);
    for i in 0..ops {
        let tag = format!("{who}-{seed}-{i}");
        let mut doubt_key = None;
        let mut doubt_job = None;
        let r = match rng.below(kinds) {
            0 | 1 => {
                let key = Bytes::from(format!("k{}", rng.below(4)));
                let records = (0..1 + rng.below(4))
                    .map(|j| Record { key: Some(key.clone()), ..Record::new(format!("m-{tag}-{j}")) })
                    .collect::<Vec<_>>();
                let payloads: Vec<Bytes> = records.iter().map(|r| r.payload.clone()).collect();
                engine.publish(STREAM, records).await.map(|pos| {
                    let mut a = acked.lock().unwrap();
                    for (p, payload) in pos.into_iter().zip(payloads) {
                        a.messages.insert((p.partition, p.offset), payload);
                    }
                })
            }
            2 => {
                let payload = Bytes::from(format!("j-{tag}"));
                engine.enqueue(QUEUE, Record::new(payload.clone()), 0, 0).await.map(|id| {
                    let mut a = acked.lock().unwrap();
                    // Another worker may have taken and acknowledged it already.
                    if !a.done.contains(&id) {
                        a.jobs.insert(id, payload);
                    }
                })
            }
            3 => match engine.reserve(QUEUE, 1, 1, 0).await {
                Ok(jobs) => {
                    let mut r = Ok(());
                    for j in jobs {
                        doubt_job = Some(j.id);
                        r = engine.ack(QUEUE, j.id).await.map(|_| {
                            let mut a = acked.lock().unwrap();
                            a.jobs.remove(&j.id);
                            a.done.insert(j.id);
                        });
                        // Another worker may have re-reserved it after the 1 ms visibility.
                        if matches!(r, Err(Error::NotFound(_))) {
                            r = Ok(());
                        }
                    }
                    r
                }
                Err(e) => Err(e),
            },
            4 => {
                let key = format!("key{who}-{}", rng.below(8));
                let value = Bytes::from(format!("v-{tag}"));
                doubt_key = Some(key.clone());
                engine.kv_set(BUCKET, &key, value.clone(), 0).await.map(|rev| {
                    acked.lock().unwrap().keys.insert(key, (rev, Some(value)));
                })
            }
            _ => {
                let key = format!("key{who}-{}", rng.below(8));
                doubt_key = Some(key.clone());
                engine.kv_delete(BUCKET, &key).await.map(|_| {
                    acked.lock().unwrap().keys.insert(key, (0, None));
                })
            }
        };
        if r.is_err() {
            let mut a = acked.lock().unwrap();
            a.doubt_keys.extend(doubt_key);
            a.doubt_jobs.extend(doubt_job);
            return; // the power is out
        }
    }
}

/// Every message of a partition (a read returns at most one segment's worth).
async fn read_all(engine: &dyn Engine, partition: u32) -> Vec<crate::engine::Message> {
    let latest = engine.stream_info(STREAM).await.unwrap().partitions[partition as usize].latest;
    let mut out: Vec<crate::engine::Message> = Vec::new();
    let mut next = 0;
    while next < latest {
        let batch = engine.read(STREAM, partition, next, 1 << 20).await.unwrap();
        next = batch.last().expect("no holes").offset + 1;
        out.extend(batch);
    }
    out
}

/// Everything in `acked` is in the reopened store; what was in doubt is
/// then taken as found.
async fn verify(engine: &EmbeddedEngine, acked: &mut Acked, context: &str) {
    let info = match engine.stream_info(STREAM).await {
        Ok(i) => Some(i),
        Err(Error::NotFound(_)) => None,
        Err(e) => panic!("{context}: {e}"),
    };
    if let Some(info) = info {
        for p in &info.partitions {
            let got = read_all(engine, p.partition).await;
            let got: HashMap<u64, Bytes> = got.into_iter().map(|m| (m.offset, m.payload)).collect();
            for ((part, offset), payload) in acked.messages.range((p.partition, 0)..(p.partition + 1, 0)) {
                assert_eq!(got.get(offset), Some(payload), "{context}: acknowledged message {part}/{offset} lost");
            }
        }
    } else {
        assert!(acked.messages.is_empty(), "{context}: acknowledged stream lost");
    }
    // Take every job, compare, put them back.
    tokio::time::sleep(Duration::from_millis(5)).await; // 1 ms visibilities expire
    let jobs = engine.reserve(QUEUE, 1 << 20, 600_000, 0).await.unwrap();
    let present: HashMap<u64, Bytes> = jobs.iter().map(|j| (j.id, j.payload.clone())).collect();
    for (id, payload) in &acked.jobs {
        if acked.doubt_jobs.contains(id) && !present.contains_key(id) {
            continue; // its ack may have reached the disk
        }
        assert_eq!(present.get(id), Some(payload), "{context}: acknowledged job {id} lost");
    }
    for id in std::mem::take(&mut acked.doubt_jobs) {
        if !present.contains_key(&id) {
            acked.jobs.remove(&id);
            acked.done.insert(id);
        }
    }
    for id in &acked.done {
        assert!(!present.contains_key(id), "{context}: job {id} acknowledged as done came back");
    }
    for j in &jobs {
        engine.nack(QUEUE, j.id, 0).await.unwrap();
    }
    for key in std::mem::take(&mut acked.doubt_keys) {
        match engine.kv_get(BUCKET, &key).await {
            Ok(e) => acked.keys.insert(key, (e.revision, Some(e.value))),
            Err(_) => acked.keys.insert(key, (0, None)),
        };
    }
    for (key, (rev, value)) in &acked.keys {
        match (engine.kv_get(BUCKET, key).await, value) {
            (Ok(e), Some(v)) => {
                assert!(e.revision >= *rev, "{context}: {key} went back from revision {rev} to {}", e.revision);
                if e.revision == *rev {
                    assert_eq!(&e.value, v, "{context}: {key} at revision {rev}");
                }
            }
            (Err(Error::NotFound(_)), Some(_)) => panic!("{context}: acknowledged {key} at revision {rev} lost"),
            (Ok(e), None) => panic!("{context}: deleted {key} came back at revision {}", e.revision),
            (Err(Error::NotFound(_)), None) => {}
            (Err(e), _) => panic!("{context}: {e}"),
        }
    }
}

async fn crash_round(dir: &Path, fsync: FsyncPolicy, rng: &mut Rng, acked: &Arc<Mutex<Acked>>) {
    fault::arm(dir, |_| {});
    let engine = open(dir, fsync);
    engine.create_stream(STREAM, StreamConfig { partitions: 2, ..Default::default() }).await.unwrap();
    let tasks: Vec<_> = (0..3)
        .map(|who| tokio::spawn(workload(engine.clone(), acked.clone(), who, rng.below(u64::MAX), 5_000, 6)))
        .collect();
    tokio::time::sleep(Duration::from_millis(1 + rng.below(60))).await;
    fault::crash(dir);
    for t in tasks {
        t.await.unwrap();
    }
    drop(engine); // its last flush fails: the power is out
    let mut cut = Rng(rng.below(u64::MAX) | 1);
    fault::power_loss(dir, |unsynced| match cut.below(3) {
        0 => 0,
        _ => cut.below(unsynced + 1), // a torn write
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fsync_batch_every_acknowledged_write_survives_power_loss() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::seeded();
    let acked = Arc::new(Mutex::new(Acked::default()));
    for round in 0..25 {
        crash_round(dir.path(), FsyncPolicy::Batch, &mut rng, &acked).await;
        let engine = open(dir.path(), FsyncPolicy::Batch);
        let mut snapshot = acked.lock().unwrap().clone();
        verify(&engine, &mut snapshot, &format!("after power loss {round}")).await;
        *acked.lock().unwrap() = snapshot;
    }
    let a = acked.lock().unwrap();
    assert!(a.messages.len() > 100 && !a.keys.is_empty(), "the workload did work: {} messages", a.messages.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_lazy_fsync_the_store_opens_and_keeps_what_was_synced() {
    for fsync in [FsyncPolicy::Never, FsyncPolicy::Interval(10)] {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng::seeded();
        for round in 0..10 {
            // Acknowledgements promise nothing here; an explicit sync does.
            let acked = Arc::new(Mutex::new(Acked::default()));
            fault::arm(dir.path(), |_| {});
            let engine = open(dir.path(), fsync);
            engine.create_stream(STREAM, StreamConfig { partitions: 2, ..Default::default() }).await.unwrap();
            let seed = rng.below(u64::MAX);
            workload(engine.clone(), acked.clone(), 7, seed, 20 + rng.below(300), 6).await;
            engine.sync().await.unwrap();
            let mut synced = acked.lock().unwrap().clone();
            // Then publishes only, cut by the power loss, so the synced state stays exact.
            let more = tokio::spawn(workload(engine.clone(), acked.clone(), 9, rng.below(u64::MAX), 5_000, 2));
            tokio::time::sleep(Duration::from_millis(rng.below(30))).await;
            fault::crash(dir.path());
            more.await.unwrap();
            drop(engine);
            let mut cut = Rng(rng.below(u64::MAX) | 1);
            fault::power_loss(dir.path(), |unsynced| cut.below(unsynced + 1));
            let engine = open(dir.path(), fsync);
            verify(&engine, &mut synced, &format!("{fsync:?}, power loss {round}")).await;
            // What survived beyond the sync is what was written, in order.
            let info = engine.stream_info(STREAM).await.unwrap();
            let all = acked.lock().unwrap().clone();
            for p in info.partitions {
                for m in read_all(&*engine, p.partition).await {
                    if let Some(want) = all.messages.get(&(p.partition, m.offset)) {
                        assert_eq!(&m.payload, want, "{fsync:?}: {}/{}", p.partition, m.offset);
                    }
                }
            }
            drop(engine);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_is_never_acknowledged_and_stops_writes_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), FsyncPolicy::Batch);
    engine.publish(STREAM, vec![Record::new("before")]).await.unwrap();
    engine.enqueue(QUEUE, Record::new("before"), 0, 0).await.unwrap();
    engine.kv_set(BUCKET, "k", Bytes::from("before"), 0).await.unwrap();
    engine.commit_offset(STREAM, "g", 0, 0).await.unwrap();

    fault::arm(dir.path(), |p| p.fail_fsync = true);
    let failures = [
        engine.publish(STREAM, vec![Record::new("lost")]).await.map(drop),
        engine.enqueue(QUEUE, Record::new("lost"), 0, 0).await.map(drop),
        engine.kv_set(BUCKET, "k", Bytes::from("lost"), 0).await.map(drop),
        engine.commit_offset(STREAM, "g", 0, 1).await,
    ];
    let files = ["p0/", "queue.log", "bucket.log", "offsets.log"];
    for (r, file) in failures.iter().zip(files) {
        let msg = r.as_ref().expect_err("never acknowledged").to_string();
        assert!(msg.starts_with("internal error: fsync of ") && msg.contains(file), "{msg}");
    }
    // The disk "recovers": the files stay stopped (their lost pages are
    // not rewritten by a later fsync) until the store is reopened.
    fault::arm(dir.path(), |p| p.fail_fsync = false);
    let again = [
        engine.publish(STREAM, vec![Record::new("later")]).await.map(drop),
        engine.enqueue(QUEUE, Record::new("later"), 0, 0).await.map(drop),
        engine.kv_set(BUCKET, "k2", Bytes::from("later"), 0).await.map(drop),
        engine.commit_offset(STREAM, "g", 0, 1).await,
        engine.sync().await,
    ];
    for r in &again {
        let msg = r.as_ref().expect_err("stopped").to_string();
        assert!(msg.contains("refused until it is reopened"), "{msg}");
    }
    // Reads keep working (what failed is in doubt: it may be on disk).
    assert_eq!(engine.read(STREAM, 0, 0, 10).await.unwrap()[0].payload, "before");
    assert!(engine.kv_get(BUCKET, "k").await.is_ok());
    drop(engine);
    fault::disarm(dir.path());

    let engine = open(dir.path(), FsyncPolicy::Batch);
    assert_eq!(engine.read(STREAM, 0, 0, 10).await.unwrap()[0].payload, "before");
    engine.publish(STREAM, vec![Record::new("after")]).await.unwrap();
    engine.kv_set(BUCKET, "k3", Bytes::from("after"), 0).await.unwrap();
    engine.enqueue(QUEUE, Record::new("after"), 0, 0).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_background_fsync_stops_writes_too() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), FsyncPolicy::Interval(5));
    engine.kv_set(BUCKET, "k", Bytes::from("v"), 0).await.unwrap();
    fault::arm(dir.path(), |p| p.fail_fsync = true);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let err = loop {
        match engine.kv_set(BUCKET, "k", Bytes::from("v"), 0).await {
            Ok(_) => assert!(std::time::Instant::now() < deadline, "the flusher never ran"),
            Err(e) => break e,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(err.to_string().contains("bucket.log") && err.to_string().contains("reopened"), "{err}");
    fault::disarm(dir.path());
}

/// Fills the disk (a byte budget) through `engine`, then frees space.
pub(crate) async fn fill_disk_and_free(dir: &Path, engine: &dyn Engine) {
    let payload = Bytes::from(vec![b'x'; 200]);
    let mut counts = Vec::new();
    for what in ["stream", "queue", "kv"] {
        fault::arm(dir, |p| p.space = Some(256 << 10));
        let mut acked = 0u64;
        let err = loop {
            let r = match what {
                "stream" => engine.publish(STREAM, vec![Record::new(payload.clone())]).await.map(drop),
                "queue" => engine.enqueue(QUEUE, Record::new(payload.clone()), 0, 0).await.map(drop),
                _ => engine.kv_set(BUCKET, &format!("k{acked}"), payload.clone(), 0).await.map(drop),
            };
            match r {
                Ok(()) => acked += 1,
                Err(e) => break e,
            }
            assert!(acked < 100_000, "{what}: the disk never filled");
        };
        let msg = err.to_string();
        assert!(msg.contains("No space left on device"), "{what}: {msg}");
        // Full stays full: a second write fails the same way.
        let r = engine.kv_set(BUCKET, "extra", payload.clone(), 0).await;
        assert!(r.is_err_and(|e| e.to_string().contains("No space left on device")), "{what}");
        counts.push(acked);
    }
    let (messages, jobs, keys) = (counts[0], counts[1], counts[2]);
    assert!(messages > 100 && jobs > 100 && keys > 100, "{counts:?}");
    let check = async |engine: &dyn Engine| {
        assert_eq!(read_all(engine, 0).await.len() as u64, messages);
        assert_eq!(engine.queue_stats(QUEUE).await.unwrap().pending, jobs);
        assert_eq!(engine.kv_keys(BUCKET, "").await.unwrap().len() as u64, keys);
    };
    check(engine).await;
    fault::arm(dir, |p| p.space = None); // space freed
    engine.publish(STREAM, vec![Record::new("after")]).await.unwrap();
    engine.enqueue(QUEUE, Record::new("after"), 0, 0).await.unwrap();
    engine.kv_set(BUCKET, "after", payload.clone(), 0).await.unwrap();
    engine.read(STREAM, 0, messages, 1).await.unwrap();
    fault::disarm(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_clearly_and_keeps_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), FsyncPolicy::Batch);
    fill_disk_and_free(dir.path(), &*engine).await;
    drop(engine);
    // Everything is still there after a reopen (no torn or damaged records).
    let engine = open(dir.path(), FsyncPolicy::Batch);
    assert!(read_all(&*engine, 0).await.last().unwrap().payload == "after");
    let report = super::check(dir.path(), false);
    drop(engine);
    assert!(report.is_err(), "in use");
    let report = super::check(dir.path(), false).unwrap();
    assert!(report.clean(), "{report}");
}

/// Under `fsync=batch`, writes in flight together share fsyncs (group
/// commit), whether they are futures polled by one task or separate tasks,
/// and none is acknowledged before the fsync that covers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_in_flight_together_share_fsyncs() {
    use futures::stream::{FuturesUnordered, TryStreamExt};
    let dir = tempfile::tempdir().unwrap();
    let cfg = EmbeddedConfig {
        dir: Some(dir.path().to_owned()),
        fsync: FsyncPolicy::Batch,
        segment_bytes: 64 << 20,
        max_payload_bytes: 1 << 20,
    };
    let engine = Arc::new(EmbeddedEngine::open(cfg, None).unwrap());
    engine.publish(STREAM, vec![Record::new("first")]).await.unwrap();
    engine.kv_set(BUCKET, "first", Bytes::from("v"), 0).await.unwrap();
    // A disk where each fsync takes 5 ms: writes made meanwhile must wait
    // for the next one, and share it.
    fault::arm(dir.path(), |p| p.fsync_time = Some(Duration::from_millis(5)));

    let one_task: FuturesUnordered<_> =
        (0..256).map(|i| engine.publish(STREAM, vec![Record::new(format!("m{i}"))])).collect();
    let positions: Vec<_> = one_task.try_collect().await.unwrap();
    let mut offsets: Vec<u64> = positions.iter().map(|p| p[0].offset).collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (1..=256).collect::<Vec<_>>());
    let fsyncs = fault::fsyncs(dir.path());
    assert!(fsyncs < 64, "256 publishes in flight from one task took {fsyncs} fsyncs");

    fault::arm(dir.path(), |p| p.fsyncs = 0);
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let engine = engine.clone();
            tokio::spawn(async move {
                for i in 0..16 {
                    engine.kv_set(BUCKET, &format!("k{t}"), Bytes::from(format!("{i}")), 0).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let fsyncs = fault::fsyncs(dir.path());
    assert!(fsyncs < 64, "256 KV sets from 16 tasks took {fsyncs} fsyncs");

    // Everything acknowledged was covered by an fsync: a power loss now keeps it all.
    fault::crash(dir.path());
    drop(engine);
    fault::power_loss(dir.path(), |_| 0);
    let engine = open(dir.path(), FsyncPolicy::Batch);
    assert_eq!(engine.stream_info(STREAM).await.unwrap().partitions[0].latest, 257);
    for t in 0..16 {
        assert_eq!(engine.kv_get(BUCKET, &format!("k{t}")).await.unwrap().value, "15");
    }
}

/// A failed fsync fails every write waiting for it; none hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_shared_fsync_fails_every_waiting_write() {
    use futures::stream::{FuturesUnordered, StreamExt};
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), FsyncPolicy::Batch);
    engine.publish(STREAM, vec![Record::new("first")]).await.unwrap();
    fault::arm(dir.path(), |p| {
        p.fail_fsync = true;
        p.fsync_time = Some(Duration::from_millis(5));
    });
    let writes: FuturesUnordered<_> =
        (0..64).map(|i| engine.publish(STREAM, vec![Record::new(format!("m{i}"))])).collect();
    let outcomes: Vec<_> =
        tokio::time::timeout(Duration::from_secs(60), writes.collect()).await.expect("every waiting write ends");
    assert_eq!(outcomes.len(), 64);
    for r in outcomes {
        let err = r.expect_err("no write is acknowledged after a failed fsync");
        assert!(err.to_string().contains("fsync"), "{err}");
    }
    fault::disarm(dir.path());
}
