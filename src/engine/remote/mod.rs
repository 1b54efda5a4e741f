//! The remote engine: a gRPC client of `flowmesh serve`. One HTTP/2 channel
//! carries every operation of a client; publishes are pipelined over one
//! bidirectional stream (many in flight, answers matched by id); queue
//! reserve long-polls on the broker; subscriptions and watches are
//! server-streamed with HTTP/2 flow control; every call has a deadline.
//! A URL may list several brokers in front of the same data: the client
//! fails over between them (see [`brokers`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Endpoint;
use tonic::{Request, Streaming};

mod brokers;
mod tls;

use brokers::{Brokers, Clients};

use crate::backoff::Backoff;
use crate::engine::connection::{
    report_breaker, supervise, CallPolicy, CircuitBreaker, ConnState, ConnectionState, Retry,
};
use crate::engine::EngineConfig;
use crate::engine::*;
use crate::error::{Error, Result};
use crate::wire::{self, pb};

/// Publish requests queued for the stream before callers wait.
const PUBLISH_QUEUE: usize = 1024;

type Reply = oneshot::Sender<Result<Vec<Position>>>;

/// One open publish stream and the requests waiting for their answers.
struct PublishLink {
    tx: mpsc::Sender<pb::PublishRequest>,
    pending: Arc<Mutex<HashMap<u64, Reply>>>,
    alive: Arc<AtomicBool>,
    /// The broker it goes to.
    at: usize,
}

/// The sending end of a publish link, with the broker it goes to.
type LinkEnd = (mpsc::Sender<pb::PublishRequest>, Arc<Mutex<HashMap<u64, Reply>>>, usize);

pub struct RemoteEngine {
    brokers: Arc<Brokers>,
    timeout: Duration,
    backoff: Backoff,
    link: tokio::sync::Mutex<Option<PublishLink>>,
    next_id: AtomicU64,
    /// Deadlines, breaker, retries and the connection state of every call.
    policy: CallPolicy,
    /// Message ids `<producer>-<sequence>` make publishes safe to retry: the
    /// broker stores a retried record once.
    producer: u64,
    sequence: AtomicU64,
    supervisor: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The bearer token every call sends (shared by every channel).
    auth: wire::TokenInterceptor,
    /// The connect option `token`: what a logout goes back to.
    base_token: Option<String>,
}

/// The request types whose answer carries the token to send from then on.
fn token_of_answer(request: &serde_json::Value, answer: &serde_json::Value) -> Option<Option<String>> {
    let text = |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_str).map(str::to_owned);
    match request.get("type").and_then(serde_json::Value::as_str)? {
        "identity.login" | "identity.login_with_secret" => text(answer, "token").map(Some),
        "auth.login" => text(request, "token").map(Some),
        "identity.logout" | "auth.logout" => Some(None),
        _ => None,
    }
}

/// Logs in with the connect options' credentials and sends the session
/// token from then on (after connect and after every reconnect).
async fn log_in(
    brokers: &Brokers,
    auth: &wire::TokenInterceptor,
    login: &crate::engine::config::Login,
    left: Duration,
) -> Result<()> {
    let (_, clients) = brokers.pick();
    let mut client = clients.identity.clone();
    let answer = status(client.call(timed(pb::IdentityRequest { json: login.request().to_string() }, left)).await)?;
    let answer: serde_json::Value = serde_json::from_str(&answer.json)
        .map_err(|e| Error::Internal(format!("the broker's login answer is not JSON: {e}")))?;
    let token = answer.get("token").and_then(serde_json::Value::as_str);
    let token = token.ok_or_else(|| Error::Internal("the broker's login answer has no token".into()))?;
    auth.set(Some(token))
}

impl Drop for RemoteEngine {
    fn drop(&mut self) {
        if let Some(task) = self.supervisor.lock().unwrap().take() {
            task.abort();
        }
    }
}

/// A request whose deadline is what is left of the call's budget.
fn timed<T>(msg: T, left: Duration) -> Request<T> {
    let mut r = Request::new(msg);
    r.set_timeout(left.max(Duration::from_millis(1)));
    r
}

/// One unary RPC under the call policy: `rpc!(self, Retry::Safe, streams.read(req))`.
macro_rules! rpc {
    ($self:ident, $retry:expr, $client:ident . $method:ident ( $req:expr )) => {{
        let req = $req;
        $self
            .policy
            .run($retry, Duration::ZERO, |left| {
                let (at, clients) = $self.brokers.pick();
                let mut client = clients.$client.clone();
                let req = timed(req.clone(), left);
                async move {
                    let r = status(client.$method(req).await);
                    $self.brokers.observe(at, &r);
                    r
                }
            })
            .await
    }};
}

/// The channel settings every remote transport shares: keepalive pings so
/// a dead peer is noticed, no Nagle delay.
pub(crate) fn endpoint(http: &str, url: &str, connect_timeout: Duration) -> Result<Endpoint> {
    Ok(Endpoint::from_shared(http.to_owned())
        .map_err(|e| Error::invalid(format!("invalid broker URL {url:?}: {e}")))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true))
}

