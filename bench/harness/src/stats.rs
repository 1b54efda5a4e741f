//! Measurement records: one JSON line per (workload, case, system, round).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Latency histogram in nanoseconds (1 ns .. 60 s, 3 significant digits).
pub fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

pub fn record(h: &mut Histogram<u64>, since: Instant) {
    let ns = since.elapsed().as_nanos().clamp(1, 60_000_000_000) as u64;
    let _ = h.record(ns);
}

/// The outcome of one measured cell.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub ops: u64,
    pub elapsed: Duration,
    pub hist: Option<Histogram<u64>>,
    /// Bytes of payload moved (for MB/s), 0 when not meaningful.
    pub bytes: u64,
    /// Free-form extra fields (e.g. ns/call).
    pub extra: Vec<(&'static str, Value)>,
}

impl Outcome {
    pub fn new(ops: u64, elapsed: Duration) -> Outcome {
        Outcome {
            ops,
            elapsed,
            hist: None,
            bytes: 0,
            extra: Vec::new(),
        }
    }

    pub fn with_hist(mut self, h: Histogram<u64>) -> Outcome {
        self.hist = Some(h);
        self
    }

    pub fn with_bytes(mut self, b: u64) -> Outcome {
        self.bytes = b;
        self
    }

    pub fn throughput(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

pub struct Sink {
    file: Mutex<std::fs::File>,
}

impl Sink {
    pub fn open(path: &PathBuf) -> std::io::Result<Sink> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Sink {
            file: Mutex::new(file),
        })
    }

    /// Writes one result line and prints a progress line on stderr.
    pub fn emit(
        &self,
        workload: &str,
        case: &str,
        system: &str,
        round: usize,
        o: &Outcome,
    ) {
        let secs = o.elapsed.as_secs_f64();
        let mut v = json!({
            "workload": workload,
            "case": case,
            "system": system,
            "round": round,
            "ops": o.ops,
            "secs": secs,
            "ops_per_sec": o.throughput(),
        });
        if o.bytes > 0 {
            v["mb_per_sec"] = json!(o.bytes as f64 / secs.max(1e-9) / 1e6);
        }
        let mut line = format!(
            "  r{round} {system:<34} {:>12.0} ops/s",
            o.throughput()
        );
        if let Some(h) = &o.hist {
            let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            v["p50_us"] = json!(us(0.5));
            v["p99_us"] = json!(us(0.99));
            v["p999_us"] = json!(us(0.999));
            v["max_us"] = json!(h.max() as f64 / 1000.0);
            v["mean_us"] = json!(h.mean() / 1000.0);
            v["samples"] = json!(h.len());
            line += &format!(
                "  p50 {:>9.1}us p99 {:>9.1}us p999 {:>9.1}us (n={})",
                us(0.5),
                us(0.99),
                us(0.999),
                h.len()
            );
        }
        for (k, val) in &o.extra {
            v[*k] = val.clone();
            line += &format!("  {k}={val}");
        }
        eprintln!("{line}");
        let mut f = self.file.lock().unwrap();
        let _ = writeln!(f, "{v}");
    }

    pub fn note(&self, kind: &str, v: Value) {
        let mut f = self.file.lock().unwrap();
        let _ = writeln!(f, "{}", json!({"note": kind, "value": v}));
    }
}
