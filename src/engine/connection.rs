//! What keeps a remote client usable on a real network: the connection state
//! machine (connecting → connected → reconnecting → connected … or
//! disconnected after `max_reconnect_attempts`; closed by the owner), the
//! circuit breaker that fails fast while the broker keeps failing, and the
//! call policy (one deadline per call, calls cut short when the link is lost,
//! retries only for idempotent operations). The remote engine wires these to
//! gRPC; they are plain state machines here so tests can drive them.

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use crate::backoff::Backoff;
use crate::error::{Error, Result};

/// The state of a client's link to its engine (the C `fm_conn_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum ConnState {
    /// Opening the first connection.
    Connecting = 1,
    /// The broker answers.
    Connected = 2,
    /// The link was lost; retrying with backoff.
    Reconnecting = 3,
    /// Gave up after `max_reconnect_attempts`: calls fail with DISCONNECTED.
    Disconnected = 4,
    /// The client was closed.
    Closed = 5,
}

/// One transition, with the error that caused it (if any).
#[derive(Debug, Clone)]
pub struct StateChange {
    /// The state entered.
    pub state: ConnState,
    /// The error that caused it (None for an orderly change).
    pub cause: Option<Error>,
}

/// Told about the link as it changes (the client's metrics implement it).
pub trait LinkObserver: Send + Sync {
    /// The link entered `state`.
    fn state(&self, state: ConnState);
    /// Connected again after a loss.
    fn reconnected(&self);
    /// The circuit breaker: 0 closed, 1 open, 2 half-open.
    fn breaker(&self, state: u8);
}

/// The current state, its listeners, and a loss counter calls watch.
pub struct ConnectionState {
    observer: OnceLock<Arc<dyn LinkObserver>>,
    inner: Mutex<Listeners>,
    /// Bumped on every loss of the link: a call started before a bump was in
    /// flight when the link dropped.
    losses: watch::Sender<u64>,
    state: watch::Sender<ConnState>,
    /// Bumped whenever the broker is seen answering (a probe succeeded or
    /// the link came back): a call that failed waits for a bump after its
    /// failure before it is sent again, instead of burning its retries
    /// while the supervisor has not yet noticed the loss.
    confirmed: watch::Sender<u64>,
    /// Wakes the supervisor when a call saw the link fail.
    suspect: Notify,
}

struct Listeners {
    current: ConnState,
    listeners: Vec<mpsc::Sender<StateChange>>,
}

impl ConnectionState {
    /// A link starting in `initial`, with no listeners.
    pub fn new(initial: ConnState) -> ConnectionState {
        ConnectionState {
            observer: OnceLock::new(),
            inner: Mutex::new(Listeners { current: initial, listeners: Vec::new() }),
            losses: watch::channel(0).0,
            state: watch::channel(initial).0,
            confirmed: watch::channel(0).0,
            suspect: Notify::new(),
        }
    }

    /// The state now.
    pub fn current(&self) -> ConnState {
        self.inner.lock().unwrap().current
    }

    /// Installs the one observer (later calls are ignored) and tells it the
    /// current state.
    pub fn observe(&self, observer: Arc<dyn LinkObserver>) {
        let inner = self.inner.lock().unwrap();
        if self.observer.set(observer.clone()).is_ok() {
            observer.state(inner.current);
            observer.breaker(0);
        }
    }

    pub(crate) fn breaker_changed(&self, state: u8) {
        if let Some(o) = self.observer.get() {
            o.breaker(state);
        }
    }

    /// Moves to `state` and tells every listener, in order. A closed or
    /// given-up connection stays so. Returns false if nothing changed.
    pub fn set(&self, state: ConnState, cause: Option<Error>) -> bool {
        let mut inner = self.inner.lock().unwrap();
        let from = inner.current;
        if from == state || from == ConnState::Closed || (from == ConnState::Disconnected && state != ConnState::Closed)
        {
            return false;
        }
        inner.current = state;
        if from == ConnState::Connected {
            self.losses.send_modify(|n| *n += 1);
        }
        self.state.send_replace(state);
        if state == ConnState::Connected {
            self.confirmed.send_modify(|n| *n += 1);
        }
        if let Some(o) = self.observer.get() {
            o.state(state);
            if from == ConnState::Reconnecting && state == ConnState::Connected {
                o.reconnected();
            }
        }
        let change = StateChange { state, cause };
        inner.listeners.retain(|l| l.send(change.clone()).is_ok());
        if state == ConnState::Closed {
            inner.listeners.clear(); // nothing follows: listeners end
        }
        true
    }

