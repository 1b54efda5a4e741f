//! No growth across reconnects: a client whose link is cut and restored
//! thousands of times keeps its threads, file descriptors and memory flat.
//! These figures are process-wide, so this file holds nothing else: cargo
//! runs each test file as a process of its own, and the one test here
//! measures a process where no other test runs. The broker is a child
//! process; the proxy (in this process) frees each connection on a cut.
//!
//! `cargo test --release --test reconnects -- --ignored` runs the long
//! version (10,000 cycles; `FM_RECONNECT_CYCLES` overrides either count).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::proxy::{Mode, Proxy};
use common::Broker;
use flowmesh::engine::connection::{ConnState, StateChange};
use flowmesh::{Client, Options};

/// Counts the bytes the process has allocated and not freed: the heap of
/// the client (and the proxy), exactly, where RSS also moves with the
/// allocator's caching and the kernel's paging.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn count_dir(path: &str) -> usize {
    std::fs::read_dir(path).map(|d| d.count()).unwrap_or(0)
}

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    cycle: usize,
    threads: usize,
    fds: usize,
    rss_kib: u64,
    heap: isize,
}

fn sample(cycle: usize) -> Sample {
    Sample {
        cycle,
        threads: count_dir("/proc/self/task"),
        fds: count_dir("/proc/self/fd"),
        rss_kib: rss_kib(),
        heap: LIVE.load(Ordering::Relaxed),
    }
}

fn wait_state(rx: &mpsc::Receiver<StateChange>, want: ConnState, within: Duration) {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(c) if c.state == want => return,
            Ok(c) => seen.push(c.state),
            Err(_) => break,
        }
    }
    panic!("state {want:?} not reached within {within:?}; saw {seen:?}");
}

/// Waits (bounded) until `ok` holds for the process's counts: connections
/// and threads a loaded machine has not finished closing yet settle; a
/// leak does not.
fn settled(within: Duration, ok: impl Fn(&Sample) -> bool) -> Sample {
    let deadline = Instant::now() + within;
    loop {
        let now = sample(usize::MAX);
        if ok(&now) || Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Least-squares slope of `bytes` over the cycle number, in bytes per cycle.
fn slope(samples: &[Sample], bytes: impl Fn(&Sample) -> f64) -> f64 {
    let n = samples.len() as f64;
    let mx = samples.iter().map(|s| s.cycle as f64).sum::<f64>() / n;
    let my = samples.iter().map(&bytes).sum::<f64>() / n;
    let sxy: f64 = samples.iter().map(|s| (s.cycle as f64 - mx) * (bytes(s) - my)).sum();
    let sxx: f64 = samples.iter().map(|s| (s.cycle as f64 - mx).powi(2)).sum();
    if sxx == 0.0 {
        0.0
    } else {
        sxy / sxx
    }
}

async fn reconnects_leave_no_growth(default_cycles: usize) {
    let cycles: usize =
        std::env::var("FM_RECONNECT_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(default_cycles);
    let broker = Broker::start("mem://");
    let proxy = Proxy::start(&broker.addr);
    let opts = [
        ("heartbeat_ms", "0"),
        ("reconnect_initial_ms", "1"),
        ("reconnect_max_ms", "5"),
        ("reconnect_jitter_ms", "0"),
        ("max_retries", "0"),
        ("breaker_threshold", "0"),
        ("request_timeout_ms", "10000"),
    ]
    .iter()
    .fold(Options::new(), |o, (k, v)| o.with(k, v).unwrap());
    let client = Client::connect(&proxy.url(), &opts).await.unwrap();
    let states = client.engine().connection().unwrap().listen();
    wait_state(&states, ConnState::Connected, Duration::from_secs(10));
    // Warm-up (allocator arenas, lazily started threads) ends here.
    let warm = (cycles / 10).clamp(1, 200);
    let every = (cycles / 50).max(1);
    let mut samples = Vec::new();
    let started = Instant::now();
    for cycle in 0..cycles {
        proxy.set(Mode::Cut);
        // A failing call makes the client notice the cut at once.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = client.kv_exists("b", "k").await;
            assert!(Instant::now() < deadline, "cycle {cycle}: the cut went unnoticed: {r:?}");
            if r.is_err() && client.engine().connection().unwrap().current() == ConnState::Reconnecting {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        proxy.set(Mode::Pass);
        wait_state(&states, ConnState::Connected, Duration::from_secs(30));
        assert!(client.kv_exists("b", "k").await.is_ok(), "cycle {cycle}: not usable after reconnect");
        if cycle + 1 >= warm && (cycle + 1 - warm).is_multiple_of(every) {
            samples.push(sample(cycle + 1));
        }
    }
    let took = started.elapsed();
    let base = samples[0];
    let peak_threads = samples.iter().map(|s| s.threads).max().unwrap();
    let peak_fds = samples.iter().map(|s| s.fds).max().unwrap();
    // Threads and descriptors come back to what they were after warm-up.
    let end = settled(Duration::from_secs(20), |s| s.threads <= base.threads && s.fds <= base.fds);
    let rss_slope = slope(&samples, |s| s.rss_kib as f64 * 1024.0);
    let heap_slope = slope(&samples, |s| s.heap as f64);
    let last = samples.last().unwrap();
    eprintln!(
        "{cycles} reconnects in {took:.1?} ({:.2} ms each); after warm-up at cycle {}: threads {} -> {} (peak {}), \
         fds {} -> {} (peak {}), heap {} -> {} bytes ({heap_slope:.1} B/cycle), rss {} KiB -> {} KiB at cycle {} \
         ({rss_slope:.0} B/cycle)",
        took.as_secs_f64() * 1000.0 / cycles as f64,
        base.cycle,
        base.threads,
        end.threads,
        peak_threads,
        base.fds,
        end.fds,
        peak_fds,
        base.heap,
        last.heap,
        base.rss_kib,
        last.rss_kib,
        last.cycle,
    );
    assert!(end.threads <= base.threads, "threads grew: {} -> {}", base.threads, end.threads);
    assert!(end.fds <= base.fds, "file descriptors grew: {} -> {}", base.fds, end.fds);
    // Flat memory: the heap has no trend over the cycles (what is in flight
    // at a sample varies by a few KiB; a leak of 16 bytes a cycle shows).
    assert!(heap_slope < 16.0, "the heap grows {heap_slope:.1} bytes per reconnect: {samples:?}");
    let growth = last.heap - base.heap;
    assert!(growth < 256 << 10, "the heap grew {growth} bytes: {samples:?}");
    // RSS also moves with the allocator's caching: only a gross trend fails.
    assert!(rss_slope < 1024.0, "RSS grows {rss_slope:.0} bytes per reconnect: {samples:?}");
    // The client's metrics counted each reconnect and show it connected.
    let text = client.metrics().encode();
    assert!(text.contains(&format!("flowmesh_client_reconnects_total {cycles}\n")), "{text}");
    assert!(text.contains("flowmesh_client_connection_state 2\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_reconnects_leave_no_growth() {
    reconnects_leave_no_growth(1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: 10,000 reconnects (run with --ignored)"]
async fn ten_thousand_reconnects_leave_no_growth() {
    reconnects_leave_no_growth(10_000).await;
}
