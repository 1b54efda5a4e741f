//! fmbench: runs the same workloads against flowmesh (embedded, C ABI, gRPC
//! broker) and against NATS JetStream and Redis, alternating the systems
//! round by round, and writes one JSON line per measured cell. `bench/run.sh`
//! starts the peers and turns the lines into bench/BENCHMARKS.md and plots.

mod ffi;
mod fm;
mod peers;
mod stats;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};

use crate::fm::{FmCell, FmTarget};
use crate::stats::{Outcome, Sink};

pub type R<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Clone, Copy, Debug)]
pub enum PubMode {
    /// publish_batch of N records per call.
    Batch(usize),
    /// N single publishes in flight.
    Window(usize),
}

#[derive(Parser, Debug)]
#[command(about = "flowmesh vs NATS JetStream vs Redis benchmark harness")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the workloads and append JSON lines to --out.
    Run(RunArgs),
    /// A fixed-count loop of one embedded operation, for callgrind/perf.
    Profile {
        /// publish | publish-batch | kv-set | kv-get
        #[arg(long)]
        what: String,
        #[arg(long, default_value_t = 20000)]
        count: u64,
        /// Data directory (file://) or "mem".
        #[arg(long)]
        data: String,
        #[arg(long, default_value = "batch")]
        fsync: String,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// JSON-lines output file (appended).
    #[arg(long)]
    out: PathBuf,
    /// Scratch directory for flowmesh file:// data (one subdirectory per cell).
    #[arg(long)]
    data: PathBuf,
    /// NATS server URL (JetStream enabled), e.g. nats://127.0.0.1:4222.
    #[arg(long)]
    nats: Option<String>,
    /// Redis URL, e.g. redis://127.0.0.1:6379/.
    #[arg(long)]
    redis: Option<String>,
    /// flowmesh broker URL (grpc://127.0.0.1:PORT), broker with fsync=batch.
    #[arg(long)]
    grpc: Option<String>,
    /// flowmesh broker URL, broker with fsync=interval.
    #[arg(long)]
    grpc_interval: Option<String>,
    /// Short cells (development); full mode otherwise.
    #[arg(long)]
    quick: bool,
    /// Rounds per case (each round runs every system once, rotating order).
    #[arg(long)]
    rounds: Option<usize>,
    /// Comma-separated workloads: w1,w2,w3,w4,w5,w6,w7 (default all).
    #[arg(long, default_value = "w1,w2,w3,w4,w5,w6,w7")]
    only: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sys {
    FmBatch,
    FmInterval,
    FmGrpc,
    FmGrpcInterval,
    Nats,
    Redis,
}

impl Sys {
    fn label(self) -> &'static str {
        match self {
            Sys::FmBatch => "flowmesh embedded fsync=batch",
            Sys::FmInterval => "flowmesh embedded fsync=interval",
            Sys::FmGrpc => "flowmesh gRPC broker fsync=batch",
            Sys::FmGrpcInterval => "flowmesh gRPC broker fsync=interval",
            Sys::Nats => "NATS JetStream",
            Sys::Redis => "Redis",
        }
    }
}

struct Params {
    rounds: usize,
    dur: Duration,
    size_dur: Duration,
    lat_max: u64,
    consume_n: u64,
    queue_n: u64,
    rtt_max: u64,
    kv_keys: u64,
    capi_dur: Duration,
    overhead_calls: u64,
}

struct Ctx {
    args: RunArgs,
    p: Params,
    sink: Sink,
    cell: AtomicU64,
    errors: AtomicU64,
}

impl Ctx {
    fn next_cell(&self) -> u64 {
        self.cell.fetch_add(1, Ordering::Relaxed)
    }

    fn fm_target(&self, s: Sys) -> FmTarget {
        match s {
            Sys::FmBatch => FmTarget::File {
                root: self.args.data.clone(),
                fsync: "batch",
            },
            Sys::FmInterval => FmTarget::File {
                root: self.args.data.clone(),
                fsync: "interval",
            },
            Sys::FmGrpc => FmTarget::Grpc {
                url: self.args.grpc.clone().expect("grpc url"),
            },
            Sys::FmGrpcInterval => FmTarget::Grpc {
                url: self.args.grpc_interval.clone().expect("grpc url"),
            },
            _ => unreachable!(),
        }
    }

