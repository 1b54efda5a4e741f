//! The peers through their real client crates: NATS JetStream (`async-nats`)
//! and Redis (`redis`, tokio). No protocol code of our own.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, stream};
use bytes::Bytes;
use futures::StreamExt;

use crate::stats::{hist, record, Outcome};
use crate::R;

// ---------------------------------------------------------------- NATS ----

pub struct NatsCell {
    pub js: Vec<jetstream::Context>,
    pub stream: String,
    pub subject: String,
    kv: Option<String>,
}

impl NatsCell {
    /// `n` connections and a fresh file-storage stream named after the cell.
    pub async fn open(url: &str, cell: u64, n: usize, workqueue: bool) -> R<NatsCell> {
        let mut js = Vec::new();
        for _ in 0..n {
            let c = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(5))
                .connect(url)
                .await?;
            js.push(jetstream::new(c));
        }
        let stream = format!("B{cell}");
        let subject = format!("b.{cell}");
        js[0]
            .create_stream(stream::Config {
                name: stream.clone(),
                subjects: vec![subject.clone()],
                storage: stream::StorageType::File,
                retention: if workqueue {
                    stream::RetentionPolicy::WorkQueue
                } else {
                    stream::RetentionPolicy::Limits
                },
                ..Default::default()
            })
            .await?;
        Ok(NatsCell {
            js,
            stream,
            subject,
            kv: None,
        })
    }

    /// `n` connections sharing one KV bucket (file storage, history 1).
    ///
    /// The bucket's stream is created with the exact settings
    /// `create_key_value` uses (async-nats `kv_to_stream_config`): that
    /// helper first asks for account info, which async-nats 0.51 cannot
    /// parse from a 2.9 server. Puts and gets then go through the crate's
    /// real `kv::Store`.
    pub async fn open_kv(url: &str, cell: u64, n: usize) -> R<(NatsCell, Vec<jetstream::kv::Store>)> {
        let mut cell = NatsCell::open(url, cell, n, false).await?;
        let bucket = format!("kv{}", cell.stream);
        cell.js[0]
            .create_stream(stream::Config {
                name: format!("KV_{bucket}"),
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: 1,
                storage: stream::StorageType::File,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: stream::DiscardPolicy::New,
                num_replicas: 1,
                ..Default::default()
            })
            .await?;
        let mut stores = Vec::new();
        for js in &cell.js {
            stores.push(js.get_key_value(bucket.clone()).await?);
        }
        cell.kv = Some(bucket);
        Ok((cell, stores))
    }

    pub async fn close(self) {
        let _ = self.js[0].delete_stream(&self.stream).await;
        if let Some(b) = &self.kv {
            let _ = self.js[0].delete_key_value(b).await;
        }
    }
}

async fn nats_core(url: &str) -> R<async_nats::Client> {
    Ok(async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(5)).connect(url).await?)
}

/// NATS core (no JetStream): publish then flush, i.e. one round trip to the
/// server per message, the closest match to an acknowledged publish.
pub async fn nats_core_pub_latency(url: &str, subject: &str, payload: Bytes, dur: Duration, max: u64) -> R<Outcome> {
    let c = nats_core(url).await?;
    let mut h = hist();
    let start = Instant::now();
    let mut n = 0;
    while n < max && start.elapsed() < dur {
        let t = Instant::now();
        c.publish(subject.to_owned(), payload.clone()).await?;
        c.flush().await?;
        record(&mut h, t);
        n += 1;
    }
    Ok(Outcome::new(n, start.elapsed()).with_hist(h).with_bytes(n * payload.len() as u64))
}

/// NATS core publish, fire-and-forget, flushed every `window` messages.
pub async fn nats_core_pub_throughput(url: &str, subject: &str, payload: Bytes, window: usize, dur: Duration) -> R<Outcome> {
    let c = nats_core(url).await?;
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < dur {
        for _ in 0..window {
            c.publish(subject.to_owned(), payload.clone()).await?;
        }
        c.flush().await?;
        n += window as u64;
    }
    Ok(Outcome::new(n, start.elapsed()).with_bytes(n * payload.len() as u64))
}

