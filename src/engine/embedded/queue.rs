//! A work queue: priorities, delays, visibility timeouts, retries with
//! backoff and a dead-letter queue. Time-driven transitions (a delay ends, a
//! visibility timeout expires) are applied lazily by `promote` at every
//! operation, and long-polling reservers sleep exactly until the next one.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::engine::{Job, QueueStats, Record, RetryPolicy};
use crate::error::{Error, Result};

use super::codec::{self, Reader};
use super::log::{FsyncPolicy, PendingSync, SyncRegistry};
use super::now_ms;
use super::wal::{Compaction, Wal};

/// Used when a reserve asks for visibility 0.
pub const DEFAULT_VISIBILITY_MS: u64 = 30_000;

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Ready,
    Delayed(i64),
    InFlight(i64),
    Dead,
}

#[derive(Clone)]
struct JobRec {
    id: u64,
    priority: i32,
    enqueued_ms: i64,
    attempt: u32,
    payload: Bytes,
    headers: Vec<(String, String)>,
    state: State,
}

impl JobRec {
    fn to_job(&self) -> Job {
        Job {
            id: self.id,
            attempt: self.attempt,
            priority: self.priority,
            payload: self.payload.clone(),
            headers: self.headers.clone(),
            enqueued_ms: self.enqueued_ms,
        }
    }
}

#[derive(Default)]
struct QueueState {
    next_id: u64,
    next_seq: u64,
    jobs: HashMap<u64, JobRec>,
    /// Highest priority first, FIFO within a priority.
    ready: BTreeMap<(Reverse<i32>, u64), u64>,
    ready_key: HashMap<u64, (Reverse<i32>, u64)>,
    delayed: BTreeSet<(i64, u64)>,
    in_flight: BTreeSet<(i64, u64)>,
    dead: BTreeSet<u64>,
    policy: RetryPolicy,
    log: Option<Wal>,
    log_error: Option<Error>,
    /// Last ticket written by this operation, for fsync after unlock.
    ticket: u64,
    /// Approximate bytes of live jobs, for an O(1) compaction check.
    live_bytes: u64,
    /// The queue was deleted: every operation fails, waiting reserves end.
    deleted: bool,
}

/// Replays `data` into an empty queue as recovery does: as one record
/// body, then as a whole log file (the fuzz targets). Returns how many
/// records were accepted.
pub(super) fn fuzz_replay(data: &[u8], now: i64) -> usize {
    let mut st = QueueState { next_id: 1, ..Default::default() };
    let mut accepted = usize::from(st.replay(data).is_ok());
    for piece in codec::scan(data, true, |_| true).pieces {
        if let codec::Piece::Frame { body, .. } = piece {
            if st.replay(body).is_err() {
                break;
            }
            accepted += 1;
        }
    }
    st.promote(now);
    accepted
}

fn job_cost(j: &JobRec) -> u64 {
    64 + j.payload.len() as u64
}

pub struct Queue {
    name: String,
    state: Mutex<QueueState>,
    arrived: Notify,
    fsync: FsyncPolicy,
}

// WAL record kinds.
const W_PUT: u8 = 1;
const W_STATE: u8 = 2;
const W_REMOVE: u8 = 3;
const W_POLICY: u8 = 4;

impl Queue {
    pub fn open(name: &str, path: Option<&Path>, fsync: FsyncPolicy, registry: &SyncRegistry) -> Result<Queue> {
        let mut st = QueueState { next_id: 1, ..Default::default() };
        if let Some(path) = path {
            let log = Wal::open(path, Compaction::DEFAULT, |body| st.replay(body))?;
            registry.register(log.syncer());
            st.log = Some(log);
            st.compact_if_large()?;
        }
        Ok(Queue { name: name.to_owned(), state: Mutex::new(st), arrived: Notify::new(), fsync })
    }

    /// Runs `f` under the lock, then waits for its log writes to be durable
    /// outside it.
    async fn with_state<T>(&self, f: impl FnOnce(&mut QueueState, i64) -> Result<T>) -> Result<T> {
        let (out, pending) = self.locked(f)?;
        pending.wait(self.fsync).await?;
        Ok(out)
    }

