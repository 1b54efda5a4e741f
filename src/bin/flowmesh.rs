//! The `flowmesh` command: run a broker (`serve`) and talk to any engine
//! (`pub`, `sub`, `queue`, `kv`, `health`), like `nats` or `kcat` do.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use flowmesh::engine::{Endpoint, EngineConfig};
use flowmesh::metrics::report;
use flowmesh::server::{serve, ServerConfig};
use flowmesh::{Client, Error, KvOp, Options, Record, Result};
use futures::StreamExt;

#[path = "flowmesh/resources.rs"]
mod resources;
#[path = "flowmesh/security.rs"]
mod security;
#[path = "flowmesh/tls.rs"]
mod tls;

#[derive(Parser)]
#[command(name = "flowmesh", version, about = "flowmesh broker and command-line client")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Conn {
    /// Engine URL: grpc://host:port, grpcs://host:port (TLS), mem://, file:///dir
    #[arg(long, env = "FLOWMESH_URL", default_value = "grpc://127.0.0.1:50051")]
    url: String,
    /// Connect options as key=value (e.g. tenant=acme), repeatable
    #[arg(long = "option", short = 'o', value_name = "KEY=VALUE")]
    options: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker: serve an engine over gRPC
    Serve {
        /// Address to listen on
        #[arg(long, default_value = "127.0.0.1:50051")]
        listen: SocketAddr,
        /// Storage behind the broker: file:///dir (durable), mem://, or
        /// nats://h1:4222,h2:4222 (a stateless gateway to JetStream)
        #[arg(long, default_value = "file:///var/lib/flowmesh")]
        data: String,
        /// Connect options of the --data engine as key=value (e.g.
        /// replicas=3, user=app, password=..., creds_file=...), repeatable
        #[arg(long = "data-option", value_name = "KEY=VALUE")]
        data_options: Vec<String>,
        /// fsync policy of durable storage: batch, interval or none
        #[arg(long, default_value = "batch")]
        fsync: String,
        /// Largest payload accepted, in bytes
        #[arg(long, default_value_t = 8 << 20)]
        max_payload_bytes: u64,
        /// Size at which a stream partition rolls to a new segment file
        #[arg(long, default_value_t = 64 << 20)]
        segment_bytes: u64,
        /// Log as JSON lines (level via RUST_LOG, default info)
        #[arg(long)]
        log_json: bool,
        #[command(flatten)]
        security: Security,
        /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 127.0.0.1:9464)
        #[arg(long, value_name = "ADDR")]
        metrics: Option<SocketAddr>,
        /// Also serve WebSocket clients on ADDR: ws://ADDR (wss:// with
        /// --tls-cert), endpoints /ws (JSON) and /grpc (docs/WEBSOCKET.md)
        #[arg(long, value_name = "ADDR")]
        ws: Option<SocketAddr>,
    },
    /// Print a broker's metrics (from `serve --metrics`) as tables
    Stats {
        #[arg(long, env = "FLOWMESH_METRICS_URL", default_value = "http://127.0.0.1:9464/metrics")]
        metrics_url: String,
    },
    /// Like stats, refreshed live until Ctrl-C
    Top {
        #[arg(long, env = "FLOWMESH_METRICS_URL", default_value = "http://127.0.0.1:9464/metrics")]
        metrics_url: String,
        /// Seconds between refreshes
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Stop after N refreshes (0 = until Ctrl-C)
        #[arg(long, default_value_t = 0)]
        iterations: u64,
    },
    /// Make access tokens for the broker's access file
    #[command(subcommand)]
    Token(TokenCmd),
    /// Verify the files of a data directory (stop its broker first): lists
    /// damaged records and torn tails; exits 1 when damage remains
    Check {
        /// The data directory (the DIR of file://DIR)
        dir: std::path::PathBuf,
        /// Move damaged bytes and torn tails to quarantine files beside the
        /// file they came from (<file>.damaged-<start>-<end>); nothing is deleted
        #[arg(long)]
        repair: bool,
    },
    /// Make TLS certificates for development
    #[command(subcommand)]
    Tls(TlsCmd),
    /// Check that the engine answers
    Health(Conn),
    /// Publish messages (arguments, or one per line from stdin)
    Pub {
        #[command(flatten)]
        conn: Conn,
        stream: String,
        messages: Vec<String>,
        /// Partition key
        #[arg(long)]
        key: Option<String>,
        /// Header key=value, repeatable
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// Publish the message N times, numbered ("msg-0", "msg-1", ...)
        #[arg(long)]
        count: Option<u64>,
    },
    /// Subscribe and print messages
    Sub {
        #[command(flatten)]
        conn: Conn,
        stream: String,
        /// earliest, latest, committed or an offset
        #[arg(long, default_value = "latest")]
        start: String,
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        partition: Option<u32>,
        /// Exit after N messages
        #[arg(long)]
        count: Option<u64>,
    },
    /// Streams: list, inspect, delete, purge, change retention
    #[command(subcommand)]
    Stream(resources::StreamCmd),
    /// Work queues
    #[command(subcommand)]
    Queue(QueueCmd),
    /// Key-value buckets
    #[command(subcommand)]
    Kv(KvCmd),
}