    /// Which systems are available among `want`.
    fn systems(&self, want: &[Sys]) -> Vec<Sys> {
        want.iter()
            .copied()
            .filter(|s| match s {
                Sys::FmGrpc => self.args.grpc.is_some(),
                Sys::FmGrpcInterval => self.args.grpc_interval.is_some(),
                Sys::Nats => self.args.nats.is_some(),
                Sys::Redis => self.args.redis.is_some(),
                _ => true,
            })
            .collect()
    }
}

fn payload(size: usize) -> Bytes {
    Bytes::from((0..size).map(|i| b'a' + (i % 26) as u8).collect::<Vec<u8>>())
}

fn size_label(size: usize) -> String {
    match size {
        s if s >= 1024 && s % 1024 == 0 => format!("{} KiB", s / 1024),
        s => format!("{s} B"),
    }
}

/// A case is measured for each system in `systems`, `rounds` times, the
/// order of the systems rotating every round.
fn run_case<F>(ctx: &Ctx, workload: &str, case: &str, systems: &[(String, F)])
where
    F: Fn(u64) -> R<Outcome>,
{
    eprintln!("\n== {workload} | {case}");
    for round in 0..ctx.p.rounds {
        let n = systems.len();
        for i in 0..n {
            let (label, f) = &systems[(i + round) % n];
            let cell = ctx.next_cell();
            match f(cell) {
                Ok(o) => ctx.sink.emit(workload, case, label, round, &o),
                Err(e) => {
                    ctx.errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!("  r{round} {label:<34} ERROR: {e}");
                    ctx.sink.note(
                        "error",
                        serde_json::json!({"workload": workload, "case": case, "system": label, "error": e.to_string()}),
                    );
                }
            }
        }
    }
}

type Cell<'a> = (String, Box<dyn Fn(u64) -> R<Outcome> + 'a>);

fn w1_latency(ctx: &Ctx, rt: &tokio::runtime::Runtime, size: usize, dur: Duration) {
    let pl = payload(size);
    let mut cells: Vec<Cell> = Vec::new();
    for s in ctx.systems(&[Sys::FmBatch, Sys::FmInterval, Sys::FmGrpc, Sys::FmGrpcInterval, Sys::Nats, Sys::Redis]) {
        let pl = pl.clone();
        let label = match s {
            Sys::Redis => "Redis SET (reference RTT)".to_string(),
            Sys::Nats => "NATS JetStream publish".to_string(),
            s => s.label().to_string(),
        };
        cells.push((
            label,
            Box::new(move |cell| {
                rt.block_on(async {
                    match s {
                        Sys::Nats => {
                            let c = peers::NatsCell::open(ctx.args.nats.as_deref().unwrap(), cell, 1, false).await?;
                            let r = peers::nats_pub_latency(&c.js[0], &c.subject, pl.clone(), dur, ctx.p.lat_max).await;
                            c.close().await;
                            r
                        }
                        Sys::Redis => {
                            let conns = peers::redis_conns(ctx.args.redis.as_deref().unwrap(), 1).await?;
                            let mut o = peers::redis_kv_run(conns, &format!("lat{cell}:"), 1, pl.clone(), true, dur).await?;
                            o.bytes = o.ops * pl.len() as u64;
                            Ok(o)
                        }
                        s => {
                            let c = FmCell::open(&ctx.fm_target(s), cell, 1).await?;
                            let r = fm::pub_latency(&c.clients[0], &format!("lat-{cell}"), pl.clone(), dur, ctx.p.lat_max).await;
                            c.close();
                            r
                        }
                    }
                })
            }),
        ));
    }
    run_case(ctx, "publish_latency", &format!("{}, 1 in flight", size_label(size)), &cells);
}

