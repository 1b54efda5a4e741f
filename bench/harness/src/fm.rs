//! flowmesh through its Rust API (`flowmesh::Client`): the same code drives
//! the embedded engine (`mem://`, `file:///dir`) and the broker (`grpc://`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flowmesh::{Client, Options, Record, StartFrom, SubscribeSpec};
use futures::stream::FuturesUnordered;
use futures::StreamExt;

use crate::stats::{hist, record, Outcome};
use crate::{PubMode, R};

/// How to reach a flowmesh engine for one cell.
#[derive(Clone, Debug)]
pub enum FmTarget {
    /// Embedded durable engine in a fresh directory per cell.
    File { root: PathBuf, fsync: &'static str },
    /// A running broker.
    Grpc { url: String },
}

/// The clients of one cell, plus what to delete afterwards.
pub struct FmCell {
    pub clients: Vec<Client>,
    dir: Option<PathBuf>,
}

impl FmCell {
    pub async fn open(t: &FmTarget, cell: u64, n: usize) -> R<FmCell> {
        let (url, dir, opts) = match t {
            FmTarget::File { root, fsync } => {
                let dir = root.join(format!("fm-cell-{cell}"));
                let mut o = Options::new().with("fsync", fsync)?;
                if *fsync == "interval" {
                    o.set("fsync_interval_ms", "1000")?;
                }
                (format!("file://{}", dir.display()), Some(dir), o)
            }
            FmTarget::Grpc { url } => (url.clone(), None, Options::new()),
        };
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            clients.push(Client::connect(&url, &opts).await?);
        }
        Ok(FmCell { clients, dir })
    }