/// Transport security and access control of `serve` (docs/SECURITY.md).
#[derive(Args)]
struct Security {
    /// PEM certificate chain: serve TLS (grpcs://) instead of plaintext
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// JSON access file: hashed tokens, tenants, grants, limits (reloaded on SIGHUP)
    #[arg(long)]
    access_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    identity: security::IdentityArgs,
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Print a new random token and its access-file entry (only the hash is stored)
    New {
        /// Id of the token in the access file and the audit trail
        #[arg(long)]
        id: String,
        #[arg(long)]
        tenant: String,
    },
    /// Print the SHA-256 hash of a token, as the access file stores it
    Hash { token: String },
}

#[derive(Subcommand)]
enum TlsCmd {
    /// Write a private CA and a server certificate signed by it (ca.pem,
    /// ca-key.pem, server.pem, server-key.pem): serve with --tls-cert
    /// server.pem --tls-key server-key.pem, connect with tls_ca_file=ca.pem
    DevCerts {
        /// Host name or IP address the server certificate is valid for, repeatable
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// Directory to write the files into (created if missing)
        #[arg(long)]
        out: std::path::PathBuf,
        /// Validity in days
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Replace certificates already in --out
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum QueueCmd {
    /// Add a job
    Enqueue {
        #[command(flatten)]
        conn: Conn,
        queue: String,
        payload: String,
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        #[arg(long, default_value_t = 0)]
        priority: i32,
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// Enqueue N jobs, numbered ("payload-0", ...), printing each id
        #[arg(long)]
        count: Option<u64>,
    },
    /// Reserve one job and print it
    Reserve {
        #[command(flatten)]
        conn: Conn,
        queue: String,
        #[arg(long, default_value_t = 30_000)]
        visibility_ms: u64,
        #[arg(long, default_value_t = 5_000)]
        wait_ms: u64,
        /// Acknowledge the job right away
        #[arg(long)]
        ack: bool,
    },
    /// Acknowledge a job
    Ack {
        #[command(flatten)]
        conn: Conn,
        queue: String,
        job_id: u64,
    },
    /// Give a job back for redelivery
    Nack {
        #[command(flatten)]
        conn: Conn,
        queue: String,
        job_id: u64,
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
    },
    /// Print queue counters
    Stats {
        #[command(flatten)]
        conn: Conn,
        queue: String,
    },
    /// List dead-lettered jobs, or replay them
    Dlq {
        #[command(flatten)]
        conn: Conn,
        queue: String,
        /// Replay this job back to the queue
        #[arg(long)]
        replay: Option<u64>,
        /// Replay every dead job
        #[arg(long)]
        replay_all: bool,
    },
    #[command(flatten)]
    Lifecycle(resources::QueueLifecycle),
}

#[derive(Subcommand)]
enum KvCmd {
    Set {
        #[command(flatten)]
        conn: Conn,
        bucket: String,
        key: String,
        value: String,
        #[arg(long, default_value_t = 0)]
        ttl_ms: u64,
        /// Set N keys ("key-0" = "value-0", ...), printing each revision
        #[arg(long)]
        count: Option<u64>,
    },
    Get {
        #[command(flatten)]
        conn: Conn,
        bucket: String,
        key: String,
    },
    Del {
        #[command(flatten)]
        conn: Conn,
        bucket: String,
        key: String,
    },
    /// List keys by prefix
    Ls {
        #[command(flatten)]
        conn: Conn,
        bucket: String,
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Print changes as they happen
    Watch {
        #[command(flatten)]
        conn: Conn,
        bucket: String,
        #[arg(default_value = "")]
        prefix: String,
        #[arg(long)]
        count: Option<u64>,
    },
    #[command(flatten)]
    Lifecycle(resources::KvLifecycle),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Check { dir, repair } = &cli.command {
        return check(dir, *repair);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flowmesh: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowmesh: {e}");
            ExitCode::from(e.code().clamp(1, 255) as u8)
        }
    }
}

/// `flowmesh check`: 0 = clean or repaired, 1 = damage remains, else the error's code.
fn check(dir: &std::path::Path, repair: bool) -> ExitCode {
    match flowmesh::engine::embedded::check(dir, repair) {
        Ok(report) => {
            println!("{report}");
            if report.clean() || repair {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("flowmesh: {e}");
            ExitCode::from(e.code().clamp(2, 255) as u8)
        }
    }
}

fn pair(s: &str, what: &str) -> Result<(String, String)> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| Error::InvalidArgument(format!("{what} {s:?}: expected key=value")))
}

async fn connect(conn: &Conn) -> Result<Client> {
    let mut opts = Options::new();
    for o in &conn.options {
        let (k, v) = pair(o, "option")?;
        opts.set(&k, &v)?;
    }
    Client::connect(&conn.url, &opts).await
}

fn record(payload: impl Into<Bytes>, key: &Option<String>, headers: &[String]) -> Result<Record> {
    let mut r = Record::new(payload);
    if let Some(k) = key {
        r = r.with_key(k.clone());
    }
    for h in headers {
        let (k, v) = pair(h, "header")?;
        r = r.with_header(k, v);
    }
    Ok(r)
}

fn print_line(line: String) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|_| out.flush()).map_err(|e| Error::Internal(format!("stdout: {e}")))
}

async fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Serve {
            listen,
            data,
            data_options,
            fsync,
            max_payload_bytes,
            segment_bytes,
            log_json,
            metrics,
            security,
            ws,
        } => {
            init_logging(log_json);
            let mut opts = Options::new()
                .with("fsync", &fsync)?
                .with("max_payload_bytes", &max_payload_bytes.to_string())?
                .with("segment_bytes", &segment_bytes.to_string())?;
            for o in &data_options {
                let (k, v) = pair(o, "data option")?;
                opts.set(&k, &v)?;
            }
            let cfg = EngineConfig::from_options(&opts)?;
            let endpoint = Endpoint::parse(&data)?;
            // A broker in front of another broker would only add a hop.
            if matches!(endpoint, Endpoint::Remote { .. } | Endpoint::WebSocket(_)) {
                return Err(Error::InvalidArgument("--data must be mem://, file:///dir or nats://host:port".into()));
            }
            let engine = endpoint.open(&cfg).await?;
            tracing::info!(%listen, %data, %fsync, "flowmesh broker listening");
            let mut server_cfg = ServerConfig {
                max_payload_bytes: max_payload_bytes as usize,
                metrics_addr: metrics,
                ws_addr: ws,
                ..Default::default()
            };
            security::configure(&mut server_cfg, &security.tls_cert, &security.tls_key, &security.access_file)?;
            server_cfg.identity = security.identity.config()?;
            serve(Arc::clone(&engine), listen, server_cfg, shutdown_signal()).await?;
            tracing::info!("flowmesh broker stopped");
            Ok(())
        }
        Command::Health(conn) => {
            let c = connect(&conn).await?;
            c.health().await?;
            print_line(format!("ok: {}", conn.url))
        }
        Command::Pub { conn, stream, messages, key, headers, count } => {
            let c = connect(&conn).await?;
            let payloads: Vec<String> = match (count, messages.is_empty()) {
                (Some(n), _) => {
                    let base = messages.first().cloned().unwrap_or_else(|| "msg".into());
                    (0..n).map(|i| format!("{base}-{i}")).collect()
                }
                (None, false) => messages,
                (None, true) => std::io::stdin().lock().lines().map_while(|l| l.ok()).collect(),
            };
            for p in payloads {
                let pos = c.publish(&stream, record(p, &key, &headers)?).await?;
                print_line(format!("{} {}", pos.partition, pos.offset))?;
            }
            Ok(())
        }
        Command::Sub { conn, stream, start, group, partition, count } => {
            let c = connect(&conn).await?;
            let mut opts = Options::new().with("start", &start)?;
            if let Some(g) = &group {
                opts.set("group", g)?;
                opts.set("auto_commit", "false")?;
            }
            let (mut spec, _) = opts.subscription()?;
            spec.partition = partition;
            let mut feed = c.subscribe(&stream, spec).await?;
            let mut seen = 0;
            while count.is_none_or(|n| seen < n) {
                let Some(m) = feed.next().await else { break };
                let m = m?;
                print_line(format!("{} {} {}", m.partition, m.offset, String::from_utf8_lossy(&m.payload)))?;
                if let Some(g) = &group {
                    c.commit_offset(&stream, g, m.partition, m.offset).await?;
                }
                seen += 1;
            }
            Ok(())
        }
        Command::Stats { metrics_url } => {
            let text = report::fetch(&metrics_url, std::time::Duration::from_secs(10)).await?;
            print_line(report::render(&report::parse(&text)))
        }
        Command::Top { metrics_url, interval, iterations } => {
            if !(interval.is_finite() && interval >= 0.05) {
                return Err(Error::InvalidArgument("--interval must be at least 0.05 seconds".into()));
            }
            let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
            let mut shown = 0;
            while iterations == 0 || shown < iterations {
                let fetched = tokio::select! {
                    r = report::fetch(&metrics_url, std::time::Duration::from_secs(5)) => r,
                    _ = &mut ctrl_c => break,
                };
                let screen = match fetched {
                    Ok(text) => report::render(&report::parse(&text)),
                    Err(e) => format!("{e}\n"),
                };
                // Clear the screen and home the cursor, then draw.
                print_line(format!("\x1b[2J\x1b[Hflowmesh top  {metrics_url}  (Ctrl-C to exit)\n{screen}"))?;
                shown += 1;
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs_f64(interval)) => {}
                    _ = &mut ctrl_c => break,
                }
            }
            Ok(())
        }
        Command::Token(TokenCmd::New { id, tenant }) => print_line(security::new_token_entry(&id, &tenant)?),
        Command::Token(TokenCmd::Hash { token }) => print_line(flowmesh::server::auth::hash_token(&token)),
        Command::Tls(TlsCmd::DevCerts { hosts, out, days, force }) => {
            print_line(tls::dev_certs(&hosts, &out, days, force)?)
        }
        Command::Stream(s) => resources::run_stream(s).await,
        Command::Queue(q) => run_queue(q).await,
        Command::Kv(k) => run_kv(k).await,
        Command::Check { .. } => unreachable!("check runs before the runtime starts"),
    }
}