    /// Runs `f` under the lock; returns what its log writes wait for.
    fn locked<T>(&self, f: impl FnOnce(&mut QueueState, i64) -> Result<T>) -> Result<(T, PendingSync)> {
        let mut st = self.state.lock().unwrap();
        if st.deleted {
            return Err(Error::NotFound(format!("queue {} was deleted", self.name)));
        }
        st.ticket = 0;
        let now = now_ms();
        st.promote(now);
        let out = f(&mut st, now);
        if let Some(e) = st.log_error.take() {
            return Err(e);
        }
        let pending = match st.log.as_ref().filter(|_| st.ticket > 0) {
            Some(l) => PendingSync::one(l.syncer().clone(), st.ticket),
            None => PendingSync::none(),
        };
        if out.is_ok() {
            st.compact_if_large()?;
        }
        Ok((out?, pending))
    }

    pub async fn enqueue(&self, record: Record, delay_ms: u64, priority: i32) -> Result<u64> {
        let id = self
            .with_state(|st, now| {
                let id = st.next_id;
                st.next_id += 1;
                let state = if delay_ms > 0 { State::Delayed(now + delay_ms as i64) } else { State::Ready };
                let job = JobRec {
                    id,
                    priority,
                    enqueued_ms: now,
                    attempt: 0,
                    payload: record.payload,
                    headers: record.headers,
                    state: State::Dead, // placed below
                };
                st.log_put(&job, state);
                if st.log_error.is_none() {
                    st.insert(job, state); // only a logged job exists
                }
                Ok(id)
            })
            .await?;
        self.arrived.notify_waiters();
        Ok(id)
    }

