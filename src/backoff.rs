//! Retry schedules: exponential backoff with random jitter, and the cheap
//! pseudo-random numbers that spread retrying clients apart.

use std::time::Duration;

/// Reconnect schedule: exponential backoff with random jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Wait before the first attempt.
    pub initial_ms: u64,
    /// Upper bound of the wait, before jitter.
    pub max_ms: u64,
    /// Growth of the wait per failed attempt.
    pub multiplier: f64,
    /// Up to this much random extra wait, so clients do not reconnect in lockstep.
    pub jitter_ms: u64,
    /// Give up after this many consecutive failed attempts; 0 = never.
    pub max_attempts: u64,
}

impl Backoff {
    /// The wait before reconnect attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u64) -> Duration {
        let exp = attempt.saturating_sub(1).min(64) as i32;
        let base = (self.initial_ms as f64 * self.multiplier.powi(exp)).min(self.max_ms as f64) as u64;
        let jitter = if self.jitter_ms == 0 { 0 } else { pseudo_random() % (self.jitter_ms + 1) };
        Duration::from_millis(base + jitter)
    }

    /// Whether attempt `attempt` is past `max_attempts` (the caller gives up).
    pub fn exhausted(&self, attempt: u64) -> bool {
        self.max_attempts > 0 && attempt > self.max_attempts
    }
}

/// Jitter only needs to spread clients apart, not be unpredictable.
pub(crate) fn pseudo_random() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    let mut x = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed) ^ seed;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}