async fn run_queue(cmd: QueueCmd) -> Result<()> {
    match cmd {
        QueueCmd::Enqueue { conn, queue, payload, delay_ms, priority, headers, count } => {
            let c = connect(&conn).await?;
            let payloads: Vec<String> = match count {
                Some(n) => (0..n).map(|i| format!("{payload}-{i}")).collect(),
                None => vec![payload],
            };
            for p in payloads {
                let id = c.enqueue(&queue, record(p, &None, &headers)?, delay_ms, priority).await?;
                print_line(id.to_string())?;
            }
            Ok(())
        }
        QueueCmd::Reserve { conn, queue, visibility_ms, wait_ms, ack } => {
            let c = connect(&conn).await?;
            match c.reserve(&queue, visibility_ms, wait_ms).await? {
                Some(job) => {
                    print_line(format!("{} {} {}", job.id, job.attempt, String::from_utf8_lossy(&job.payload)))?;
                    if ack {
                        c.ack(&queue, job.id).await?;
                    }
                    Ok(())
                }
                None => Err(Error::Timeout(format!("no job arrived within {wait_ms} ms"))),
            }
        }
        QueueCmd::Ack { conn, queue, job_id } => connect(&conn).await?.ack(&queue, job_id).await,
        QueueCmd::Nack { conn, queue, job_id, delay_ms } => connect(&conn).await?.nack(&queue, job_id, delay_ms).await,
        QueueCmd::Stats { conn, queue } => {
            let s = connect(&conn).await?.queue_stats(&queue).await?;
            print_line(format!("pending={} in_flight={} delayed={} dead={}", s.pending, s.in_flight, s.delayed, s.dead))
        }
        QueueCmd::Dlq { conn, queue, replay, replay_all } => {
            let c = connect(&conn).await?;
            if let Some(id) = replay {
                return c.dlq_replay(&queue, id).await;
            }
            if replay_all {
                let n = c.dlq_replay_all(&queue, None).await?;
                return print_line(format!("replayed {n}"));
            }
            for j in c.dlq_list(&queue, 0).await? {
                print_line(format!("{} {} {}", j.id, j.attempt, String::from_utf8_lossy(&j.payload)))?;
            }
            Ok(())
        }
        QueueCmd::Lifecycle(cmd) => resources::run_queue(cmd).await,
    }
}