/// Memory-tier streams (no disk) vs NATS core publish (no JetStream):
/// single in-flight latency, then 256 in flight.
fn w7_memory_tier(ctx: &Ctx, rt: &tokio::runtime::Runtime, size: usize, dur: Duration) {
    let pl = payload(size);
    for window in [1usize, 256] {
        let mut cells: Vec<Cell> = Vec::new();
        // (system, memory tier?): the durable broker stream is the reference
        // the memory tier is meant to beat.
        let mut systems: Vec<(Sys, bool)> =
            ctx.systems(&[Sys::FmBatch, Sys::FmGrpc, Sys::Nats]).into_iter().map(|s| (s, true)).collect();
        if ctx.args.grpc.is_some() {
            systems.push((Sys::FmGrpc, false));
        }
        for (s, memory) in systems {
            let pl = pl.clone();
            let label = match (s, memory) {
                (Sys::FmBatch, _) => "flowmesh embedded, memory tier".to_string(),
                (Sys::FmGrpc, true) => "flowmesh gRPC broker, memory tier".to_string(),
                (Sys::FmGrpc, false) => "flowmesh gRPC broker, durable fsync=batch".to_string(),
                _ => "NATS core publish (no JetStream)".to_string(),
            };
            cells.push((
                label,
                Box::new(move |cell| {
                    rt.block_on(async {
                        let subject = format!("mem.{cell}");
                        if s == Sys::Nats {
                            let url = ctx.args.nats.as_deref().unwrap();
                            return if window == 1 {
                                peers::nats_core_pub_latency(url, &subject, pl.clone(), dur, ctx.p.lat_max).await
                            } else {
                                peers::nats_core_pub_throughput(url, &subject, pl.clone(), window, dur).await
                            };
                        }
                        let c = FmCell::open(&ctx.fm_target(s), cell, 1).await?;
                        let stream = format!("memtier-{cell}");
                        if memory {
                            fm::create_memory_stream(&c.clients[0], &stream).await?;
                        }
                        let r = if window == 1 {
                            fm::pub_latency(&c.clients[0], &stream, pl.clone(), dur, ctx.p.lat_max).await
                        } else {
                            fm::pub_throughput(&c, &stream, pl.clone(), PubMode::Window(window), dur).await
                        };
                        c.close();
                        r
                    })
                }),
            ));
        }
        let (workload, case) = if window == 1 {
            ("memory_latency", format!("{}, 1 in flight", size_label(size)))
        } else {
            ("memory_throughput", format!("{}, {window} in flight, 1 producer", size_label(size)))
        };
        run_case(ctx, workload, &case, &cells);
    }
}

fn w1_throughput(ctx: &Ctx, rt: &tokio::runtime::Runtime, size: usize, producers: usize, dur: Duration) {
    let pl = payload(size);
    // Batches and windows of about 256 messages, at most 4 MiB per batch.
    let n = (4 << 20) / size.max(1);
    let b = n.clamp(1, 256);
    let mut cells: Vec<Cell> = Vec::new();
    for s in ctx.systems(&[Sys::FmBatch, Sys::FmInterval, Sys::FmGrpc, Sys::FmGrpcInterval, Sys::Nats]) {
        let modes: Vec<PubMode> = match s {
            Sys::Nats => vec![PubMode::Window(b)],
            _ => vec![PubMode::Batch(b), PubMode::Window(b)],
        };
        for mode in modes {
            let pl = pl.clone();
            let label = match (s, mode) {
                (Sys::Nats, PubMode::Window(w)) => format!("NATS JetStream async publish, {w} in flight"),
                (s, PubMode::Batch(b)) => format!("{}, batch {b}", s.label()),
                (s, PubMode::Window(w)) => format!("{}, {w} in flight", s.label()),
            };
            cells.push((
                label,
                Box::new(move |cell| {
                    rt.block_on(async {
                        match s {
                            Sys::Nats => {
                                let c = peers::NatsCell::open(ctx.args.nats.as_deref().unwrap(), cell, producers, false).await?;
                                let PubMode::Window(w) = mode else { unreachable!() };
                                let r = peers::nats_pub_throughput(&c, pl.clone(), w, dur).await;
                                c.close().await;
                                r
                            }
                            s => {
                                let c = FmCell::open(&ctx.fm_target(s), cell, producers).await?;
                                let r = fm::pub_throughput(&c, &format!("tput-{cell}"), pl.clone(), mode, dur).await;
                                c.close();
                                r
                            }
                        }
                    })
                }),
            ));
        }
    }
    let case = format!(
        "{}, {producers} producer{}",
        size_label(size),
        if producers > 1 { "s" } else { "" }
    );
    run_case(ctx, "publish_throughput", &case, &cells);
}