impl RemoteEngine {
    pub async fn connect(url: &str, tls: bool, cfg: &EngineConfig) -> Result<Arc<dyn Engine>> {
        let scheme = if tls { "grpcs://" } else { "grpc://" };
        let hosts = brokers::parse_hosts(url, scheme)?;
        let connect_timeout = Duration::from_millis(cfg.connect_timeout_ms.max(1));
        let auth = wire::TokenInterceptor::new(cfg.token.as_deref())?;
        let mut endpoints = Vec::with_capacity(hosts.len());
        for host in &hosts {
            let http = format!("{}://{host}", if tls { "https" } else { "http" });
            let mut endpoint = endpoint(&http, url, connect_timeout)?;
            if tls {
                endpoint = tls::configure(endpoint, url, cfg, connect_timeout)?;
            }
            endpoints.push(endpoint);
        }
        // The first broker that answers becomes current; the others connect
        // when the client first moves to them. The connect budget is shared.
        let deadline = tokio::time::Instant::now() + connect_timeout;
        let mut clients = Vec::with_capacity(hosts.len());
        let mut current = None;
        let mut last_error = None;
        for (i, endpoint) in endpoints.iter().enumerate() {
            if current.is_some() {
                clients.push(Clients::new(InterceptedService::new(endpoint.connect_lazy(), auth.clone())));
                continue;
            }
            let shown = if hosts.len() == 1 { url.to_owned() } else { format!("{scheme}{}", hosts[i]) };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now()) / (hosts.len() - i) as u32;
            match Self::first_contact(endpoint, &auth, &shown, tls, left).await {
                Ok(c) => {
                    current = Some(i);
                    clients.push(c);
                }
                Err(e) => {
                    tracing::debug!(broker = %shown, error = %e, "broker did not answer at connect");
                    last_error = Some(e);
                    clients.push(Clients::new(InterceptedService::new(endpoint.connect_lazy(), auth.clone())));
                }
            }
        }
        let Some(current) = current else {
            return Err(last_error.unwrap_or_else(|| Error::invalid(format!("broker URL {url:?} names no broker"))));
        };
        Self::assemble(Brokers::new(hosts, clients, current), cfg, auth).await
    }

    /// The engine on one connected channel, whatever transport carries it
    /// (a WebSocket tunnel in `engine::ws`).
    pub(crate) async fn over(
        url: &str,
        channel: tonic::transport::Channel,
        cfg: &EngineConfig,
    ) -> Result<Arc<dyn Engine>> {
        let tls = url.starts_with("wss://");
        let auth = wire::TokenInterceptor::new(cfg.token.as_deref())?;
        let clients = Clients::new(InterceptedService::new(channel, auth.clone()));
        // A TLS/plaintext mismatch often surfaces only on the first call.
        let left = Duration::from_millis(cfg.connect_timeout_ms.max(1));
        let mut health = clients.health.clone();
        status(health.check(timed(pb::CheckRequest {}, left)).await).map_err(|e| tls::first_call_error(url, tls, e))?;
        Self::assemble(Brokers::new(vec![url.to_owned()], vec![clients], 0), cfg, auth).await
    }

    /// The engine over its brokers: call policy, breaker, and the
    /// supervisor that probes the current broker and moves on when it fails.
    async fn assemble(brokers: Brokers, cfg: &EngineConfig, auth: wire::TokenInterceptor) -> Result<Arc<dyn Engine>> {
        if let Some(login) = &cfg.login {
            log_in(&brokers, &auth, login, Duration::from_millis(cfg.request_timeout_ms.max(1))).await?;
        }
        let state = Arc::new(ConnectionState::new(ConnState::Connecting));
        let engine = RemoteEngine {
            brokers: Arc::new(brokers),
            timeout: Duration::from_millis(cfg.request_timeout_ms.max(1)),
            backoff: cfg.reconnect,
            link: tokio::sync::Mutex::new(None),
            next_id: AtomicU64::new(1),
            policy: CallPolicy {
                state: state.clone(),
                breaker: Arc::new(CircuitBreaker::new(
                    cfg.breaker_threshold,
                    Duration::from_millis(cfg.breaker_timeout_ms),
                )),
                timeout: Duration::from_millis(cfg.request_timeout_ms.max(1)),
                max_retries: cfg.max_retries,
            },
            producer: crate::backoff::pseudo_random() | 1,
            sequence: AtomicU64::new(0),
            supervisor: Mutex::new(None),
            auth: auth.clone(),
            base_token: cfg.token.clone(),
        };
        state.set(ConnState::Connected, None);
        let login = cfg.login.clone();
        let brokers = engine.brokers.clone();
        let heartbeat = (cfg.heartbeat_ms > 0).then(|| Duration::from_millis(cfg.heartbeat_ms));
        // A probe answers within two heartbeats (a dead peer holds no socket
        // error, it just stops answering; a busy broker or machine may miss
        // one beat) or the request timeout.
        let probe_timeout = heartbeat.map_or(engine.timeout, |h| h * 2).min(engine.timeout);
        let backoff = cfg.reconnect;
        let breaker = engine.policy.breaker.clone();
        let task = tokio::spawn(async move {
            // A probe that fails moves the client to the next broker, so
            // the reconnect loop tries each listed broker in turn.
            // After a failed probe the next good one logs in again (when
            // credentials are set) before the link counts as back.
            let relogin = Arc::new(AtomicBool::new(false));
            let probe = || {
                let (at, clients) = brokers.pick();
                let mut health = clients.health.clone();
                let brokers = brokers.clone();
                let (auth, login, relogin) = (auth.clone(), login.clone(), relogin.clone());
                async move {
                    let r = status(health.check(timed(pb::CheckRequest {}, probe_timeout)).await).map(|_| ());
                    if r.is_err() {
                        brokers.failed(at);
                        relogin.store(true, Ordering::Release);
                        return r;
                    }
                    if let Some(login) = login.filter(|_| relogin.load(Ordering::Acquire)) {
                        match log_in(&brokers, &auth, &login, probe_timeout).await {
                            Ok(()) => relogin.store(false, Ordering::Release),
                            // Credentials no longer accepted: the link is up,
                            // calls answer UNAUTHORIZED.
                            Err(e @ Error::Unauthorized(_)) => {
                                tracing::warn!(error = %e, "login after reconnect refused");
                                relogin.store(false, Ordering::Release);
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    r
                }
            };
            // The restored link closes a breaker the outage opened.
            let restored = || {
                breaker.close();
                report_breaker(&breaker, &state);
            };
            supervise(&state, heartbeat, backoff, probe, restored).await;
        });
        *engine.supervisor.lock().unwrap() = Some(task);
        Ok(Arc::new(engine))
    }

    /// Connects to one broker and asks it for its health, within `left`.
    async fn first_contact(
        endpoint: &Endpoint,
        auth: &wire::TokenInterceptor,
        url: &str,
        tls: bool,
        left: Duration,
    ) -> Result<Clients> {
        let started = tokio::time::Instant::now();
        let channel = tokio::time::timeout(left, endpoint.connect())
            .await
            .map_err(|_| Error::Timeout(format!("connecting to {url} took longer than {left:?}")))?
            .map_err(|e| tls::connect_error(url, tls, &e))?;
        let clients = Clients::new(InterceptedService::new(channel, auth.clone()));
        let left = left.saturating_sub(started.elapsed());
        // A TLS/plaintext mismatch often surfaces only on the first call.
        let mut health = clients.health.clone();
        status(health.check(timed(pb::CheckRequest {}, left)).await).map_err(|e| tls::first_call_error(url, tls, e))?;
        Ok(clients)
    }

    /// The live publish stream to the current broker, opened (again) if needed.
    async fn publish_link(&self, left: Duration) -> Result<LinkEnd> {
        let mut link = self.link.lock().await;
        let (at, clients) = self.brokers.pick();
        if let Some(l) = link.as_ref().filter(|l| l.alive.load(Ordering::Acquire) && l.at == at) {
            return Ok((l.tx.clone(), l.pending.clone(), l.at));
        }
        let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
        let mut client = clients.streams.clone();
        let opened = tokio::time::timeout(left, client.publish(ReceiverStream::new(rx)))
            .await
            .map_err(|_| Error::Timeout("opening the publish stream timed out".into()))?
            .map_err(|s| wire::from_status(&s));
        self.brokers.observe(at, &opened);
        let opened = opened?;
        let mut inbound = opened.into_inner();
        let pending: Arc<Mutex<HashMap<u64, Reply>>> = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        let (p, a) = (pending.clone(), alive.clone());
        tokio::spawn(async move {
            let end = loop {
                match inbound.message().await {
                    Ok(Some(resp)) => {
                        let Some(reply) = p.lock().unwrap().remove(&resp.id) else {
                            continue;
                        };
                        let result = match resp.error {
                            Some(e) => Err(Error::from_code(e.code, e.message)),
                            None => Ok(resp.positions.into_iter().map(Position::from).collect()),
                        };
                        let _ = reply.send(result);
                    }
                    Ok(None) => break Error::Disconnected("broker closed the publish stream".into()),
                    Err(s) => break wire::from_status(&s),
                };
            };
            a.store(false, Ordering::Release);
            let end = match end {
                Error::Disconnected(m) | Error::Unavailable(m) | Error::Internal(m) => Error::Disconnected(m),
                other => other,
            };
            // Whatever was in flight is unknown to the client now.
            for (_, reply) in p.lock().unwrap().drain() {
                let _ = reply.send(Err(end.clone()));
            }
        });
        *link = Some(PublishLink { tx: tx.clone(), pending: pending.clone(), alive, at });
        Ok((tx, pending, at))
    }
}

impl RemoteEngine {
    /// One attempt at a publish over the pipelined stream.
    async fn publish_once(
        &self,
        stream: &str,
        records: Vec<pb::Record>,
        tier: &str,
        left: Duration,
    ) -> Result<Vec<Position>> {
        let (tx, pending, at) = self.publish_link(left).await?;
        let r = self.publish_on(stream, records, tier, left, tx, pending).await;
        self.brokers.observe(at, &r);
        r
    }

    /// A memory-tier publish without acknowledgement: queued on the
    /// pipelined stream, no answer awaited (the broker sends none).
    async fn publish_unacked(&self, stream: &str, record: pb::Record, left: Duration) -> Result<Vec<Position>> {
        let (tx, _, _) = self.publish_link(left).await?;
        let req = pb::PublishRequest {
            id: 0,
            stream: stream.into(),
            records: vec![record],
            tier: DeliveryTier::Memory.name().into(),
            require_ack: false,
        };
        tx.send(req).await.map_err(|_| Error::Disconnected("publish stream to the broker is closed".into()))?;
        Ok(Vec::new())
    }

    async fn publish_on(
        &self,
        stream: &str,
        records: Vec<pb::Record>,
        tier: &str,
        left: Duration,
        tx: mpsc::Sender<pb::PublishRequest>,
        pending: Arc<Mutex<HashMap<u64, Reply>>>,
    ) -> Result<Vec<Position>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        pending.lock().unwrap().insert(id, reply);
        // A memory-tier request that gets here wants its answer.
        let require_ack = tier == DeliveryTier::Memory.name();
        let req = pb::PublishRequest { id, stream: stream.into(), records, tier: tier.into(), require_ack };
        if tx.send(req).await.is_err() {
            pending.lock().unwrap().remove(&id);
            return Err(Error::Disconnected("publish stream to the broker is closed".into()));
        }
        match tokio::time::timeout(left, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Disconnected("publish stream ended before the broker answered".into())),
            Err(_) => {
                pending.lock().unwrap().remove(&id);
                Err(Error::Timeout(format!("no publish acknowledgement within {:?}", self.timeout)))
            }
        }
    }
}

