//! The `nats://` engine against the same workload written directly with
//! async-nats on the same cluster (the mapping's overhead), R1 against R3,
//! and 1, 2, 3 gateways (`flowmesh serve --data nats://…`) in front of one
//! cluster. Each round runs every system once, alternating the order; the
//! report (markdown on stdout) gives the median and spread of the rounds.
//! Run by bench/nats.sh, which starts the cluster and the gateways:
//!
//!   nats_bench CLUSTER_URL [GATEWAY_URL,...] [ROUNDS] [SECONDS] [SYNC_INTERVAL]

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, consumer::DeliverPolicy, stream};
use bytes::Bytes;
use flowmesh::{Client, Options, Record, StartFrom, StreamConfig, SubscribeSpec};
use futures::stream::FuturesUnordered;
use futures::StreamExt;

type R<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const SIZE: usize = 128;
/// Publishes in flight per producer in the throughput cells.
const WINDOW: usize = 64;
/// Messages a consume cell reads.
const CONSUME_N: u64 = 20_000;
const ENGINE: &str = "nats:// engine R3";
const DIRECT: &str = "async-nats direct R3";

fn payload() -> Bytes {
    Bytes::from(vec![b'x'; SIZE])
}

/// Median of latency samples, in microseconds.
fn p50_us(mut v: Vec<Duration>) -> f64 {
    v.sort_unstable();
    v.get(v.len() / 2).map_or(f64::NAN, |d| d.as_secs_f64() * 1e6)
}

fn rate(n: u64, since: Instant) -> f64 {
    n as f64 / since.elapsed().as_secs_f64()
}

async fn engine(url: &str, replicas: u32) -> R<Client> {
    let opts = Options::new().with("replicas", &replicas.to_string())?.with("request_timeout_ms", "30000")?;
    Ok(Client::connect(url, &opts).await?)
}

/// A file-storage stream like the one the engine makes for a partition.
async fn direct_stream(js: &jetstream::Context, name: &str) -> R<String> {
    let subject = format!("bench.{name}");
    let config = stream::Config {
        name: name.to_owned(),
        subjects: vec![subject.clone()],
        storage: stream::StorageType::File,
        num_replicas: 3,
        ..Default::default()
    };
    js.create_stream(config).await?;
    Ok(subject)
}

async fn fm_latency(c: &Client, stream: &str, dur: Duration) -> R<f64> {
    let mut v = Vec::new();
    let start = Instant::now();
    while start.elapsed() < dur {
        let t = Instant::now();
        c.publish(stream, Record::new(payload())).await?;
        v.push(t.elapsed());
    }
    Ok(p50_us(v))
}

async fn js_latency(js: &jetstream::Context, subject: &str, dur: Duration) -> R<f64> {
    let mut v = Vec::new();
    let start = Instant::now();
    while start.elapsed() < dur {
        let t = Instant::now();
        js.publish(subject.to_owned(), payload()).await?.await?;
        v.push(t.elapsed());
    }
    Ok(p50_us(v))
}