fn w2_consume(ctx: &Ctx, rt: &tokio::runtime::Runtime) {
    let pl = payload(128);
    let n = ctx.p.consume_n;
    let cap = Duration::from_secs(60);
    let mut cells: Vec<Cell> = Vec::new();
    for s in ctx.systems(&[Sys::FmBatch, Sys::FmInterval, Sys::FmGrpc, Sys::FmGrpcInterval, Sys::Nats]) {
        let pl = pl.clone();
        let label = match s {
            Sys::Nats => "NATS JetStream durable pull, ack each".to_string(),
            s => format!("{}, group commit every 256", s.label()),
        };
        cells.push((
            label,
            Box::new(move |cell| {
                rt.block_on(async {
                    match s {
                        Sys::Nats => {
                            let c = peers::NatsCell::open(ctx.args.nats.as_deref().unwrap(), cell, 1, false).await?;
                            peers::nats_prefill(&c.js[0], &c.subject, pl.clone(), n).await?;
                            let r = peers::nats_consume(&c.js[0], &c.stream, n, 256, cap).await;
                            c.close().await;
                            r
                        }
                        s => {
                            let c = FmCell::open(&ctx.fm_target(s), cell, 1).await?;
                            let stream = format!("consume-{cell}");
                            fm::prefill(&c.clients[0], &stream, pl.clone(), n).await?;
                            let r = fm::consume(&c.clients[0], &stream, n, 256, cap).await;
                            c.close();
                            r
                        }
                    }
                })
            }),
        ));
    }
    run_case(ctx, "consume", &format!("128 B, {n} messages, durable group"), &cells);
}

fn w3_queue(ctx: &Ctx, rt: &tokio::runtime::Runtime) {
    let pl = payload(128);
    let n = ctx.p.queue_n;
    let dur = ctx.p.dur;
    let systems = ctx.systems(&[Sys::FmBatch, Sys::FmInterval, Sys::FmGrpc, Sys::FmGrpcInterval, Sys::Nats]);
    let mut cells: Vec<Cell> = Vec::new();
    for &s in &systems {
        let pl = pl.clone();
        let label = match s {
            Sys::Nats => "NATS JetStream work-queue, explicit ack".to_string(),
            s => s.label().to_string(),
        };
        cells.push((
            label,
            Box::new(move |cell| {
                rt.block_on(async {
                    match s {
                        Sys::Nats => {
                            let c = peers::NatsCell::open(ctx.args.nats.as_deref().unwrap(), cell, 1, true).await?;
                            let r = peers::nats_queue_throughput(&c, pl.clone(), n, 256, dur).await;
                            c.close().await;
                            r
                        }
                        s => {
                            let c = FmCell::open(&ctx.fm_target(s), cell, 2).await?;
                            let r = fm::queue_throughput(&c, &format!("q-{cell}"), pl.clone(), n, 256, dur).await;
                            c.close();
                            r
                        }
                    }
                })
            }),
        ));
    }
    run_case(ctx, "queue_throughput", "128 B, 1 producer + 1 worker", &cells);

    let mut cells: Vec<Cell> = Vec::new();
    for &s in &systems {
        let pl = pl.clone();
        let label = match s {
            Sys::Nats => "NATS JetStream work-queue, publish+pull+double ack".to_string(),
            s => s.label().to_string(),
        };
        cells.push((
            label,
            Box::new(move |cell| {
                rt.block_on(async {
                    match s {
                        Sys::Nats => {
                            let c = peers::NatsCell::open(ctx.args.nats.as_deref().unwrap(), cell, 1, true).await?;
                            let r = peers::nats_queue_rtt(&c, pl.clone(), dur, ctx.p.rtt_max).await;
                            c.close().await;
                            r
                        }
                        s => {
                            let c = FmCell::open(&ctx.fm_target(s), cell, 1).await?;
                            let r = fm::queue_rtt(&c.clients[0], &format!("rtt-{cell}"), pl.clone(), dur, ctx.p.rtt_max).await;
                            c.close();
                            r
                        }
                    }
                })
            }),
        ));
    }
    run_case(ctx, "queue_rtt", "128 B, one job at a time", &cells);
}