impl RemoteEngine {
    /// A stored publish: ids make it safe to send again after a lost link.
    async fn publish_tier(&self, stream: &str, records: Vec<Record>, tier: DeliveryTier) -> Result<Vec<Position>> {
        let records: Vec<pb::Record> = records
            .into_iter()
            .map(|mut r| {
                if r.msg_id.is_none() {
                    let seq = self.sequence.fetch_add(1, Ordering::Relaxed);
                    r.msg_id = Some(format!("{:016x}-{seq}", self.producer));
                }
                r.into()
            })
            .collect();
        // An empty tier is what brokers from before tiers understand.
        let tier = if tier == DeliveryTier::Persistent { "" } else { tier.name() };
        self.policy
            .run(Retry::Safe, Duration::ZERO, |left| self.publish_once(stream, records.clone(), tier, left))
            .await
    }

    async fn list(&self, kind: pb::ResourceKind, prefix: &str) -> Result<Vec<String>> {
        let req = pb::ListResourcesRequest { kind: kind as i32, prefix: prefix.into() };
        Ok(rpc!(self, Retry::Safe, resources.list(req))?.names)
    }

    /// Not repeated after a lost link: a delete that did go through would
    /// then answer NotFound.
    async fn delete(&self, kind: pb::ResourceKind, name: &str) -> Result<()> {
        let req = pb::DeleteResourceRequest { kind: kind as i32, name: name.into() };
        rpc!(self, Retry::Never, resources.delete(req)).map(|_| ())
    }