    /// Reserves up to `max` jobs, long-polling up to `wait_ms` for the first.
    pub async fn reserve(&self, max: usize, visibility_ms: u64, wait_ms: u64) -> Result<Vec<Job>> {
        let max = max.max(1);
        let visibility = if visibility_ms == 0 { DEFAULT_VISIBILITY_MS } else { visibility_ms } as i64;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
        loop {
            // Register interest before looking, so an enqueue in between wakes us.
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let (jobs, next_due) = self
                .with_state(|st, now| {
                    let mut jobs = Vec::new();
                    while jobs.len() < max {
                        let Some((_, id)) = st.ready.pop_first() else {
                            break;
                        };
                        st.ready_key.remove(&id);
                        let attempt = st.jobs[&id].attempt + 1;
                        let until = now + visibility;
                        st.set_state(id, State::InFlight(until), attempt);
                        jobs.push(st.jobs[&id].to_job());
                    }
                    Ok((jobs, st.next_due()))
                })
                .await?;
            if !jobs.is_empty() {
                return Ok(jobs);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let mut wake = deadline;
            if let Some(due) = next_due {
                let in_ms = (due - now_ms()).max(0) as u64;
                wake = wake.min(now + Duration::from_millis(in_ms));
            }
            tokio::select! {
                _ = arrived => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    pub async fn ack(&self, job_id: u64) -> Result<()> {
        self.with_state(|st, _| match st.jobs.get(&job_id).map(|j| j.state) {
            None | Some(State::Dead) => Err(Error::NotFound(format!("job {job_id} is not in queue {}", self.name))),
            Some(_) => {
                st.remove(job_id);
                st.log_remove(job_id);
                Ok(())
            }
        })
        .await
    }

    pub async fn nack(&self, job_id: u64, delay_ms: u64) -> Result<()> {
        self.with_state(|st, now| match st.jobs.get(&job_id).map(|j| j.state) {
            Some(State::InFlight(_)) => {
                st.fail(job_id, now, Some(delay_ms).filter(|d| *d > 0));
                Ok(())
            }
            None | Some(State::Dead) => Err(Error::NotFound(format!("job {job_id} is not in queue {}", self.name))),
            Some(_) => Err(Error::Conflict(format!("job {job_id} is not reserved"))),
        })
        .await?;
        self.arrived.notify_waiters();
        Ok(())
    }

    /// Gives an in-flight job `visibility_ms` from now.
    pub async fn extend(&self, job_id: u64, visibility_ms: u64) -> Result<()> {
        if visibility_ms == 0 {
            return Err(Error::invalid("visibility_ms must be at least 1"));
        }
        self.with_state(|st, now| match st.jobs.get(&job_id).map(|j| (j.state, j.attempt)) {
            Some((State::InFlight(_), attempt)) => {
                st.set_state(job_id, State::InFlight(now + visibility_ms as i64), attempt);
                Ok(())
            }
            None => Err(Error::NotFound(format!("job {job_id} is not in queue {}", self.name))),
            Some(_) => Err(Error::Conflict(format!(
                "job {job_id} of queue {} is no longer reserved (its visibility ran out, or it was nacked or dead-lettered)",
                self.name
            ))),
        }).await
    }

    /// Removes every pending and delayed job; in-flight and dead jobs stay.
    pub async fn purge(&self) -> Result<u64> {
        self.with_state(|st, _| {
            let mut ids: Vec<u64> = st.ready.values().copied().collect();
            ids.extend(st.delayed.iter().map(|(_, id)| *id));
            for id in &ids {
                st.remove(*id);
                st.log_remove(*id);
            }
            Ok(ids.len() as u64)
        })
        .await
    }

    pub fn is_deleted(&self) -> bool {
        self.state.lock().unwrap().deleted
    }

    /// Marks the queue deleted and wakes waiting reserves (which then fail).
    pub fn mark_deleted(&self) {
        self.state.lock().unwrap().deleted = true;
        self.arrived.notify_waiters();
    }

    pub async fn stats(&self) -> Result<QueueStats> {
        self.with_state(|st, _| {
            Ok(QueueStats {
                pending: st.ready.len() as u64,
                in_flight: st.in_flight.len() as u64,
                delayed: st.delayed.len() as u64,
                dead: st.dead.len() as u64,
            })
        })
        .await
    }

    pub async fn set_policy(&self, policy: RetryPolicy) -> Result<()> {
        if !(policy.multiplier.is_finite() && policy.multiplier >= 1.0) {
            return Err(Error::invalid("retry multiplier must be a finite number >= 1"));
        }
        self.with_state(|st, _| {
            st.policy = policy;
            st.log_policy();
            Ok(())
        })
        .await
    }

    pub fn policy(&self) -> RetryPolicy {
        self.state.lock().unwrap().policy
    }

    pub async fn dlq_list(&self, max: usize) -> Result<Vec<Job>> {
        self.with_state(|st, _| Ok(st.dead.iter().take(max).map(|id| st.jobs[id].to_job()).collect())).await
    }

    pub async fn dlq_replay(&self, job_id: u64) -> Result<()> {
        self.with_state(|st, _| {
            if !st.dead.contains(&job_id) {
                return Err(Error::NotFound(format!("job {job_id} is not in the dead-letter queue of {}", self.name)));
            }
            st.set_state(job_id, State::Ready, 0);
            Ok(())
        })
        .await?;
        self.arrived.notify_waiters();
        Ok(())
    }

    pub async fn dlq_replay_all(&self, header: Option<(String, String)>) -> Result<u64> {
        let n = self
            .with_state(|st, _| {
                let ids: Vec<u64> = st
                    .dead
                    .iter()
                    .copied()
                    .filter(|id| match &header {
                        None => true,
                        Some((k, v)) => st.jobs[id].headers.iter().any(|(hk, hv)| hk == k && hv == v),
                    })
                    .collect();
                for id in &ids {
                    st.set_state(*id, State::Ready, 0);
                }
                Ok(ids.len() as u64)
            })
            .await?;
        if n > 0 {
            self.arrived.notify_waiters();
        }
        Ok(n)
    }
}

impl QueueState {
    fn insert(&mut self, mut job: JobRec, state: State) {
        let id = job.id;
        job.state = State::Dead;
        self.live_bytes += job_cost(&job);
        if let Some(old) = self.jobs.insert(id, job) {
            self.live_bytes -= job_cost(&old);
        }
        self.place(id, state);
    }

    /// Puts a job (already in `jobs`, detached from every index) into `state`.
    fn place(&mut self, id: u64, state: State) {
        let job = self.jobs.get_mut(&id).expect("job exists");
        job.state = state;
        match state {
            State::Ready => {
                let key = (Reverse(job.priority), self.next_seq);
                self.next_seq += 1;
                self.ready.insert(key, id);
                self.ready_key.insert(id, key);
            }
            State::Delayed(t) => {
                self.delayed.insert((t, id));
            }
            State::InFlight(t) => {
                self.in_flight.insert((t, id));
            }
            State::Dead => {
                self.dead.insert(id);
            }
        }
    }

    fn detach(&mut self, id: u64) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        match job.state {
            State::Ready => {
                if let Some(k) = self.ready_key.remove(&id) {
                    self.ready.remove(&k);
                }
            }
            State::Delayed(t) => {
                self.delayed.remove(&(t, id));
            }
            State::InFlight(t) => {
                self.in_flight.remove(&(t, id));
            }
            State::Dead => {
                self.dead.remove(&id);
            }
        }
    }

    fn remove(&mut self, id: u64) {
        self.detach(id);
        if let Some(old) = self.jobs.remove(&id) {
            self.live_bytes -= job_cost(&old);
        }
    }

    /// Moves a job to `state` with `attempt` deliveries, and logs it.
    fn set_state(&mut self, id: u64, state: State, attempt: u32) {
        self.detach(id);
        self.jobs.get_mut(&id).expect("job exists").attempt = attempt;
        self.place(id, state);
        self.log_state(id, state, attempt);
    }

    /// A delivery failed: retry after a backoff, or dead-letter it.
    fn fail(&mut self, id: u64, now: i64, delay_override: Option<u64>) {
        let attempt = self.jobs[&id].attempt;
        let exhausted = self.policy.max_attempts > 0 && attempt >= self.policy.max_attempts;
        let state = if exhausted {
            State::Dead
        } else {
            match delay_override.unwrap_or_else(|| self.policy.backoff_ms(attempt)) {
                0 => State::Ready,
                d => State::Delayed(now + d as i64),
            }
        };
        self.set_state(id, state, attempt);
    }

    /// Applies every transition whose time has come.
    fn promote(&mut self, now: i64) {
        while let Some(&(t, id)) = self.delayed.first() {
            if t > now {
                break;
            }
            // Deterministic from the logged due time, so not logged itself.
            self.detach(id);
            self.place(id, State::Ready);
        }
        while let Some(&(t, id)) = self.in_flight.first() {
            if t > now {
                break;
            }
            self.fail(id, now, None);
        }
    }

    /// When the next time-driven transition is due (ms since epoch).
    fn next_due(&self) -> Option<i64> {
        let d = self.delayed.first().map(|(t, _)| *t);
        let f = self.in_flight.first().map(|(t, _)| *t);
        match (d, f) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---- write-ahead log ----

    fn write(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        let Some(log) = self.log.as_mut() else { return };
        if self.log_error.is_some() {
            return;
        }
        match log.append(encode) {
            Ok((_, t)) => self.ticket = t,
            Err(e) => self.log_error = Some(e),
        }
    }

    fn log_put(&mut self, job: &JobRec, state: State) {
        self.write(|b| encode_put(b, job, state));
    }

    fn log_state(&mut self, id: u64, state: State, attempt: u32) {
        self.write(|b| {
            b.push(W_STATE);
            b.extend_from_slice(&id.to_le_bytes());
            b.extend_from_slice(&attempt.to_le_bytes());
            encode_state(b, state);
        });
    }

    fn log_remove(&mut self, id: u64) {
        self.write(|b| {
            b.push(W_REMOVE);
            b.extend_from_slice(&id.to_le_bytes());
        });
    }

    fn log_policy(&mut self) {
        let p = self.policy;
        self.write(|b| encode_policy(b, &p));
    }

    fn replay(&mut self, body: &[u8]) -> std::result::Result<(), codec::Corrupt> {
        let mut r = Reader::new(body);
        match r.u8()? {
            W_PUT => {
                let id = r.u64()?;
                let job = JobRec {
                    id,
                    priority: r.i32()?,
                    enqueued_ms: r.i64()?,
                    attempt: r.u32()?,
                    payload: r.owned()?,
                    headers: r.headers()?,
                    state: State::Dead,
                };
                let state = decode_state(&mut r)?;
                // Ids come from next_id, so the largest can never have been
                // written: a record holding it is damage, not a job.
                let next = id.checked_add(1).ok_or(codec::Corrupt)?;
                self.remove(id);
                self.insert(job, state);
                self.next_id = self.next_id.max(next);
            }
            W_STATE => {
                let id = r.u64()?;
                let attempt = r.u32()?;
                let state = decode_state(&mut r)?;
                if self.jobs.contains_key(&id) {
                    self.detach(id);
                    self.jobs.get_mut(&id).expect("checked").attempt = attempt;
                    self.place(id, state);
                }
            }
            W_REMOVE => {
                let id = r.u64()?;
                let next = id.checked_add(1).ok_or(codec::Corrupt)?;
                self.remove(id);
                self.next_id = self.next_id.max(next);
            }
            W_POLICY => {
                self.policy = RetryPolicy {
                    max_attempts: r.u32()?,
                    initial_backoff_ms: r.u64()?,
                    max_backoff_ms: r.u64()?,
                    multiplier: r.f64()?,
                };
            }
            _ => return Err(codec::Corrupt),
        }
        Ok(())
    }

    /// Rewrites the log as one record per live job once it is mostly history.
    fn compact_if_large(&mut self) -> Result<()> {
        let Some(log) = self.log.as_mut() else { return Ok(()) };
        let (policy, jobs, ready_key, next_id) = (self.policy, &self.jobs, &self.ready_key, self.next_id);
        log.compact_if_due(self.live_bytes, |buf| {
            codec::put_frame(buf, |b| encode_policy(b, &policy));
            // Ready jobs in queue order so FIFO survives the rewrite.
            let mut order: Vec<&JobRec> = jobs.values().collect();
            order.sort_by_key(|j| (ready_key.get(&j.id).map(|k| k.1).unwrap_or(0), j.id));
            for j in order {
                codec::put_frame(buf, |b| encode_put(b, j, j.state));
            }
            // Keep next_id monotonic across the rewrite with a tombstone.
            let last = next_id - 1;
            codec::put_frame(buf, |b| {
                b.push(W_REMOVE);
                b.extend_from_slice(&last.to_le_bytes());
            });
        })
    }
}

fn encode_put(b: &mut Vec<u8>, job: &JobRec, state: State) {
    b.push(W_PUT);
    b.extend_from_slice(&job.id.to_le_bytes());
    b.extend_from_slice(&job.priority.to_le_bytes());
    b.extend_from_slice(&job.enqueued_ms.to_le_bytes());
    b.extend_from_slice(&job.attempt.to_le_bytes());
    codec::put_bytes(b, &job.payload);
    codec::put_headers(b, &job.headers);
    encode_state(b, state);
}

fn encode_policy(b: &mut Vec<u8>, p: &RetryPolicy) {
    b.push(W_POLICY);
    b.extend_from_slice(&p.max_attempts.to_le_bytes());
    b.extend_from_slice(&p.initial_backoff_ms.to_le_bytes());
    b.extend_from_slice(&p.max_backoff_ms.to_le_bytes());
    b.extend_from_slice(&p.multiplier.to_bits().to_le_bytes());
}

fn encode_state(b: &mut Vec<u8>, s: State) {
    let (tag, t) = match s {
        State::Ready => (0u8, 0i64),
        State::Delayed(t) => (1, t),
        State::InFlight(t) => (2, t),
        State::Dead => (3, 0),
    };
    b.push(tag);
    b.extend_from_slice(&t.to_le_bytes());
}

fn decode_state(r: &mut Reader<'_>) -> std::result::Result<State, codec::Corrupt> {
    let tag = r.u8()?;
    let t = r.i64()?;
    Ok(match tag {
        0 => State::Ready,
        1 => State::Delayed(t),
        2 => State::InFlight(t),
        3 => State::Dead,
        _ => return Err(codec::Corrupt),
    })
}