fn w4_kv(ctx: &Ctx, rt: &tokio::runtime::Runtime, set: bool, clients: usize) {
    let pl = payload(128);
    let keys = ctx.p.kv_keys;
    let dur = ctx.p.dur;
    let mut cells: Vec<Cell> = Vec::new();
    for s in ctx.systems(&[Sys::FmBatch, Sys::FmInterval, Sys::FmGrpc, Sys::FmGrpcInterval, Sys::Nats, Sys::Redis]) {
        let pl = pl.clone();
        let label = match s {
            Sys::Nats => "NATS JetStream KV".to_string(),
            Sys::Redis => "Redis (appendfsync everysec)".to_string(),
            s => s.label().to_string(),
        };
        cells.push((
            label,
            Box::new(move |cell| {
                rt.block_on(async {
                    match s {
                        Sys::Nats => {
                            let (c, stores) = peers::NatsCell::open_kv(ctx.args.nats.as_deref().unwrap(), cell, clients).await?;
                            let r = peers::nats_kv_run(&stores, keys, pl.clone(), set, dur).await;
                            drop(stores);
                            c.close().await;
                            r
                        }
                        Sys::Redis => {
                            let conns = peers::redis_conns(ctx.args.redis.as_deref().unwrap(), clients).await?;
                            peers::redis_kv_run(conns, &format!("c{cell}:"), keys, pl.clone(), set, dur).await
                        }
                        s => {
                            let c = FmCell::open(&ctx.fm_target(s), cell, clients).await?;
                            let bucket = format!("kv-{cell}");
                            if !set {
                                fm::kv_preload(&c.clients[0], &bucket, keys, pl.clone()).await?;
                            }
                            let r = fm::kv_run(&c, &bucket, keys, pl.clone(), set, dur).await;
                            c.close();
                            r
                        }
                    }
                })
            }),
        ));
    }
    let case = format!("128 B, {clients} client{}, {keys} keys", if clients > 1 { "s" } else { "" });
    run_case(ctx, if set { "kv_set" } else { "kv_get" }, &case, &cells);
}

fn w5_capi(ctx: &Ctx) {
    let data = ctx.args.data.clone();
    let dur = ctx.p.capi_dur;
    let max = 6_000_000u64;
    let mem: Vec<Cell> = vec![(
        "flowmesh C ABI fm_publish_batch".into(),
        Box::new(move |cell| ffi::append_batch(&format!("mem://capi-{cell}"), &[], 128, 1000, dur, max)),
    )];
    run_case(ctx, "capi_append", "mem://, 128 B, 1000 per call", &mem);
    for fsync in ["batch", "interval"] {
        let data = data.clone();
        let cells: Vec<Cell> = vec![(
            "flowmesh C ABI fm_publish_batch".into(),
            Box::new(move |cell| {
                let dir = data.join(format!("capi-{cell}"));
                let mut opts = vec![("fsync", fsync)];
                if fsync == "interval" {
                    opts.push(("fsync_interval_ms", "1000"));
                }
                let r = ffi::append_batch(&format!("file://{}", dir.display()), &opts, 128, 1000, dur, max);
                let _ = std::fs::remove_dir_all(&dir);
                r
            }),
        )];
        run_case(ctx, "capi_append", &format!("file:// fsync={fsync}, 128 B, 1000 per call"), &cells);
    }
    let cells: Vec<Cell> = vec![
        (
            "C ABI: 256× enqueue, receive(256), 256× ack".into(),
            Box::new(move |cell| ffi::queue_cycle(&format!("mem://capiq-{cell}"), 128, 256, dur)),
        ),
        (
            "C ABI: enqueue, reserve, ack (one job at a time)".into(),
            Box::new(move |cell| ffi::queue_cycle(&format!("mem://capiq-{cell}"), 128, 1, dur)),
        ),
    ];
    run_case(ctx, "capi_queue", "mem://, 128 B, enqueue→reserve→ack", &cells);
    let calls = ctx.p.overhead_calls;
    for publish in [false, true] {
        let case = if publish { "fm_publish, mem://, 128 B" } else { "fm_kv_exists, mem://" };
        eprintln!("\n== ffi_overhead | {case} (paths interleaved in 20 slices per round)");
        for round in 0..ctx.p.rounds {
            match ffi::overhead(publish, calls, 20, ctx.next_cell()) {
                Ok(rows) => {
                    for (p, o) in rows {
                        ctx.sink.emit("ffi_overhead", case, p.label(), round, &o);
                    }
                }
                Err(e) => {
                    ctx.errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!("  r{round} ERROR: {e}");
                    ctx.sink.note("error", serde_json::json!({"workload": "ffi_overhead", "case": case, "system": "all", "error": e.to_string()}));
                }
            }
        }
    }
}