    async fn purge(&self, kind: pb::ResourceKind, name: &str) -> Result<u64> {
        let req = pb::PurgeResourceRequest { kind: kind as i32, name: name.into() };
        Ok(rpc!(self, Retry::Never, resources.purge(req))?.removed)
    }
}

fn status<T>(r: std::result::Result<tonic::Response<T>, tonic::Status>) -> Result<T> {
    r.map(tonic::Response::into_inner).map_err(|s| wire::from_status(&s))
}

#[async_trait]
impl Engine for RemoteEngine {
    fn connection(&self) -> Option<Arc<ConnectionState>> {
        Some(self.policy.state.clone())
    }

    async fn list_streams(&self, prefix: &str) -> Result<Vec<String>> {
        self.list(pb::ResourceKind::Stream, prefix).await
    }

    async fn list_queues(&self, prefix: &str) -> Result<Vec<String>> {
        self.list(pb::ResourceKind::Queue, prefix).await
    }

    async fn list_buckets(&self, prefix: &str) -> Result<Vec<String>> {
        self.list(pb::ResourceKind::Bucket, prefix).await
    }

    async fn delete_stream(&self, stream: &str) -> Result<()> {
        self.delete(pb::ResourceKind::Stream, stream).await
    }

    async fn delete_queue(&self, queue: &str) -> Result<()> {
        self.delete(pb::ResourceKind::Queue, queue).await
    }

    async fn delete_bucket(&self, bucket: &str) -> Result<()> {
        self.delete(pb::ResourceKind::Bucket, bucket).await
    }

    async fn purge_stream(&self, stream: &str) -> Result<u64> {
        self.purge(pb::ResourceKind::Stream, stream).await
    }

    async fn purge_queue(&self, queue: &str) -> Result<u64> {
        self.purge(pb::ResourceKind::Queue, queue).await
    }

    async fn extend(&self, queue: &str, job_id: u64, visibility_ms: u64) -> Result<()> {
        // Setting a deadline from now is safe to repeat.
        let req = pb::ExtendRequest { queue: queue.into(), job_id, visibility_ms };
        rpc!(self, Retry::Safe, queues.extend(req)).map(|_| ())
    }

    async fn update_stream(&self, stream: &str, update: StreamUpdate) -> Result<StreamConfig> {
        let req = pb::UpdateStreamRequest {
            stream: stream.into(),
            partitions: update.partitions,
            max_age_ms: update.max_age_ms,
            max_bytes: update.max_bytes,
            max_messages: update.max_messages,
        };
        let resp = rpc!(self, Retry::Safe, resources.update_stream(req))?;
        resp.config.map(Into::into).ok_or_else(|| Error::Internal("broker sent no stream configuration".into()))
    }

    async fn health(&self) -> Result<()> {
        rpc!(self, Retry::Safe, health.check(pb::CheckRequest {})).map(|_| ())
    }

