//! `flowmesh stream ...`, and the lifecycle subcommands of `queue` and `kv`:
//! list, inspect, delete, purge, update, extend. Destructive commands ask
//! for confirmation when stdin is a terminal, unless given --yes.

use std::io::{BufRead, IsTerminal, Write};

use clap::{Args, Subcommand};
use flowmesh::{Error, Result, StreamUpdate};

use super::{connect, print_line, Conn};

/// Skips the confirmation prompt of a destructive command.
#[derive(Args, Clone, Copy)]
pub struct Confirm {
    /// Do it without asking (needed when stdin is a terminal and no one answers)
    #[arg(long, short = 'y')]
    yes: bool,
}

impl Confirm {
    /// Asks on a terminal; scripts (stdin not a terminal) are not asked.
    fn check(self, what: &str) -> Result<()> {
        if self.yes || !std::io::stdin().is_terminal() {
            return Ok(());
        }
        eprint!("{what}? This can not be undone. [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).map_err(|e| Error::Internal(format!("stdin: {e}")))?;
        if matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(());
        }
        Err(Error::InvalidArgument(format!("not confirmed: {what} (pass --yes to skip the question)")))
    }
}

#[derive(Subcommand)]
pub enum StreamCmd {
    /// List streams (of the tenant/namespace; a prefix with '/' is qualified)
    Ls {
        #[command(flatten)]
        conn: Conn,
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Print a stream's configuration and partitions
    Info {
        #[command(flatten)]
        conn: Conn,
        stream: String,
    },
    /// Delete a stream with its messages and consumer-group offsets
    Rm {
        #[command(flatten)]
        conn: Conn,
        stream: String,
        #[command(flatten)]
        confirm: Confirm,
    },
    /// Remove every message of a stream, keeping it (offsets keep growing)
    Purge {
        #[command(flatten)]
        conn: Conn,
        stream: String,
        #[command(flatten)]
        confirm: Confirm,
    },
    /// Change retention or grow the partition count
    Update {
        #[command(flatten)]
        conn: Conn,
        stream: String,
        /// New partition count (may only grow)
        #[arg(long)]
        partitions: Option<u32>,
        /// Retention by age, ms (0 = unlimited)
        #[arg(long)]
        max_age_ms: Option<u64>,
        /// Retention by size per partition, bytes (0 = unlimited)
        #[arg(long)]
        max_bytes: Option<u64>,
        /// Retention by count per partition (0 = unlimited)
        #[arg(long)]
        max_messages: Option<u64>,
    },
}

/// The lifecycle subcommands of `flowmesh queue`.
#[derive(Subcommand)]
pub enum QueueLifecycle {
    /// List queues (of the tenant/namespace; a prefix with '/' is qualified)
    Ls {
        #[command(flatten)]
        conn: Conn,
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Delete a queue with every job (in flight and dead ones too)
    Rm {
        #[command(flatten)]
        conn: Conn,
        queue: String,
        #[command(flatten)]
        confirm: Confirm,
    },
    /// Remove pending and delayed jobs (in-flight jobs are left to finish)
    Purge {
        #[command(flatten)]
        conn: Conn,
        queue: String,
        #[command(flatten)]
        confirm: Confirm,
    },
    /// Give a reserved job more time before it is redelivered
    Extend {
        #[command(flatten)]
        conn: Conn,
        queue: String,
        job_id: u64,
        /// Visibility from now, ms
        #[arg(long, default_value_t = 30_000)]
        visibility_ms: u64,
    },
}

/// The lifecycle subcommands of `flowmesh kv`.
#[derive(Subcommand)]
pub enum KvLifecycle {
    /// List buckets (of the tenant/namespace; a prefix with '/' is qualified)
    Buckets {
        #[command(flatten)]
        conn: Conn,
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Delete a bucket with every key
    RmBucket {
        #[command(flatten)]
        conn: Conn,
        bucket: String,
        #[command(flatten)]
        confirm: Confirm,
    },
}

fn print_all(names: Vec<String>) -> Result<()> {
    names.into_iter().try_for_each(print_line)
}

pub async fn run_stream(cmd: StreamCmd) -> Result<()> {
    match cmd {
        StreamCmd::Ls { conn, prefix } => print_all(connect(&conn).await?.list_streams(&prefix).await?),
        StreamCmd::Info { conn, stream } => {
            let c = connect(&conn).await?;
            let info = c.stream_info(&stream).await?;
            let cfg = info.config;
            print_line(format!(
                "stream {} partitions={} tier={} max_age_ms={} max_bytes={} max_messages={}",
                c.qualify(&stream)?,
                cfg.partitions,
                cfg.tier.name(),
                cfg.max_age_ms,
                cfg.max_bytes,
                cfg.max_messages
            ))?;
            for p in info.partitions {
                print_line(format!(
                    "partition {} earliest={} latest={} messages={}",
                    p.partition,
                    p.earliest,
                    p.latest,
                    p.latest - p.earliest
                ))?;
            }
            Ok(())
        }
        StreamCmd::Rm { conn, stream, confirm } => {
            confirm.check(&format!("delete stream {stream}"))?;
            connect(&conn).await?.delete_stream(&stream).await
        }
        StreamCmd::Purge { conn, stream, confirm } => {
            confirm.check(&format!("purge stream {stream}"))?;
            let n = connect(&conn).await?.purge_stream(&stream).await?;
            print_line(format!("removed {n}"))
        }
        StreamCmd::Update { conn, stream, partitions, max_age_ms, max_bytes, max_messages } => {
            let update = StreamUpdate { partitions, max_age_ms, max_bytes, max_messages };
            let cfg = connect(&conn).await?.update_stream(&stream, update).await?;
            print_line(format!(
                "partitions={} max_age_ms={} max_bytes={} max_messages={}",
                cfg.partitions, cfg.max_age_ms, cfg.max_bytes, cfg.max_messages
            ))
        }
    }
}

pub async fn run_queue(cmd: QueueLifecycle) -> Result<()> {
    match cmd {
        QueueLifecycle::Ls { conn, prefix } => print_all(connect(&conn).await?.list_queues(&prefix).await?),
        QueueLifecycle::Rm { conn, queue, confirm } => {
            confirm.check(&format!("delete queue {queue}"))?;
            connect(&conn).await?.delete_queue(&queue).await
        }
        QueueLifecycle::Purge { conn, queue, confirm } => {
            confirm.check(&format!("purge queue {queue}"))?;
            let n = connect(&conn).await?.purge_queue(&queue).await?;
            print_line(format!("removed {n}"))
        }
        QueueLifecycle::Extend { conn, queue, job_id, visibility_ms } => {
            connect(&conn).await?.extend(&queue, job_id, visibility_ms).await
        }
    }
}

pub async fn run_kv(cmd: KvLifecycle) -> Result<()> {
    match cmd {
        KvLifecycle::Buckets { conn, prefix } => print_all(connect(&conn).await?.list_buckets(&prefix).await?),
        KvLifecycle::RmBucket { conn, bucket, confirm } => {
            confirm.check(&format!("delete bucket {bucket}"))?;
            connect(&conn).await?.delete_bucket(&bucket).await
        }
    }
}
