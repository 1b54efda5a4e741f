//! The baseline of bench/tiers.sh: N core NATS publishes of SIZE bytes from
//! one task with async-nats (what a memory-tier publish on nats:// does).
//! Prints "<msgs> <seconds> <msg/s>".
//!
//!   cargo run --release --example nats_core_publish -- nats://127.0.0.1:4222 N [SIZE]

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).ok_or("usage: nats_core_publish URL N [SIZE]")?.clone();
    let n: u64 = args.get(2).ok_or("N")?.parse()?;
    let size: usize = args.get(3).map_or(Ok(128), |s| s.parse())?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let client = async_nats::connect(url).await?;
        let payload = bytes::Bytes::from(vec![0u8; size]);
        let subject = format!("bench.core.{}", std::process::id());
        for _ in 0..100 {
            client.publish(subject.clone(), payload.clone()).await?;
        }
        client.flush().await?;
        let start = Instant::now();
        for _ in 0..n {
            client.publish(subject.clone(), payload.clone()).await?;
        }
        client.flush().await?;
        let secs = start.elapsed().as_secs_f64();
        println!("{n} {secs:.4} {:.0}", n as f64 / secs);
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