    async fn identity(&self, request: &str) -> Result<String> {
        let parsed: serde_json::Value = serde_json::from_str(request)
            .map_err(|e| Error::invalid(format!("the identity request is not valid JSON: {e}")))?;
        if !parsed.is_object() {
            return Err(Error::invalid("the identity request must be a JSON object with a type"));
        }
        let req = pb::IdentityRequest { json: request.to_owned() };
        let answer = rpc!(self, Retry::Never, identity.call(req))?.json;
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&answer) {
            if let Some(token) = token_of_answer(&parsed, &v) {
                self.auth.set(token.as_deref().or(self.base_token.as_deref()))?;
            }
        }
        Ok(answer)
    }

    fn set_token(&self, token: Option<&str>) -> Result<()> {
        self.auth.set(token.or(self.base_token.as_deref()))
    }

    async fn ready(&self) -> Result<()> {
        rpc!(self, Retry::Safe, health.ready(pb::ReadyRequest {})).map(|_| ())
    }

    async fn create_stream(&self, stream: &str, config: StreamConfig) -> Result<()> {
        let req = pb::CreateStreamRequest { stream: stream.into(), config: Some(config.into()) };
        rpc!(self, Retry::Never, streams.create_stream(req)).map(|_| ())
    }

    async fn publish(&self, stream: &str, records: Vec<Record>) -> Result<Vec<Position>> {
        self.publish_tier(stream, records, DeliveryTier::Persistent).await
    }

    async fn publish_replicated(&self, stream: &str, records: Vec<Record>) -> Result<Vec<Position>> {
        self.publish_tier(stream, records, DeliveryTier::Replicated).await
    }

    async fn publish_live(&self, stream: &str, record: Record, ack: bool) -> Result<()> {
        // At most once: never sent again after a lost link.
        let record: pb::Record = record.into();
        let tier = DeliveryTier::Memory.name();
        if ack {
            self.policy
                .run(Retry::Never, Duration::ZERO, |left| self.publish_once(stream, vec![record.clone()], tier, left))
                .await?;
        } else {
            self.policy
                .run(Retry::Never, Duration::ZERO, |left| self.publish_unacked(stream, record.clone(), left))
                .await?;
        }
        Ok(())
    }

    async fn read(&self, stream: &str, partition: u32, offset: u64, max: usize) -> Result<Vec<Message>> {
        let req = pb::ReadRequest {
            stream: stream.into(),
            partition,
            offset,
            max_messages: max.min(u32::MAX as usize) as u32,
        };
        let resp = rpc!(self, Retry::Safe, streams.read(req))?;
        Ok(resp.messages.into_iter().map(Into::into).collect())
    }

    async fn stream_info(&self, stream: &str) -> Result<StreamInfo> {
        let resp = rpc!(self, Retry::Safe, streams.info(pb::StreamInfoRequest { stream: stream.into() }))?;
        Ok(StreamInfo {
            config: resp.config.map(Into::into).unwrap_or_default(),
            partitions: resp
                .partitions
                .into_iter()
                .map(|p| PartitionInfo { partition: p.partition, earliest: p.earliest, latest: p.latest })
                .collect(),
        })
    }

    async fn subscribe(&self, stream: &str, spec: SubscribeSpec) -> Result<MessageStream> {
        if spec.start == StartFrom::Committed && spec.group.is_none() {
            return Err(Error::invalid("start=committed needs a consumer group"));
        }
        let info = match self.stream_info(stream).await {
            Err(Error::NotFound(_)) => {
                // Subscribing creates the stream, as on the embedded engine.
                match self.create_stream(stream, StreamConfig::default()).await {
                    Ok(()) | Err(Error::AlreadyExists(_)) => self.stream_info(stream).await?,
                    Err(e) => return Err(e),
                }
            }
            other => other?,
        };
        let parts: Vec<PartitionInfo> = match spec.partition {
            Some(p) => vec![*info.partitions.get(p as usize).ok_or_else(|| {
                Error::NotFound(format!("stream {stream} has no partition {p} (it has {})", info.partitions.len()))
            })?],
            None => info.partitions,
        };
        // One feed per partition, each starting at an explicit offset, so
        // each can resume exactly where it stopped after a reconnect.
        let mut feeds = Vec::with_capacity(parts.len());
        for p in parts {
            let next = match spec.start {
                StartFrom::Earliest => p.earliest,
                StartFrom::Latest => p.latest,
                StartFrom::Offset(o) => o,
                StartFrom::Committed => {
                    let group = spec.group.as_deref().unwrap_or_default();
                    match self.get_offset(stream, group, p.partition).await {
                        Ok(c) => c + 1,
                        Err(Error::NotFound(_)) => p.earliest,
                        Err(e) => return Err(e),
                    }
                }
            };
            let mut feed = PartitionFeed {
                brokers: self.brokers.clone(),
                at: 0,
                stream: stream.to_owned(),
                partition: p.partition,
                next,
                open_timeout: self.timeout,
                backoff: self.backoff,
                inbound: None,
                buffer: VecDeque::new(),
                done: false,
            };
            feed.open().await.map_err(|s| wire::from_status(&s))?;
            feeds.push(Box::pin(futures::stream::unfold(feed, |mut f| async move {
                let item = f.next_item().await?;
                Some((item, f))
            })));
        }
        Ok(Box::pin(futures::stream::select_all(feeds)))
    }

    async fn commit_offset(&self, stream: &str, group: &str, partition: u32, offset: u64) -> Result<()> {
        let req = pb::CommitOffsetRequest { stream: stream.into(), group: group.into(), partition, offset };
        rpc!(self, Retry::Safe, streams.commit_offset(req)).map(|_| ())
    }

    async fn get_offset(&self, stream: &str, group: &str, partition: u32) -> Result<u64> {
        let req = pb::GetOffsetRequest { stream: stream.into(), group: group.into(), partition };
        rpc!(self, Retry::Safe, streams.get_offset(req)).map(|r| r.offset)
    }

    async fn group_state(&self, stream: &str, group: &str) -> Result<GroupState> {
        let req = pb::GroupStateRequest { stream: stream.into(), group: group.into() };
        let r = rpc!(self, Retry::Safe, streams.group_state(req))?;
        Ok(GroupState {
            group: r.group,
            partitions: r
                .partitions
                .into_iter()
                .map(|p| GroupPartitionState {
                    partition: p.partition,
                    committed: p.committed,
                    latest: p.latest,
                    lag: p.lag,
                })
                .collect(),
        })
    }

    async fn enqueue(&self, queue: &str, record: Record, delay_ms: u64, priority: i32) -> Result<u64> {
        let req = pb::EnqueueRequest { queue: queue.into(), record: Some(record.into()), delay_ms, priority };
        rpc!(self, Retry::Never, queues.enqueue(req)).map(|r| r.job_id)
    }

    async fn reserve(&self, queue: &str, max: usize, visibility_ms: u64, wait_ms: u64) -> Result<Vec<Job>> {
        let req = pb::ReserveRequest {
            queue: queue.into(),
            max_jobs: max.min(u32::MAX as usize) as u32,
            visibility_ms,
            wait_ms,
        };
        // Reserving twice could hand out two jobs: never retried.
        let resp = self
            .policy
            .run(Retry::Never, Duration::from_millis(wait_ms), |left| {
                let (at, clients) = self.brokers.pick();
                let mut queues = clients.queues.clone();
                let req = timed(req.clone(), left);
                async move {
                    let r = status(queues.reserve(req).await);
                    self.brokers.observe(at, &r);
                    r
                }
            })
            .await?;
        Ok(resp.jobs.into_iter().map(Into::into).collect())
    }

    async fn ack(&self, queue: &str, job_id: u64) -> Result<()> {
        let req = pb::AckRequest { queue: queue.into(), job_id };
        rpc!(self, Retry::Never, queues.ack(req)).map(|_| ())
    }

    async fn nack(&self, queue: &str, job_id: u64, delay_ms: u64) -> Result<()> {
        let req = pb::NackRequest { queue: queue.into(), job_id, delay_ms };
        rpc!(self, Retry::Never, queues.nack(req)).map(|_| ())
    }

    async fn queue_stats(&self, queue: &str) -> Result<QueueStats> {
        let r = rpc!(self, Retry::Safe, queues.stats(pb::StatsRequest { queue: queue.into() }))?;
        Ok(QueueStats { pending: r.pending, in_flight: r.in_flight, delayed: r.delayed, dead: r.dead })
    }

    async fn set_retry_policy(&self, queue: &str, policy: RetryPolicy) -> Result<()> {
        let req = pb::SetRetryPolicyRequest { queue: queue.into(), policy: Some(policy.into()) };
        rpc!(self, Retry::Safe, queues.set_retry_policy(req)).map(|_| ())
    }

    async fn get_retry_policy(&self, queue: &str) -> Result<RetryPolicy> {
        let req = pb::GetRetryPolicyRequest { queue: queue.into() };
        let r = rpc!(self, Retry::Safe, queues.get_retry_policy(req))?;
        Ok(r.policy.map(Into::into).unwrap_or_default())
    }

    async fn dlq_list(&self, queue: &str, max: usize) -> Result<Vec<Job>> {
        let req = pb::DlqListRequest { queue: queue.into(), max: max.min(u32::MAX as usize) as u32 };
        let r = rpc!(self, Retry::Safe, queues.dlq_list(req))?;
        Ok(r.jobs.into_iter().map(Into::into).collect())
    }

    async fn dlq_replay(&self, queue: &str, job_id: u64) -> Result<()> {
        let req = pb::DlqReplayRequest { queue: queue.into(), job_id };
        rpc!(self, Retry::Never, queues.dlq_replay(req)).map(|_| ())
    }

    async fn dlq_replay_all(&self, queue: &str, header: Option<(String, String)>) -> Result<u64> {
        let req = pb::DlqReplayAllRequest {
            queue: queue.into(),
            filter: header.map(|(key, value)| pb::Header { key, value }),
        };
        rpc!(self, Retry::Never, queues.dlq_replay_all(req)).map(|r| r.replayed)
    }

    async fn kv_set(&self, bucket: &str, key: &str, value: Bytes, ttl_ms: u64) -> Result<u64> {
        let req = pb::KvSetRequest { bucket: bucket.into(), key: key.into(), value, ttl_ms, expected_revision: None };
        rpc!(self, Retry::Never, kv.set(req)).map(|r| r.revision)
    }

    async fn kv_cas(&self, bucket: &str, key: &str, value: Bytes, expected: u64, ttl_ms: u64) -> Result<u64> {
        let req = pb::KvSetRequest {
            bucket: bucket.into(),
            key: key.into(),
            value,
            ttl_ms,
            expected_revision: Some(expected),
        };
        rpc!(self, Retry::Never, kv.set(req)).map(|r| r.revision)
    }

    async fn kv_get(&self, bucket: &str, key: &str) -> Result<KvEntry> {
        let req = pb::KvGetRequest { bucket: bucket.into(), key: key.into() };
        let r = rpc!(self, Retry::Safe, kv.get(req))?;
        Ok(KvEntry { key: key.into(), value: r.value, revision: r.revision })
    }

    async fn kv_txn(&self, ops: Vec<TxnOp>) -> Result<Vec<TxnResult>> {
        if ops.is_empty() {
            return Ok(Vec::new()); // nothing to ask the broker
        }
        // A transaction that writes is never sent twice: it could apply twice.
        let retry = if ops.iter().any(TxnOp::writes) { Retry::Never } else { Retry::Safe };
        let req = pb::KvTxnRequest { ops: wire::txn_ops_to_pb(ops) };
        let r = rpc!(self, retry, kv.txn(req))?;
        wire::txn_results_from_pb(r.results)
    }

    async fn kv_delete(&self, bucket: &str, key: &str) -> Result<bool> {
        let req = pb::KvDeleteRequest { bucket: bucket.into(), key: key.into() };
        rpc!(self, Retry::Never, kv.delete(req)).map(|r| r.deleted)
    }

    async fn kv_exists(&self, bucket: &str, key: &str) -> Result<bool> {
        let req = pb::KvExistsRequest { bucket: bucket.into(), key: key.into() };
        rpc!(self, Retry::Safe, kv.exists(req)).map(|r| r.exists)
    }

    async fn kv_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        let req = pb::KvKeysRequest { bucket: bucket.into(), prefix: prefix.into() };
        rpc!(self, Retry::Safe, kv.keys(req)).map(|r| r.keys)
    }

    async fn kv_watch(&self, bucket: &str, prefix: &str) -> Result<KvEventStream> {
        let mut feed = WatchFeed {
            brokers: self.brokers.clone(),
            at: 0,
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            after: None,
            open_timeout: self.timeout,
            backoff: self.backoff,
            inbound: None,
            done: false,
        };
        feed.open().await.map_err(|s| wire::from_status(&s))?;
        Ok(Box::pin(futures::stream::unfold(feed, |mut f| async move {
            let item = f.next_item().await?;
            Some((item, f))
        })))
    }
}

