//! Document store benchmark: insert, get, indexed where, live-query fan-out
//! (N subscribers of one query: change → last subscriber notified) and
//! transaction throughput against the same writes without a transaction.
//!
//! `cargo run --release --example store_bench -- URL [RECORDS] [SUBSCRIBERS]`
//! (URL: mem://, file:///dir or grpc://host:port). Prints one line per
//! measurement; bench/BENCHMARKS.md records a run.

use std::time::{Duration, Instant};

use flowmesh::store::Store;
use flowmesh::{Client, Options};
use serde_json::{json, Value};

fn pct(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i.min(samples.len() - 1)]
}

fn report(what: &str, mut lat: Vec<Duration>, total: Duration) {
    let n = lat.len();
    let (p50, p99) = (pct(&mut lat, 0.50), pct(&mut lat, 0.99));
    println!(
        "{what:<34} n={n:<6} {:>9.0} ops/s  p50 {:>8.1} us  p99 {:>8.1} us",
        n as f64 / total.as_secs_f64(),
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).cloned().unwrap_or_else(|| "mem://".into());
    let records: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let subscribers: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let client = Client::connect(&url, &Options::default()).await?;
    let s = Store::new(client);
    let tag = format!("b{}", std::process::id());
    let (plain, indexed, fan) = (format!("{tag}-plain"), format!("{tag}-idx"), format!("{tag}-fan"));
    println!("store benchmark on {url}: {records} records, {subscribers} subscribers");

    // insert
    let (mut lat, t0) = (Vec::with_capacity(records), Instant::now());
    for i in 0..records {
        let t = Instant::now();
        s.insert(&plain, json!({"id": format!("r{i:06}"), "n": i, "group": i % 100})).await?;
        lat.push(t.elapsed());
    }
    report("insert", lat, t0.elapsed());

    // get
    let (mut lat, t0) = (Vec::with_capacity(records), Instant::now());
    for i in 0..records {
        let t = Instant::now();
        s.get(&plain, &format!("r{i:06}")).await?;
        lat.push(t.elapsed());
    }
    report("get", lat, t0.elapsed());

    // where: scanning vs indexed (100 groups: 1% of the records match)
    s.define_bucket(&indexed, &json!({"indexes": ["group"]})).await?;
    for i in 0..records {
        s.insert(&indexed, json!({"n": i, "group": i % 100})).await?;
    }
    for (what, bucket) in [("where group=k (scan)", &plain), ("where group=k (indexed)", &indexed)] {
        let rounds = 200;
        let (mut lat, t0) = (Vec::with_capacity(rounds), Instant::now());
        for i in 0..rounds {
            let t = Instant::now();
            let found = s.where_(bucket, &json!({"group": i % 100})).await?;
            lat.push(t.elapsed());
            assert_eq!(found.len(), records / 100);
        }
        report(what, lat, t0.elapsed());
    }

    // live-query fan-out: one change, time until the last subscriber has it
    s.define_query(&fan, &json!({"type": "count", "bucket": fan})).await?;
    let mut subs = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let mut sub = s.subscribe(&fan, Value::Null).await?;
        sub.next().await; // the current result
        subs.push(sub);
    }
    let rounds = 50;
    let (mut lat, t0) = (Vec::with_capacity(rounds), Instant::now());
    for i in 1..=rounds {
        let t = Instant::now();
        s.insert(&fan, json!({"n": i})).await?;
        for sub in subs.iter_mut() {
            loop {
                let got = tokio::time::timeout(Duration::from_secs(60), sub.next()).await?;
                if got.and_then(|r| r.ok()).is_some_and(|v| *v == json!(i)) {
                    break;
                }
            }
        }
        lat.push(t.elapsed());
    }
    report(&format!("fan-out to {subscribers} subscribers"), lat, t0.elapsed());
    drop(subs);

    // transactions of 10 inserts vs the same 10 inserts one by one
    let batches = (records / 10).max(1);
    let t0 = Instant::now();
    let mut lat = Vec::with_capacity(batches);
    for b in 0..batches {
        let t = Instant::now();
        for j in 0..10 {
            s.insert(&format!("{tag}-single"), json!({"b": b, "j": j})).await?;
        }
        lat.push(t.elapsed());
    }
    let single = t0.elapsed();
    report("10 inserts one by one (per 10)", lat, single);
    let t0 = Instant::now();
    let mut lat = Vec::with_capacity(batches);
    for b in 0..batches {
        let ops: Vec<Value> = (0..10)
            .map(|j| json!({"op": "insert", "bucket": format!("{tag}-txn"), "data": {"b": b, "j": j}}))
            .collect();
        let t = Instant::now();
        s.transaction(&Value::Array(ops)).await?;
        lat.push(t.elapsed());
    }
    let txn = t0.elapsed();
    report("transaction of 10 inserts", lat, txn);
    println!(
        "writes/s: one by one {:.0}, in transactions {:.0}",
        (batches * 10) as f64 / single.as_secs_f64(),
        (batches * 10) as f64 / txn.as_secs_f64()
    );
    for b in [&plain, &indexed, &fan] {
        s.drop_bucket(b).await.ok();
    }
    Ok(())
}