/// One producer per client, WINDOW publishes in flight each: msgs/s.
async fn fm_throughput(clients: &[Client], stream: &str, dur: Duration) -> R<f64> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in clients {
        let (c, stream) = (c.clone(), stream.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut inflight = FuturesUnordered::new();
            let mut n = 0u64;
            while start.elapsed() < dur {
                while inflight.len() < WINDOW {
                    inflight.push(c.publish(&stream, Record::new(payload())));
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
            Ok::<u64, flowmesh::Error>(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(rate(total, start))
}

async fn js_throughput(js: &jetstream::Context, subject: &str, dur: Duration) -> R<f64> {
    let start = Instant::now();
    let mut pending = VecDeque::with_capacity(WINDOW);
    let mut n = 0u64;
    while start.elapsed() < dur {
        pending.push_back(js.publish(subject.to_owned(), payload()).await?);
        if pending.len() >= WINDOW {
            pending.pop_front().unwrap().await?;
            n += 1;
        }
    }
    for f in pending {
        f.await?;
        n += 1;
    }
    Ok(rate(n, start))
}

/// Reads CONSUME_N prefilled messages from the earliest: msgs/s (ordered
/// consumers on both sides; the engine's subscriptions are ordered consumers).
async fn fm_consume(c: &Client, stream: &str) -> R<f64> {
    let batch: Vec<Record> = (0..1000).map(|_| Record::new(payload())).collect();
    for _ in 0..CONSUME_N / 1000 {
        c.publish_batch(stream, batch.clone()).await?;
    }
    let start = Instant::now();
    let spec = SubscribeSpec { partition: Some(0), start: StartFrom::Earliest, group: None };
    let mut sub = c.subscribe(stream, spec).await?;
    for got in 0..CONSUME_N {
        match tokio::time::timeout(Duration::from_secs(60), sub.next()).await {
            Ok(Some(m)) => m.map(|_| ())?,
            _ => return Err(format!("engine consume stalled at {got}").into()),
        }
    }
    Ok(rate(CONSUME_N, start))
}

async fn js_consume(js: &jetstream::Context, name: &str, subject: &str) -> R<f64> {
    let mut pending = VecDeque::new();
    for _ in 0..CONSUME_N {
        pending.push_back(js.publish(subject.to_owned(), payload()).await?);
        if pending.len() >= 1000 {
            pending.pop_front().unwrap().await?;
        }
    }
    for f in pending {
        f.await?;
    }
    let start = Instant::now();
    let config = pull::OrderedConfig { deliver_policy: DeliverPolicy::All, ..Default::default() };
    let mut msgs = js.get_stream(name).await?.create_consumer(config).await?.messages().await?;
    for got in 0..CONSUME_N {
        match tokio::time::timeout(Duration::from_secs(60), msgs.next()).await {
            Ok(Some(m)) => m.map(|_| ())?,
            _ => return Err(format!("direct consume stalled at {got}").into()),
        }
    }
    Ok(rate(CONSUME_N, start))
}

/// Publish one, wait until a live subscriber has it, repeat: p50 in us.
async fn fm_e2e(c: &Client, stream: &str, dur: Duration) -> R<f64> {
    let spec = SubscribeSpec { partition: Some(0), start: StartFrom::Latest, group: None };
    let mut sub = c.subscribe(stream, spec).await?;
    let mut v = Vec::new();
    let start = Instant::now();
    while start.elapsed() < dur {
        let t = Instant::now();
        c.publish(stream, Record::new(payload())).await?;
        tokio::time::timeout(Duration::from_secs(30), sub.next()).await?.ok_or("subscription ended")??;
        v.push(t.elapsed());
    }
    Ok(p50_us(v))
}

async fn js_e2e(js: &jetstream::Context, name: &str, subject: &str, dur: Duration) -> R<f64> {
    let config = pull::OrderedConfig { deliver_policy: DeliverPolicy::New, ..Default::default() };
    let mut msgs = js.get_stream(name).await?.create_consumer(config).await?.messages().await?;
    let mut v = Vec::new();
    let start = Instant::now();
    while start.elapsed() < dur {
        let t = Instant::now();
        js.publish(subject.to_owned(), payload()).await?.await?;
        tokio::time::timeout(Duration::from_secs(30), msgs.next()).await?.ok_or("consumer ended")??;
        v.push(t.elapsed());
    }
    Ok(p50_us(v))
}

struct Bench {
    cluster: String,
    gateways: Vec<String>,
    dur: Duration,
    cell: u64,
    /// (case, system) -> one figure per round.
    figures: BTreeMap<(String, String), Vec<f64>>,
}

impl Bench {
    /// A fresh stream name per cell (streams are not shared between cells).
    fn name(&mut self) -> String {
        self.cell += 1;
        format!("b{}x{}", std::process::id(), self.cell)
    }

    fn put(&mut self, case: &str, system: &str, v: f64) {
        eprintln!("  {case:<30} {system:<24} {v:>10.1}");
        self.figures.entry((case.to_owned(), system.to_owned())).or_default().push(v);
    }

    async fn fm_stream(&mut self, c: &Client) -> R<String> {
        let s = self.name();
        c.create_stream(&s, StreamConfig::default()).await?;
        Ok(s)
    }

    async fn overhead_engine(&mut self) -> R<()> {
        let fm = engine(&self.cluster, 3).await?;
        let s = self.fm_stream(&fm).await?;
        let v = fm_latency(&fm, &s, self.dur).await?;
        self.put("publish p50 (us)", ENGINE, v);
        let s = self.fm_stream(&fm).await?;
        let v = fm_throughput(std::slice::from_ref(&fm), &s, self.dur).await?;
        self.put("publish msgs/s", ENGINE, v);
        let s = self.fm_stream(&fm).await?;
        let v = fm_consume(&fm, &s).await?;
        self.put("consume msgs/s", ENGINE, v);
        let s = self.fm_stream(&fm).await?;
        let v = fm_e2e(&fm, &s, self.dur).await?;
        self.put("publish-to-delivery p50 (us)", ENGINE, v);
        Ok(())
    }

    async fn overhead_direct(&mut self) -> R<()> {
        // async-nats takes a list of servers, not one comma-separated URL.
        let servers = self.cluster.trim_start_matches("nats://").split(',');
        let servers: Vec<async_nats::ServerAddr> =
            servers.map(|h| format!("nats://{h}").parse()).collect::<Result<_, _>>()?;
        let c = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(5)).connect(servers).await?;
        let js = jetstream::new(c);
        let s = self.name();
        let subject = direct_stream(&js, &s).await?;
        let v = js_latency(&js, &subject, self.dur).await?;
        self.put("publish p50 (us)", DIRECT, v);
        let s = self.name();
        let subject = direct_stream(&js, &s).await?;
        let v = js_throughput(&js, &subject, self.dur).await?;
        self.put("publish msgs/s", DIRECT, v);
        let s = self.name();
        let subject = direct_stream(&js, &s).await?;
        let v = js_consume(&js, &s, &subject).await?;
        self.put("consume msgs/s", DIRECT, v);
        let s = self.name();
        let subject = direct_stream(&js, &s).await?;
        let v = js_e2e(&js, &s, &subject, self.dur).await?;
        self.put("publish-to-delivery p50 (us)", DIRECT, v);
        Ok(())
    }

    async fn replicas(&mut self, r: u32) -> R<()> {
        let fm = engine(&self.cluster, r).await?;
        let system = format!("nats:// engine R{r}");
        let s = self.fm_stream(&fm).await?;
        let v = fm_latency(&fm, &s, self.dur).await?;
        self.put("R1 vs R3: publish p50 (us)", &system, v);
        let s = self.fm_stream(&fm).await?;
        let v = fm_throughput(std::slice::from_ref(&fm), &s, self.dur).await?;
        self.put("R1 vs R3: publish msgs/s", &system, v);
        Ok(())
    }

    /// Three producers (R3, window 64 each) spread over the first k gateways.
    async fn gateways(&mut self, k: usize) -> R<()> {
        let mut clients = Vec::new();
        for i in 0..3 {
            clients.push(Client::connect(&self.gateways[i % k], &Options::new()).await?);
        }
        let s = self.fm_stream(&clients[0]).await?;
        let v = fm_throughput(&clients, &s, self.dur).await?;
        self.put("3 producers via gateways msgs/s", &format!("{k} gateway(s)"), v);
        Ok(())
    }

    async fn round(&mut self, round: usize) -> R<()> {
        if round.is_multiple_of(2) {
            self.overhead_engine().await?;
            self.overhead_direct().await?;
        } else {
            self.overhead_direct().await?;
            self.overhead_engine().await?;
        }
        for r in if round.is_multiple_of(2) { [1, 3] } else { [3, 1] } {
            self.replicas(r).await?;
        }
        let mut ks: Vec<usize> = (1..=self.gateways.len()).collect();
        if !ks.is_empty() {
            let by = round % ks.len();
            ks.rotate_left(by);
        }
        for k in ks {
            self.gateways(k).await?;
        }
        Ok(())
    }

    fn report(&self, rounds: usize, sync: &str) -> String {
        let mut out = format!(
            "{rounds} rounds of {:.0} s cells, {SIZE} B payloads, one 3-node cluster on loopback \
             (sync_interval: {sync}); publish cells: one producer, {WINDOW} in flight; median [min–max]\n\n\
             | case | system | median | spread |\n|---|---|---:|---|\n",
            self.dur.as_secs_f64()
        );
        let mut medians = BTreeMap::new();
        for ((case, system), v) in &self.figures {
            let mut v = v.clone();
            v.sort_by(f64::total_cmp);
            let med = v[v.len() / 2];
            medians.insert((case.as_str(), system.as_str()), med);
            out += &format!("| {case} | {system} | {med:.0} | {:.0}–{:.0} |\n", v[0], v[v.len() - 1]);
        }
        out += "\nOverhead of the mapping, engine against direct (target <= 1.3x):\n\n";
        for case in ["publish p50 (us)", "publish-to-delivery p50 (us)", "publish msgs/s", "consume msgs/s"] {
            if let (Some(fm), Some(js)) = (medians.get(&(case, ENGINE)), medians.get(&(case, DIRECT))) {
                // Latency: engine / direct; throughput: direct / engine (both "times slower").
                let x = if case.contains("p50") { fm / js } else { js / fm };
                out += &format!("- {case}: {x:.2}x\n");
            }
        }
        out
    }
}

fn main() -> R<()> {
    let args: Vec<String> = std::env::args().collect();
    let Some(cluster) = args.get(1).cloned() else {
        return Err("usage: nats_bench CLUSTER_URL [GATEWAY_URL,...] [ROUNDS] [SECONDS] [SYNC_INTERVAL]".into());
    };
    let gateways =
        args.get(2).map_or(Vec::new(), |g| g.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect());
    let rounds: usize = args.get(3).map_or(Ok(3), |r| r.parse())?;
    let secs: f64 = args.get(4).map_or(Ok(3.0), |s| s.parse())?;
    let sync = args.get(5).cloned().unwrap_or_else(|| "server default".into());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut b = Bench { cluster, gateways, dur: Duration::from_secs_f64(secs), cell: 0, figures: BTreeMap::new() };
    rt.block_on(async {
        for round in 0..rounds {
            eprintln!("round {}", round + 1);
            b.round(round).await?;
        }
        Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    })?;
    print!("{}", b.report(rounds, &sync));
    Ok(())
}