/// A KV watch that survives a lost link: it remembers the cursor of the
/// last change it delivered (or where it started) and, after a transport
/// failure, re-opens the watch from there with backoff; the broker replays
/// what happened meanwhile. If the broker can not (it restarted, or more
/// changed than it keeps), the watch ends with that Conflict error.
struct WatchFeed {
    brokers: Arc<Brokers>,
    /// The broker the watch is open on.
    at: usize,
    bucket: String,
    prefix: String,
    after: Option<pb::WatchCursor>,
    open_timeout: Duration,
    backoff: Backoff,
    inbound: Option<Streaming<pb::KvEvent>>,
    done: bool,
}

impl Reopen for WatchFeed {
    type Frame = pb::KvEvent;
    type Item = KvEvent;

    fn backoff(&self) -> Backoff {
        self.backoff
    }

    fn broker(&self) -> (&Brokers, usize) {
        (&self.brokers, self.at)
    }

    fn describe(&self) -> String {
        format!("watch on {}", self.bucket)
    }

    async fn open(&mut self) -> std::result::Result<(), tonic::Status> {
        let req =
            pb::KvWatchRequest { bucket: self.bucket.clone(), prefix: self.prefix.clone(), resume_after: self.after };
        let (at, clients) = self.brokers.pick();
        self.at = at;
        let mut client = clients.kv.clone();
        let opened = tokio::time::timeout(self.open_timeout, client.watch(Request::new(req)))
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("opening the watch timed out"))
            .and_then(|r| r)
            .inspect_err(|s| self.link_failed(s))?;
        self.inbound = Some(opened.into_inner());
        Ok(())
    }

    fn state(&mut self) -> (&mut Option<Streaming<pb::KvEvent>>, &mut bool) {
        (&mut self.inbound, &mut self.done)
    }

    fn take(&mut self, ev: pb::KvEvent) -> Option<Result<KvEvent>> {
        if ev.cursor.is_some() {
            self.after = ev.cursor;
        }
        if ev.op == pb::KvOp::Unspecified as i32 {
            return None; // the start marker: only its cursor matters
        }
        Some(wire::kv_event_from_pb(ev))
    }

    fn resumable(&self) -> bool {
        self.after.is_some()
    }

    fn warn_lost(&self, s: &tonic::Status) {
        tracing::warn!(bucket = %self.bucket, error = %s, "watch lost; resuming");
    }
}