    pub fn close(self) {
        drop(self.clients);
        if let Some(d) = self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Creates `stream` in the memory tier: no disk, bounded, fan-out.
pub async fn create_memory_stream(c: &Client, stream: &str) -> R<()> {
    let cfg = flowmesh::StreamConfig { tier: flowmesh::Tier::Memory, ..Default::default() };
    c.create_stream(stream, cfg).await?;
    Ok(())
}

/// Single in-flight publish: each publish waits for its acknowledgement.
pub async fn pub_latency(c: &Client, stream: &str, payload: Bytes, dur: Duration, max: u64) -> R<Outcome> {
    // warm-up: create the stream and touch the path
    for _ in 0..10 {
        c.publish(stream, Record::new(payload.clone())).await?;
    }
    let mut h = hist();
    let start = Instant::now();
    let mut n = 0;
    while n < max && start.elapsed() < dur {
        let t = Instant::now();
        c.publish(stream, Record::new(payload.clone())).await?;
        record(&mut h, t);
        n += 1;
    }
    Ok(Outcome::new(n, start.elapsed())
        .with_hist(h)
        .with_bytes(n * payload.len() as u64))
}

/// Publish throughput with one task per client (producer).
pub async fn pub_throughput(
    cell: &FmCell,
    stream: &str,
    payload: Bytes,
    mode: PubMode,
    dur: Duration,
) -> R<Outcome> {
    cell.clients[0]
        .publish(stream, Record::new(payload.clone()))
        .await?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in &cell.clients {
        let c = c.clone();
        let stream = stream.to_owned();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut n: u64 = 0;
            match mode {
                PubMode::Batch(b) => {
                    while start.elapsed() < dur {
                        let recs: Vec<Record> =
                            (0..b).map(|_| Record::new(payload.clone())).collect();
                        c.publish_batch(&stream, recs).await?;
                        n += b as u64;
                    }
                }
                PubMode::Window(w) => {
                    let mut inflight = FuturesUnordered::new();
                    while start.elapsed() < dur {
                        while inflight.len() < w {
                            inflight.push(c.publish(&stream, Record::new(payload.clone())));
                        }
                        if let Some(r) = inflight.next().await {
                            r?;
                            n += 1;
                        }
                    }
                    while let Some(r) = inflight.next().await {
                        r?;
                        n += 1;
                    }
                }
            }
            Ok::<u64, flowmesh::Error>(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    let el = start.elapsed();
    Ok(Outcome::new(total, el).with_bytes(total * payload.len() as u64))
}

/// Fills `stream` with `n` messages (not timed).
pub async fn prefill(c: &Client, stream: &str, payload: Bytes, n: u64) -> R<()> {
    let mut left = n;
    while left > 0 {
        let b = left.min(1000);
        let recs: Vec<Record> = (0..b).map(|_| Record::new(payload.clone())).collect();
        c.publish_batch(stream, recs).await?;
        left -= b;
    }
    Ok(())
}

/// A durable consumer group reads `n` prefilled messages from the start and
/// commits its offset every `commit_every` messages and at the end.
pub async fn consume(c: &Client, stream: &str, n: u64, commit_every: u64, cap: Duration) -> R<Outcome> {
    let start = Instant::now();
    let mut sub = c
        .subscribe(
            stream,
            SubscribeSpec {
                partition: None,
                start: StartFrom::Committed,
                group: Some("bench".into()),
            },
        )
        .await?;
    let mut got = 0u64;
    while got < n {
        let m = match tokio::time::timeout(cap.saturating_sub(start.elapsed()), sub.next()).await {
            Ok(Some(m)) => m?,
            Ok(None) => return Err("subscription ended early".into()),
            Err(_) => return Err(format!("consume timed out after {got}/{n}").into()),
        };
        got += 1;
        if got % commit_every == 0 || got == n {
            c.commit_offset(stream, "bench", m.partition, m.offset).await?;
        }
    }
    Ok(Outcome::new(got, start.elapsed()))
}

/// One producer (window of in-flight enqueues) and one worker (batch
/// receive, ack each) for `dur` (at most `n` jobs): jobs acked per second.
pub async fn queue_throughput(cell: &FmCell, queue: &str, payload: Bytes, n: u64, window: usize, dur: Duration) -> R<Outcome> {
    let start = Instant::now();
    let prod = {
        let c = cell.clients[0].clone();
        let q = queue.to_owned();
        tokio::spawn(async move {
            let mut inflight = FuturesUnordered::new();
            let mut sent = 0;
            while sent < n && start.elapsed() < dur {
                while inflight.len() < window && sent < n {
                    inflight.push(c.enqueue(&q, Record::new(payload.clone()), 0, 0));
                    sent += 1;
                }
                if let Some(r) = inflight.next().await {
                    r?;
                }
            }
            while let Some(r) = inflight.next().await {
                r?;
            }
            Ok::<(), flowmesh::Error>(())
        })
    };
    let c = cell.clients[cell.clients.len() - 1].clone();
    let mut done = 0;
    let mut receives = 0u64;
    let mut recv_time = Duration::ZERO;
    while done < n && start.elapsed() < dur {
        let t = Instant::now();
        let jobs = c.receive(queue, 256, 30_000, 20).await?;
        recv_time += t.elapsed();
        receives += 1;
        let acks: FuturesUnordered<_> = jobs.iter().map(|j| c.ack(queue, j.id)).collect();
        for r in acks.collect::<Vec<_>>().await {
            r?;
            done += 1;
        }
    }
    let el = start.elapsed();
    prod.await??;
    let mut o = Outcome::new(done, el);
    o.extra.push(("jobs_per_receive", serde_json::json!((done as f64 / receives.max(1) as f64 * 10.0).round() / 10.0)));
    o.extra.push(("receive_ms_avg", serde_json::json!((recv_time.as_secs_f64() * 1e3 / receives.max(1) as f64 * 100.0).round() / 100.0)));
    Ok(o)
}

/// enqueue → reserve → ack of one job at a time; latency of the whole trip.
pub async fn queue_rtt(c: &Client, queue: &str, payload: Bytes, dur: Duration, max: u64) -> R<Outcome> {
    let mut h = hist();
    let start = Instant::now();
    let mut n = 0;
    while n < max && start.elapsed() < dur {
        let t = Instant::now();
        c.enqueue(queue, Record::new(payload.clone()), 0, 0).await?;
        let job = c
            .reserve(queue, 30_000, 1000)
            .await?
            .ok_or("reserve returned no job")?;
        c.ack(queue, job.id).await?;
        record(&mut h, t);
        n += 1;
    }
    Ok(Outcome::new(n, start.elapsed()).with_hist(h))
}

pub fn key(i: u64) -> String {
    format!("k{:06}", i)
}

pub async fn kv_preload(c: &Client, bucket: &str, keys: u64, value: Bytes) -> R<()> {
    for i in 0..keys {
        c.kv_set(bucket, &key(i), value.clone(), 0).await?;
    }
    Ok(())
}

/// `set` (or get) from every client of the cell at once, each one op in flight.
pub async fn kv_run(cell: &FmCell, bucket: &str, keys: u64, value: Bytes, set: bool, dur: Duration) -> R<Outcome> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (ci, c) in cell.clients.iter().enumerate() {
        let c = c.clone();
        let bucket = bucket.to_owned();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = hist();
            let mut i = ci as u64 * 7919;
            let mut n = 0u64;
            while start.elapsed() < dur {
                let k = key(i % keys);
                i += 1;
                let t = Instant::now();
                if set {
                    c.kv_set(&bucket, &k, value.clone(), 0).await?;
                } else {
                    c.kv_get(&bucket, &k).await?;
                }
                record(&mut h, t);
                n += 1;
            }
            Ok::<_, flowmesh::Error>((n, h))
        }));
    }
    let mut total = 0;
    let mut h = hist();
    for t in tasks {
        let (n, th) = t.await??;
        total += n;
        h.add(th)?;
    }
    Ok(Outcome::new(total, start.elapsed()).with_hist(h))
}