pub async fn nats_pub_latency(js: &jetstream::Context, subject: &str, payload: Bytes, dur: Duration, max: u64) -> R<Outcome> {
    for _ in 0..10 {
        js.publish(subject.to_owned(), payload.clone()).await?.await?;
    }
    let mut h = hist();
    let start = Instant::now();
    let mut n = 0;
    while n < max && start.elapsed() < dur {
        let t = Instant::now();
        js.publish(subject.to_owned(), payload.clone()).await?.await?;
        record(&mut h, t);
        n += 1;
    }
    Ok(Outcome::new(n, start.elapsed())
        .with_hist(h)
        .with_bytes(n * payload.len() as u64))
}

/// JetStream async publish: up to `window` acks outstanding per producer.
pub async fn nats_pub_throughput(cell: &NatsCell, payload: Bytes, window: usize, dur: Duration) -> R<Outcome> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for js in &cell.js {
        let js = js.clone();
        let subject = cell.subject.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut pending = VecDeque::with_capacity(window);
            let mut n = 0u64;
            while start.elapsed() < dur {
                pending.push_back(js.publish(subject.clone(), payload.clone()).await?);
                if pending.len() >= window {
                    pending.pop_front().unwrap().await?;
                    n += 1;
                }
            }
            for f in pending {
                f.await?;
                n += 1;
            }
            Ok::<u64, async_nats::Error>(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await?.map_err(|e| e.to_string())?;
    }
    Ok(Outcome::new(total, start.elapsed()).with_bytes(total * payload.len() as u64))
}

pub async fn nats_prefill(js: &jetstream::Context, subject: &str, payload: Bytes, n: u64) -> R<()> {
    let mut pending = VecDeque::new();
    for _ in 0..n {
        pending.push_back(js.publish(subject.to_owned(), payload.clone()).await?);
        if pending.len() >= 1000 {
            pending.pop_front().unwrap().await?;
        }
    }
    for f in pending {
        f.await?;
    }
    Ok(())
}