/// One partition of a subscription that survives broker restarts: it
/// remembers the next offset and, after a transport failure, re-subscribes
/// from there with backoff, so nothing is lost or delivered twice.
struct PartitionFeed {
    brokers: Arc<Brokers>,
    /// The broker the subscription is open on.
    at: usize,
    stream: String,
    partition: u32,
    next: u64,
    open_timeout: Duration,
    backoff: Backoff,
    inbound: Option<Streaming<pb::SubscribeResponse>>,
    buffer: VecDeque<Message>,
    done: bool,
}

/// A server stream (subscription, watch) that re-opens itself from where it
/// stopped: `open` carries the feed's resume point.
trait Reopen {
    /// What the broker sends on the stream.
    type Frame;
    /// What the feed yields.
    type Item;

    fn backoff(&self) -> Backoff;
    /// The brokers and the one the feed is (or was last) open on.
    fn broker(&self) -> (&Brokers, usize);

    /// A link failure on the feed's broker: the next open goes elsewhere.
    fn link_failed(&self, s: &tonic::Status) {
        if transient(s) || s.code() == tonic::Code::DeadlineExceeded {
            let (brokers, at) = self.broker();
            brokers.failed(at);
        }
    }
    /// What the feed is, for messages.
    fn describe(&self) -> String;
    async fn open(&mut self) -> std::result::Result<(), tonic::Status>;