    /// A receiver of every later transition, first given the current state.
    pub fn listen(&self) -> mpsc::Receiver<StateChange> {
        let (tx, rx) = mpsc::channel();
        let mut inner = self.inner.lock().unwrap();
        let _ = tx.send(StateChange { state: inner.current, cause: None });
        inner.listeners.push(tx);
        rx
    }

    /// A call saw the link fail: the supervisor checks at once.
    pub fn suspect(&self) {
        self.suspect.notify_one();
    }

    /// Waits until a call reports the link suspect (see [`ConnectionState::suspect`]).
    pub async fn suspected(&self) {
        self.suspect.notified().await
    }

    /// Resolves when the link is lost after this call (the loss count moves).
    pub fn loss_after_now(&self) -> impl Future<Output = ()> + Send + 'static {
        // A new receiver has seen the current count: only later losses wake it.
        let mut rx = self.losses.subscribe();
        async move {
            let _ = rx.changed().await;
        }
    }

    /// A probe of the broker succeeded.
    pub fn confirm(&self) {
        self.confirmed.send_modify(|n| *n += 1);
    }

    /// How often the broker was seen answering so far (see `confirmed_after`).
    pub fn confirmations(&self) -> u64 {
        *self.confirmed.borrow()
    }

    /// Waits until the broker was seen answering after `seen` confirmations
    /// and the state is connected; false if the connection gave up or
    /// closed, or `deadline` passed first.
    pub async fn confirmed_after(&self, seen: u64, deadline: Instant) -> bool {
        let mut confirmed = self.confirmed.subscribe();
        let mut state = self.state.subscribe();
        let wait = async {
            loop {
                let now = *state.borrow_and_update();
                if matches!(now, ConnState::Disconnected | ConnState::Closed) {
                    return false;
                }
                if *confirmed.borrow_and_update() > seen && now == ConnState::Connected {
                    return true;
                }
                tokio::select! {
                    r = confirmed.changed() => if r.is_err() { return false },
                    r = state.changed() => if r.is_err() { return false },
                }
            }
        };
        tokio::time::timeout_at(deadline.into(), wait).await.unwrap_or(false)
    }
}