async fn run_kv(cmd: KvCmd) -> Result<()> {
    match cmd {
        KvCmd::Set { conn, bucket, key, value, ttl_ms, count } => {
            let c = connect(&conn).await?;
            let pairs: Vec<(String, String)> = match count {
                Some(n) => (0..n).map(|i| (format!("{key}-{i}"), format!("{value}-{i}"))).collect(),
                None => vec![(key, value)],
            };
            for (k, v) in pairs {
                let rev = c.kv_set(&bucket, &k, v, ttl_ms).await?;
                print_line(rev.to_string())?;
            }
            Ok(())
        }
        KvCmd::Get { conn, bucket, key } => {
            let e = connect(&conn).await?.kv_get(&bucket, &key).await?;
            print_line(String::from_utf8_lossy(&e.value).into_owned())
        }
        KvCmd::Del { conn, bucket, key } => connect(&conn).await?.kv_delete(&bucket, &key).await.map(|_| ()),
        KvCmd::Ls { conn, bucket, prefix } => {
            for k in connect(&conn).await?.kv_keys(&bucket, &prefix).await? {
                print_line(k)?;
            }
            Ok(())
        }
        KvCmd::Watch { conn, bucket, prefix, count } => {
            let c = connect(&conn).await?;
            let mut w = c.kv_watch(&bucket, &prefix).await?;
            let mut seen = 0;
            while count.is_none_or(|n| seen < n) {
                let Some(ev) = w.next().await else { break };
                let ev = ev?;
                let op = match ev.op {
                    KvOp::Put => "PUT",
                    KvOp::Delete => "DEL",
                    KvOp::Expire => "EXPIRE",
                };
                print_line(format!("{op} {} {} {}", ev.key, ev.revision, String::from_utf8_lossy(&ev.value)))?;
                seen += 1;
            }
            Ok(())
        }
        KvCmd::Lifecycle(cmd) => resources::run_kv(cmd).await,
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested: finishing requests in flight");
}