    /// The open stream (None while the link is down) and whether the feed ended.
    fn state(&mut self) -> (&mut Option<Streaming<Self::Frame>>, &mut bool);
    /// An item to deliver before reading the stream again (a buffered one).
    fn ready(&mut self) -> Option<Self::Item> {
        None
    }
    /// Takes one frame: an item to deliver, or None to read on.
    fn take(&mut self, frame: Self::Frame) -> Option<Result<Self::Item>>;
    /// Whether a lost link can be resumed (else the feed ends with its error).
    fn resumable(&self) -> bool {
        true
    }
    /// Logs a lost link about to be resumed.
    fn warn_lost(&self, s: &tonic::Status);

    /// The next item: reads the stream, re-opening it after a transport
    /// failure; None once the feed ended (after its error, if any).
    async fn next_item(&mut self) -> Option<Result<Self::Item>> {
        loop {
            if *self.state().1 {
                return None;
            }
            if let Some(item) = self.ready() {
                return Some(Ok(item));
            }
            let Some(inbound) = self.state().0.as_mut() else {
                if let Err(e) = self.reconnect().await {
                    *self.state().1 = true;
                    return Some(Err(e));
                }
                continue;
            };
            match inbound.message().await {
                Ok(Some(frame)) => {
                    if let Some(item) = self.take(frame) {
                        return Some(item);
                    }
                }
                Ok(None) => *self.state().0 = None, // broker ended the stream (shutting down)
                Err(s) if transient(&s) && self.resumable() => {
                    self.warn_lost(&s);
                    self.link_failed(&s);
                    *self.state().0 = None;
                }
                Err(s) => {
                    *self.state().1 = true;
                    return Some(Err(wire::from_status(&s)));
                }
            }
        }
    }

    /// Re-opens with the reconnect backoff until it works, the broker gives
    /// a real answer (an error that is not the link), or attempts run out.
    async fn reconnect(&mut self) -> Result<()> {
        let backoff = self.backoff();
        let mut attempt = 0;
        loop {
            attempt += 1;
            if backoff.exhausted(attempt) {
                return Err(Error::Disconnected(format!(
                    "{} gave up after {} reconnect attempts",
                    self.describe(),
                    attempt - 1
                )));
            }
            tokio::time::sleep(backoff.delay(attempt)).await;
            match self.open().await {
                Ok(()) => {
                    tracing::info!(feed = %self.describe(), "resumed");
                    return Ok(());
                }
                Err(s) if transient(&s) => continue,
                Err(s) => return Err(wire::from_status(&s)),
            }
        }
    }
}

/// Failures worth a reconnect: the link, not the broker's answer.
fn transient(s: &tonic::Status) -> bool {
    s.metadata().get(wire::CODE_KEY).is_none()
        || matches!(wire::from_status(s), Error::Disconnected(_) | Error::Unavailable(_))
}

impl Reopen for PartitionFeed {
    type Frame = pb::SubscribeResponse;
    type Item = Message;

    fn backoff(&self) -> Backoff {
        self.backoff
    }

    fn broker(&self) -> (&Brokers, usize) {
        (&self.brokers, self.at)
    }

    fn describe(&self) -> String {
        format!("subscription to {}/{}", self.stream, self.partition)
    }

    async fn open(&mut self) -> std::result::Result<(), tonic::Status> {
        let req = pb::SubscribeRequest {
            stream: self.stream.clone(),
            partition: Some(self.partition),
            start: pb::StartFrom::Offset as i32,
            offset: self.next,
            group: None,
        };
        let (at, clients) = self.brokers.pick();
        self.at = at;
        let mut client = clients.streams.clone();
        let opened = tokio::time::timeout(self.open_timeout, client.subscribe(Request::new(req)))
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("opening the subscription timed out"))
            .and_then(|r| r)
            .inspect_err(|s| self.link_failed(s))?;
        self.inbound = Some(opened.into_inner());
        Ok(())
    }

    fn state(&mut self) -> (&mut Option<Streaming<pb::SubscribeResponse>>, &mut bool) {
        (&mut self.inbound, &mut self.done)
    }

    fn ready(&mut self) -> Option<Message> {
        let m = self.buffer.pop_front()?;
        // Memory-tier messages have no offset: the resume point stays.
        if !m.is_live() {
            self.next = m.offset + 1;
        }
        Some(m)
    }

    fn take(&mut self, batch: pb::SubscribeResponse) -> Option<Result<Message>> {
        let next = self.next;
        self.buffer.extend(batch.messages.into_iter().map(Message::from).filter(|m| m.offset >= next));
        None
    }

    fn warn_lost(&self, s: &tonic::Status) {
        tracing::warn!(stream = %self.stream, partition = self.partition, error = %s, "subscription lost; reconnecting");
    }
}