/// Runs until `stop` resolves: probes the broker every `heartbeat` (and at
/// once when a call suspects the link), and after a failed probe reconnects
/// with `backoff` until a probe succeeds or the attempts run out.
pub async fn supervise<P, F>(
    state: &ConnectionState,
    heartbeat: Option<Duration>,
    backoff: Backoff,
    mut probe: P,
    on_reconnect: impl Fn(),
) where
    P: FnMut() -> F,
    F: Future<Output = Result<()>>,
{
    loop {
        let idle = async {
            match heartbeat {
                Some(every) => tokio::time::sleep(every).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = idle => {}
            _ = state.suspected() => {}
        }
        let Err(lost) = probe().await else {
            state.confirm();
            continue;
        };
        tracing::warn!(error = %lost, "broker link lost; reconnecting");
        state.set(ConnState::Reconnecting, Some(lost));
        let mut attempt = 0;
        loop {
            attempt += 1;
            if backoff.exhausted(attempt) {
                let why = format!("gave up after {} reconnect attempts", attempt - 1);
                tracing::error!("{why}");
                state.set(ConnState::Disconnected, Some(Error::Disconnected(why)));
                return;
            }
            tokio::time::sleep(backoff.delay(attempt)).await;
            if probe().await.is_ok() {
                tracing::info!(attempt, "broker link restored");
                state.set(ConnState::Connected, None);
                on_reconnect();
                break;
            }
        }
    }
}

/// Fails calls fast while the broker keeps failing: after `threshold`
/// consecutive failures it opens for `open_for`, then lets one probe call
/// through (half-open); the probe's outcome closes or re-opens it.
pub struct CircuitBreaker {
    threshold: u32,
    open_for: Duration,
    state: Mutex<BreakerState>,
    /// The last state reported to the observer (0 closed, 1 open, 2 half-open).
    reported: AtomicU8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// Where the circuit breaker stands.
pub enum BreakerState {
    /// Calls pass.
    Closed {
        /// Consecutive failed calls so far.
        failures: u32,
    },
    /// Calls fail fast.
    Open {
        /// When one probe call may go through.
        until: Instant,
    },
    /// One probe call decides whether to close again.
    HalfOpen,
}

/// Admission to one call; its outcome must be recorded (a permit dropped
/// unrecorded, e.g. a cancelled call, counts as neither).
pub struct Permit<'a> {
    breaker: Option<&'a CircuitBreaker>,
    probe: bool,
}

impl CircuitBreaker {
    /// `threshold` 0 disables the breaker.
    pub fn new(threshold: u32, open_for: Duration) -> CircuitBreaker {
        CircuitBreaker {
            threshold,
            open_for,
            state: Mutex::new(BreakerState::Closed { failures: 0 }),
            reported: AtomicU8::new(0),
        }
    }

    /// Where the breaker stands now.
    pub fn state(&self) -> BreakerState {
        *self.state.lock().unwrap()
    }

    /// The state as a gauge value, if it changed since the last call.
    fn changed(&self) -> Option<u8> {
        let now = match self.state() {
            BreakerState::Closed { .. } => 0,
            BreakerState::Open { .. } => 1,
            BreakerState::HalfOpen => 2,
        };
        (self.reported.swap(now, Ordering::AcqRel) != now).then_some(now)
    }

    /// Admits one call at `now`, or refuses it (Unavailable) while open.
    pub fn admit(&self, now: Instant) -> Result<Permit<'_>> {
        if self.threshold == 0 {
            return Ok(Permit { breaker: None, probe: false });
        }
        let mut state = self.state.lock().unwrap();
        match *state {
            BreakerState::Closed { .. } => Ok(Permit { breaker: Some(self), probe: false }),
            BreakerState::Open { until } if now >= until => {
                *state = BreakerState::HalfOpen;
                Ok(Permit { breaker: Some(self), probe: true })
            }
            BreakerState::Open { until } => Err(Error::Unavailable(format!(
                "circuit breaker open after {} consecutive failures; next try in {} ms",
                self.threshold,
                until.saturating_duration_since(now).as_millis()
            ))),
            BreakerState::HalfOpen => {
                Err(Error::Unavailable("circuit breaker half-open: a probe call is testing the broker".into()))
            }
        }
    }

    /// The link was restored (the supervisor's probe succeeded after a
    /// loss): the failures that opened the breaker were the outage, and the
    /// broker answers again.
    pub fn close(&self) {
        if self.threshold > 0 {
            *self.state.lock().unwrap() = BreakerState::Closed { failures: 0 };
        }
    }

    fn record(&self, failed: bool, now: Instant) {
        let mut state = self.state.lock().unwrap();
        *state = match (*state, failed) {
            (_, false) => BreakerState::Closed { failures: 0 },
            (BreakerState::Closed { failures }, true) if failures + 1 < self.threshold => {
                BreakerState::Closed { failures: failures + 1 }
            }
            (BreakerState::Open { until }, true) => BreakerState::Open { until },
            (_, true) => BreakerState::Open { until: now + self.open_for },
        };
    }
}

impl Permit<'_> {
    /// Records the call's outcome: link failures and timeouts count against
    /// the broker; any answer from it (even an error, such as UNAVAILABLE
    /// when a per-token limit refuses the call) counts for it. Transport
    /// failures arrive as DISCONNECTED, never as UNAVAILABLE.
    pub fn record<T>(mut self, result: &Result<T>, now: Instant) {
        if let Some(b) = self.breaker.take() {
            let failed = matches!(result, Err(Error::Disconnected(_) | Error::Timeout(_)));
            b.record(failed, now);
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        // An abandoned probe must not leave the breaker half-open forever.
        if let (Some(b), true) = (self.breaker, self.probe) {
            let mut state = b.state.lock().unwrap();
            if *state == BreakerState::HalfOpen {
                *state = BreakerState::Open { until: Instant::now() };
            }
        }
    }
}

/// Tells the connection's observer about a breaker state it has not seen.
pub fn report_breaker(breaker: &CircuitBreaker, state: &ConnectionState) {
    if let Some(now) = breaker.changed() {
        state.breaker_changed(now);
    }
}

/// Whether a failed call may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Reads, and writes made idempotent (publishes carry message ids).
    Safe,
    /// Anything else: a lost answer is reported, never repeated silently.
    Never,
}

/// The policy every remote call runs under.
pub struct CallPolicy {
    /// The link's state, told about failures and recoveries.
    pub state: std::sync::Arc<ConnectionState>,
    /// The breaker that admits each call.
    pub breaker: std::sync::Arc<CircuitBreaker>,
    /// Deadline of one attempt.
    pub timeout: Duration,
    /// Times an idempotent call is sent again after a link failure.
    pub max_retries: u32,
}

impl CallPolicy {
    fn report_breaker(&self) {
        report_breaker(&self.breaker, &self.state);
    }