async fn durable_pull(js: &jetstream::Context, stream: &str) -> R<jetstream::consumer::Consumer<pull::Config>> {
    let s = js.get_stream(stream).await?;
    Ok(s
        .create_consumer(pull::Config {
            durable_name: Some("bench".into()),
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await?)
}

/// Durable pull consumer, explicit ack of every message (the last one is a
/// double ack, so every earlier ack has reached the server).
pub async fn nats_consume(js: &jetstream::Context, stream: &str, n: u64, batch: usize, cap: Duration) -> R<Outcome> {
    let start = Instant::now();
    let consumer = durable_pull(js, stream).await?;
    let mut msgs = consumer
        .stream()
        .max_messages_per_batch(batch)
        .messages()
        .await?;
    let mut got = 0;
    while got < n {
        let m = match tokio::time::timeout(cap.saturating_sub(start.elapsed()), msgs.next()).await {
            Ok(Some(m)) => m?,
            Ok(None) => return Err("pull stream ended".into()),
            Err(_) => return Err(format!("consume timed out after {got}/{n}").into()),
        };
        got += 1;
        if got == n {
            m.double_ack().await?;
        } else {
            m.ack().await?;
        }
    }
    Ok(Outcome::new(got, start.elapsed()))
}

/// Work-queue stream: one async publisher, one pull worker acking each job,
/// for `dur` (at most `n` jobs). The last job is double-acked, so every
/// earlier ack has reached the server when the clock stops.
pub async fn nats_queue_throughput(cell: &NatsCell, payload: Bytes, n: u64, window: usize, dur: Duration) -> R<Outcome> {
    let consumer = durable_pull(&cell.js[0], &cell.stream).await?;
    let start = Instant::now();
    let prod = {
        let js = cell.js[0].clone();
        let subject = cell.subject.clone();
        tokio::spawn(async move {
            let mut pending = VecDeque::new();
            let mut sent = 0;
            while sent < n && start.elapsed() < dur {
                pending.push_back(js.publish(subject.clone(), payload.clone()).await?);
                sent += 1;
                if pending.len() >= window {
                    pending.pop_front().unwrap().await?;
                }
            }
            for f in pending {
                f.await?;
            }
            Ok::<(), async_nats::Error>(())
        })
    };
    let mut msgs = consumer.stream().max_messages_per_batch(256).messages().await?;
    let mut done = 0;
    let mut held: Option<jetstream::Message> = None;
    while done < n {
        let left = dur.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        let m = match tokio::time::timeout(left, msgs.next()).await {
            Ok(Some(m)) => m?,
            Ok(None) => return Err("pull stream ended".into()),
            Err(_) => break,
        };
        if let Some(prev) = held.replace(m) {
            prev.ack().await?;
            done += 1;
        }
    }
    if let Some(last) = held {
        last.double_ack().await?;
        done += 1;
    }
    let el = start.elapsed();
    prod.await?.map_err(|e| e.to_string())?;
    Ok(Outcome::new(done, el))
}

/// publish (acked) → pull one → double ack, one job at a time.
pub async fn nats_queue_rtt(cell: &NatsCell, payload: Bytes, dur: Duration, max: u64) -> R<Outcome> {
    let consumer = durable_pull(&cell.js[0], &cell.stream).await?;
    let mut msgs = consumer.stream().max_messages_per_batch(1).messages().await?;
    let js = &cell.js[0];
    let mut h = hist();
    let start = Instant::now();
    let mut n = 0;
    while n < max && start.elapsed() < dur {
        let t = Instant::now();
        js.publish(cell.subject.clone(), payload.clone()).await?.await?;
        let m = tokio::time::timeout(Duration::from_secs(5), msgs.next())
            .await?
            .ok_or("pull stream ended")??;
        m.double_ack().await?;
        record(&mut h, t);
        n += 1;
    }
    Ok(Outcome::new(n, start.elapsed()).with_hist(h))
}

pub async fn nats_kv_run(stores: &[jetstream::kv::Store], keys: u64, value: Bytes, set: bool, dur: Duration) -> R<Outcome> {
    if set {
        // nothing to preload
    } else {
        for i in 0..keys {
            stores[0].put(crate::fm::key(i), value.clone()).await?;
        }
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (ci, s) in stores.iter().enumerate() {
        let s = s.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = hist();
            let mut i = ci as u64 * 7919;
            let mut n = 0u64;
            while start.elapsed() < dur {
                let k = crate::fm::key(i % keys);
                i += 1;
                let t = Instant::now();
                if set {
                    s.put(k, value.clone()).await?;
                } else {
                    s.get(k).await?.ok_or("missing key")?;
                }
                record(&mut h, t);
                n += 1;
            }
            Ok::<_, async_nats::Error>((n, h))
        }));
    }
    let mut total = 0;
    let mut h = hist();
    for t in tasks {
        let (n, th) = t.await?.map_err(|e| e.to_string())?;
        total += n;
        h.add(th)?;
    }
    Ok(Outcome::new(total, start.elapsed()).with_hist(h))
}

// --------------------------------------------------------------- Redis ----

pub async fn redis_conns(url: &str, n: usize) -> R<Vec<redis::aio::MultiplexedConnection>> {
    let client = redis::Client::open(url)?;
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(client.get_multiplexed_async_connection().await?);
    }
    Ok(v)
}

/// SET (or GET) from `conns.len()` clients at once, one op in flight each.
pub async fn redis_kv_run(conns: Vec<redis::aio::MultiplexedConnection>, prefix: &str, keys: u64, value: Bytes, set: bool, dur: Duration) -> R<Outcome> {
    if !set {
        let mut c = conns[0].clone();
        for i in 0..keys {
            redis::cmd("SET")
                .arg(format!("{prefix}{}", crate::fm::key(i)))
                .arg(&value[..])
                .query_async::<()>(&mut c)
                .await?;
        }
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (ci, mut c) in conns.into_iter().enumerate() {
        let value = value.clone();
        let prefix = prefix.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut h = hist();
            let mut i = ci as u64 * 7919;
            let mut n = 0u64;
            while start.elapsed() < dur {
                let k = format!("{prefix}{}", crate::fm::key(i % keys));
                i += 1;
                let t = Instant::now();
                if set {
                    redis::cmd("SET")
                        .arg(k)
                        .arg(&value[..])
                        .query_async::<()>(&mut c)
                        .await?;
                } else {
                    let v: Option<Vec<u8>> = redis::cmd("GET").arg(k).query_async(&mut c).await?;
                    v.ok_or("missing key")?;
                }
                record(&mut h, t);
                n += 1;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((n, h))
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