fn run(args: RunArgs) -> R<()> {
    let q = args.quick;
    let p = Params {
        rounds: args.rounds.unwrap_or(if q { 3 } else { 5 }),
        dur: Duration::from_millis(if q { 150 } else { 1500 }),
        size_dur: Duration::from_millis(if q { 100 } else { 1000 }),
        lat_max: if q { 5_000 } else { 20_000 },
        consume_n: if q { 10_000 } else { 200_000 },
        queue_n: if q { 200_000 } else { 2_000_000 },
        rtt_max: if q { 2_000 } else { 20_000 },
        kv_keys: 1000,
        capi_dur: Duration::from_millis(if q { 200 } else { 1500 }),
        overhead_calls: if q { 100_000 } else { 1_000_000 },
    };
    std::fs::create_dir_all(&args.data)?;
    let sink = Sink::open(&args.out)?;
    let only: Vec<String> = args.only.split(',').map(|s| s.trim().to_owned()).collect();
    let ctx = Ctx {
        args,
        p,
        sink,
        cell: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    };
    ctx.sink.note(
        "params",
        serde_json::json!({"quick": q, "rounds": ctx.p.rounds, "dur_ms": ctx.p.dur.as_millis() as u64,
            "size_dur_ms": ctx.p.size_dur.as_millis() as u64, "consume_n": ctx.p.consume_n,
            "queue_n": ctx.p.queue_n, "kv_keys": ctx.p.kv_keys, "overhead_calls": ctx.p.overhead_calls,
            "grpc": ctx.args.grpc.is_some(), "grpc_interval": ctx.args.grpc_interval.is_some()}),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let t0 = Instant::now();
    let has = |w: &str| only.iter().any(|o| o == w);
    if has("w5") {
        w5_capi(&ctx);
    }
    if has("w1") {
        w1_latency(&ctx, &rt, 128, ctx.p.dur);
        for producers in [1, 4] {
            w1_throughput(&ctx, &rt, 128, producers, ctx.p.dur);
        }
    }
    if has("w2") {
        w2_consume(&ctx, &rt);
    }
    if has("w3") {
        w3_queue(&ctx, &rt);
    }
    if has("w4") {
        for clients in [1, 16] {
            w4_kv(&ctx, &rt, true, clients);
            w4_kv(&ctx, &rt, false, clients);
        }
    }
    if has("w7") {
        w7_memory_tier(&ctx, &rt, 128, ctx.p.dur);
    }
    if has("w6") {
        for size in [16, 1024, 65536] {
            w1_latency(&ctx, &rt, size, ctx.p.size_dur);
            w1_throughput(&ctx, &rt, size, 1, ctx.p.size_dur);
        }
    }
    let errors = ctx.errors.load(Ordering::Relaxed);
    eprintln!(
        "\nfmbench: done in {:.1}s, {} cells, {errors} errors",
        t0.elapsed().as_secs_f64(),
        ctx.cell.load(Ordering::Relaxed)
    );
    drop(rt);
    Ok(())
}

fn profile(what: &str, count: u64, data: &str, fsync: &str) -> R<()> {
    if what == "ffi-kv-exists" || what == "ffi-publish" {
        // Only the C ABI path, nothing else in the loop.
        let publish = what == "ffi-publish";
        let start = Instant::now();
        let rows = ffi::overhead_profile(publish, count)?;
        eprintln!("{what}: {count} calls in {:?} ({rows:.0} ns/call)", start.elapsed());
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let url = if data == "mem" {
            "mem://".to_string()
        } else {
            format!("file://{data}")
        };
        let c = flowmesh::Client::connect(&url, &flowmesh::Options::new().with("fsync", fsync)?).await?;
        let pl = payload(128);
        let start = Instant::now();
        match what {
            "publish" => {
                for _ in 0..count {
                    c.publish("prof", flowmesh::Record::new(pl.clone())).await?;
                }
            }
            "publish-batch" => {
                for _ in 0..count / 256 {
                    let recs = (0..256).map(|_| flowmesh::Record::new(pl.clone())).collect();
                    c.publish_batch("prof", recs).await?;
                }
            }
            "kv-set" => {
                for i in 0..count {
                    c.kv_set("prof", &fm::key(i % 1000), pl.clone(), 0).await?;
                }
            }
            "kv-get" => {
                for i in 0..1000 {
                    c.kv_set("prof", &fm::key(i), pl.clone(), 0).await?;
                }
                for i in 0..count {
                    c.kv_get("prof", &fm::key(i % 1000)).await?;
                }
            }
            other => return Err(format!("unknown --what {other}").into()),
        }
        eprintln!("{what}: {count} ops in {:?}", start.elapsed());
        Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    })
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Run(a) => run(a),
        Cmd::Profile {
            what,
            count,
            data,
            fsync,
        } => profile(&what, count, &data, &fsync),
    };
    if let Err(e) = r {
        eprintln!("fmbench: {e}");
        std::process::exit(1);
    }
}