    /// Runs `attempt` (given its time budget) within `timeout + extra`; fails
    /// it with DISCONNECTED if the link is lost meanwhile; retries a
    /// `Retry::Safe` call once the broker was seen answering again, at most
    /// `max_retries` times. A safe call that may retry and starts while the
    /// client is reconnecting waits for the link first (within its
    /// deadline), so a slow broker restart costs time, not the call.
    pub async fn run<T, F, Fut>(&self, retry: Retry, extra: Duration, mut attempt: F) -> Result<T>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let budget = self.timeout + extra;
        let deadline = Instant::now() + budget;
        let mut retries = 0;
        if retry == Retry::Safe && self.max_retries > 0 && self.state.current() == ConnState::Reconnecting {
            let seen = self.state.confirmations();
            if !self.state.confirmed_after(seen, deadline).await {
                return Err(match self.state.current() {
                    ConnState::Reconnecting => {
                        Error::Disconnected(format!("the link to the broker was not back within {budget:?}"))
                    }
                    _ => Error::Disconnected("the client gave up reconnecting to the broker".into()),
                });
            }
        }
        loop {
            if self.state.current() == ConnState::Disconnected {
                return Err(Error::Disconnected("the client gave up reconnecting to the broker".into()));
            }
            let permit = self.breaker.admit(Instant::now());
            self.report_breaker();
            let permit = permit?;
            let left = deadline.saturating_duration_since(Instant::now());
            let lost = self.state.loss_after_now();
            let result = tokio::select! {
                r = tokio::time::timeout(left, attempt(left)) => {
                    r.unwrap_or_else(|_| Err(Error::Timeout(format!("no answer from the broker within {budget:?}"))))
                }
                _ = lost => Err(Error::Disconnected("the link to the broker was lost during the call".into())),
            };
            permit.record(&result, Instant::now());
            self.report_breaker();
            match result {
                Err(Error::Disconnected(m)) => {
                    // Read before waking the supervisor: only a probe that
                    // answers after this failure lets the call go again.
                    let seen = self.state.confirmations();
                    self.state.suspect();
                    // Never connected yet (the first call of a connect): report at once.
                    let first_connect = self.state.current() == ConnState::Connecting;
                    if retry == Retry::Never
                        || retries >= self.max_retries
                        || first_connect
                        || !self.state.confirmed_after(seen, deadline).await
                    {
                        return Err(Error::Disconnected(m));
                    }
                    retries += 1;
                    tracing::debug!(retries, "retrying after the link came back");
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_threshold_and_probes_half_open() {
        let b = CircuitBreaker::new(3, Duration::from_millis(100));
        let t0 = Instant::now();
        let fail: Result<()> = Err(Error::Disconnected("x".into()));
        for _ in 0..2 {
            b.admit(t0).unwrap().record(&fail, t0);
        }
        assert_eq!(b.state(), BreakerState::Closed { failures: 2 });
        // An answer from the broker, even an error, resets the count.
        b.admit(t0).unwrap().record(&Err::<(), _>(Error::NotFound("k".into())), t0);
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
        for _ in 0..3 {
            b.admit(t0).unwrap().record(&fail, t0);
        }
        assert!(matches!(b.state(), BreakerState::Open { .. }));
        assert!(matches!(b.admit(t0 + Duration::from_millis(50)), Err(Error::Unavailable(_))));
        // After the timeout one probe goes through; others still fail fast.
        let probe = b.admit(t0 + Duration::from_millis(100)).unwrap();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(matches!(b.admit(t0 + Duration::from_millis(100)), Err(Error::Unavailable(_))));
        probe.record(&fail, t0 + Duration::from_millis(100));
        assert!(matches!(b.state(), BreakerState::Open { .. }));
        let probe = b.admit(t0 + Duration::from_millis(200)).unwrap();
        probe.record(&Ok(()), t0 + Duration::from_millis(200));
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
    }

    #[test]
    fn limit_refusals_are_answers_and_never_open_the_breaker() {
        let b = CircuitBreaker::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        let refused: Result<()> = Err(Error::Unavailable("token \"t\" has too many requests in flight".into()));
        for _ in 0..10 {
            b.admit(t0).unwrap().record(&refused, t0);
        }
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
        b.admit(t0).unwrap().record(&Err::<(), _>(Error::Disconnected("x".into())), t0);
        assert!(matches!(b.state(), BreakerState::Open { .. }));
        // A restored link closes it.
        b.close();
        assert!(b.admit(t0).is_ok());
    }

    #[tokio::test]
    async fn a_failed_safe_call_waits_for_the_broker_to_answer_again() {
        let state = std::sync::Arc::new(ConnectionState::new(ConnState::Connected));
        let policy = CallPolicy {
            state: state.clone(),
            breaker: std::sync::Arc::new(CircuitBreaker::new(0, Duration::ZERO)),
            timeout: Duration::from_secs(10),
            max_retries: 5,
        };
        // The supervisor has not noticed the loss yet: the state still says
        // CONNECTED, but no retry may go before a probe confirms the link.
        let confirmed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, c) = (state.clone(), confirmed.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            c.store(true, std::sync::atomic::Ordering::SeqCst);
            s.confirm();
        });
        let mut attempts = 0;
        let r: Result<u32> = policy
            .run(Retry::Safe, Duration::ZERO, |_| {
                attempts += 1;
                let n = attempts;
                let ok = confirmed.load(std::sync::atomic::Ordering::SeqCst);
                async move {
                    match n {
                        1 => Err(Error::Disconnected("connection refused".into())),
                        _ => {
                            assert!(ok, "retried before the link was confirmed");
                            Ok(n)
                        }
                    }
                }
            })
            .await;
        assert_eq!(r.unwrap(), 2);
        // Starting while reconnecting, a safe call waits for the link.
        state.set(ConnState::Reconnecting, None);
        let s = state.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            s.set(ConnState::Connected, None);
        });
        let t = Instant::now();
        let r: Result<()> = policy.run(Retry::Safe, Duration::ZERO, |_| async { Ok(()) }).await;
        assert!(r.is_ok() && t.elapsed() >= Duration::from_millis(40), "{r:?} after {:?}", t.elapsed());
    }

    #[test]
    fn abandoned_probe_reopens_for_the_next_caller() {
        let b = CircuitBreaker::new(1, Duration::from_millis(10));
        let t0 = Instant::now();
        b.admit(t0).unwrap().record(&Err::<(), _>(Error::Timeout("t".into())), t0);
        drop(b.admit(t0 + Duration::from_millis(10)).unwrap());
        assert!(matches!(b.state(), BreakerState::Open { .. }));
        assert!(b.admit(Instant::now() + Duration::from_millis(10)).is_ok());
    }

    #[test]
    fn disabled_breaker_never_opens() {
        let b = CircuitBreaker::new(0, Duration::from_secs(1));
        let t0 = Instant::now();
        for _ in 0..100 {
            b.admit(t0).unwrap().record(&Err::<(), _>(Error::Disconnected("x".into())), t0);
        }
        assert!(b.admit(t0).is_ok());
    }

    #[test]
    fn states_reach_listeners_in_order_and_terminal_states_stick() {
        let s = ConnectionState::new(ConnState::Connecting);
        let rx = s.listen();
        assert!(s.set(ConnState::Connected, None));
        assert!(s.set(ConnState::Reconnecting, Some(Error::Disconnected("gone".into()))));
        assert!(!s.set(ConnState::Reconnecting, None));
        assert!(s.set(ConnState::Connected, None));
        assert!(s.set(ConnState::Disconnected, None));
        assert!(!s.set(ConnState::Connected, None), "gave up: stays disconnected");
        assert!(s.set(ConnState::Closed, None));
        let seen: Vec<ConnState> = rx.try_iter().map(|c| c.state).collect();
        use ConnState::*;
        assert_eq!(seen, vec![Connecting, Connected, Reconnecting, Connected, Disconnected, Closed]);
    }

    #[tokio::test]
    async fn calls_in_flight_fail_when_the_link_is_lost_and_safe_ones_retry() {
        let state = std::sync::Arc::new(ConnectionState::new(ConnState::Connected));
        let policy = CallPolicy {
            state: state.clone(),
            breaker: std::sync::Arc::new(CircuitBreaker::new(0, Duration::ZERO)),
            timeout: Duration::from_secs(5),
            max_retries: 2,
        };
        let s = state.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            s.set(ConnState::Reconnecting, None);
            tokio::time::sleep(Duration::from_millis(20)).await;
            s.set(ConnState::Connected, None);
        });
        let mut attempts = 0;
        let r: Result<u32> = policy
            .run(Retry::Safe, Duration::ZERO, |_| {
                attempts += 1;
                let n = attempts;
                async move {
                    if n == 1 {
                        std::future::pending::<()>().await; // hangs until the loss cuts it
                    }
                    Ok(n)
                }
            })
            .await;
        assert_eq!(r.unwrap(), 2);
        // A call that may not be repeated reports the loss.
        let s = state.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            s.set(ConnState::Reconnecting, None);
        });
        let r: Result<()> = policy.run(Retry::Never, Duration::ZERO, |_| std::future::pending()).await;
        assert!(matches!(r, Err(Error::Disconnected(_))), "{r:?}");
    }
}
