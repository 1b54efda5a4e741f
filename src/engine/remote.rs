//! The remote engine: a gRPC client of `flowmesh serve`. One HTTP/2 channel
//! carries every operation of a client; publishes are pipelined over one
//! bidirectional stream (many in flight, answers matched by id); queue
//! reserve long-polls on the broker; subscriptions and watches are
//! server-streamed with HTTP/2 flow control; every call has a deadline.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Endpoint;
use tonic::{Request, Streaming};

use crate::client::{Backoff, ClientConfig};
use crate::engine::*;
use crate::error::{Error, Result};
use crate::wire::{self, pb};

/// Largest gRPC message the client accepts (a read or subscribe batch).
const MAX_MESSAGE: usize = 256 << 20;
/// Publish requests queued for the stream before callers wait.
const PUBLISH_QUEUE: usize = 1024;

/// Every call carries the client's token (when it has one).
type Channel = InterceptedService<tonic::transport::Channel, crate::engine::remote_tls::TokenInterceptor>;

type Reply = oneshot::Sender<Result<Vec<Position>>>;

/// One open publish stream and the requests waiting for their answers.
struct PublishLink {
    tx: mpsc::Sender<pb::PublishRequest>,
    pending: Arc<Mutex<HashMap<u64, Reply>>>,
    alive: Arc<AtomicBool>,
}

pub struct RemoteEngine {
    streams: pb::streams_client::StreamsClient<Channel>,
    queues: pb::queues_client::QueuesClient<Channel>,
    kv: pb::kv_client::KvClient<Channel>,
    health: pb::health_client::HealthClient<Channel>,
    timeout: Duration,
    backoff: Backoff,
    link: tokio::sync::Mutex<Option<PublishLink>>,
    next_id: AtomicU64,
}

impl RemoteEngine {
    pub async fn connect(url: &str, tls: bool, cfg: &ClientConfig) -> Result<Arc<dyn Engine>> {
        let scheme = if tls { "grpcs://" } else { "grpc://" };
        let host = url.trim_start_matches(scheme).trim_end_matches('/');
        let http = format!("{}://{host}", if tls { "https" } else { "http" });
        let connect_timeout = Duration::from_millis(cfg.connect_timeout_ms.max(1));
        let mut endpoint = Endpoint::from_shared(http)
            .map_err(|e| Error::invalid(format!("invalid broker URL {url:?}: {e}")))?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        if tls {
            endpoint = crate::engine::remote_tls::configure(endpoint, url, cfg, connect_timeout)?;
        }
        let auth = crate::engine::remote_tls::TokenInterceptor::new(cfg.token.as_deref())?;
        let channel = tokio::time::timeout(connect_timeout, endpoint.connect())
            .await
            .map_err(|_| Error::Timeout(format!("connecting to {url} took longer than {connect_timeout:?}")))?
            .map_err(|e| crate::engine::remote_tls::connect_error(url, tls, &e))?;
        let channel = InterceptedService::new(channel, auth);
        let engine = RemoteEngine {
            streams: pb::streams_client::StreamsClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            queues: pb::queues_client::QueuesClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            kv: pb::kv_client::KvClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            health: pb::health_client::HealthClient::new(channel),
            timeout: Duration::from_millis(cfg.request_timeout_ms.max(1)),
            backoff: cfg.reconnect,
            link: tokio::sync::Mutex::new(None),
            next_id: AtomicU64::new(1),
        };
        // A TLS/plaintext mismatch often surfaces only on the first call.
        engine.health().await.map_err(|e| crate::engine::remote_tls::first_call_error(url, tls, e))?;
        Ok(Arc::new(engine))
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.set_timeout(self.timeout);
        r
    }

    /// The live publish stream, opened (again) if needed.
    async fn publish_link(&self) -> Result<(mpsc::Sender<pb::PublishRequest>, Arc<Mutex<HashMap<u64, Reply>>>)> {
        let mut link = self.link.lock().await;
        if let Some(l) = link.as_ref().filter(|l| l.alive.load(Ordering::Acquire)) {
            return Ok((l.tx.clone(), l.pending.clone()));
        }
        let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
        let mut client = self.streams.clone();
        let opened = tokio::time::timeout(self.timeout, client.publish(ReceiverStream::new(rx)))
            .await
            .map_err(|_| Error::Timeout("opening the publish stream timed out".into()))?
            .map_err(|s| wire::from_status(&s))?;
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
        *link = Some(PublishLink { tx: tx.clone(), pending: pending.clone(), alive });
        Ok((tx, pending))
    }
}

fn status<T>(r: std::result::Result<tonic::Response<T>, tonic::Status>) -> Result<T> {
    r.map(tonic::Response::into_inner).map_err(|s| wire::from_status(&s))
}

#[async_trait]
impl Engine for RemoteEngine {
    async fn health(&self) -> Result<()> {
        status(self.health.clone().check(self.request(pb::CheckRequest {})).await).map(|_| ())
    }

    async fn ready(&self) -> Result<()> {
        status(self.health.clone().ready(self.request(pb::ReadyRequest {})).await).map(|_| ())
    }

    async fn create_stream(&self, stream: &str, config: StreamConfig) -> Result<()> {
        let req = pb::CreateStreamRequest { stream: stream.into(), config: Some(config.into()) };
        status(self.streams.clone().create_stream(self.request(req)).await).map(|_| ())
    }

    async fn publish(&self, stream: &str, records: Vec<Record>) -> Result<Vec<Position>> {
        let (tx, pending) = self.publish_link().await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        pending.lock().unwrap().insert(id, reply);
        let req =
            pb::PublishRequest { id, stream: stream.into(), records: records.into_iter().map(Into::into).collect() };
        if tx.send(req).await.is_err() {
            pending.lock().unwrap().remove(&id);
            return Err(Error::Disconnected("publish stream to the broker is closed".into()));
        }
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Disconnected("publish stream ended before the broker answered".into())),
            Err(_) => {
                pending.lock().unwrap().remove(&id);
                Err(Error::Timeout(format!("no publish acknowledgement within {:?}", self.timeout)))
            }
        }
    }

    async fn read(&self, stream: &str, partition: u32, offset: u64, max: usize) -> Result<Vec<Message>> {
        let req = pb::ReadRequest {
            stream: stream.into(),
            partition,
            offset,
            max_messages: max.min(u32::MAX as usize) as u32,
        };
        let resp = status(self.streams.clone().read(self.request(req)).await)?;
        Ok(resp.messages.into_iter().map(Into::into).collect())
    }

    async fn stream_info(&self, stream: &str) -> Result<StreamInfo> {
        let resp =
            status(self.streams.clone().info(self.request(pb::StreamInfoRequest { stream: stream.into() })).await)?;
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
                client: self.streams.clone(),
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
                let item = f.next_message().await?;
                Some((item, f))
            })));
        }
        Ok(Box::pin(futures::stream::select_all(feeds)))
    }

    async fn commit_offset(&self, stream: &str, group: &str, partition: u32, offset: u64) -> Result<()> {
        let req = pb::CommitOffsetRequest { stream: stream.into(), group: group.into(), partition, offset };
        status(self.streams.clone().commit_offset(self.request(req)).await).map(|_| ())
    }

    async fn get_offset(&self, stream: &str, group: &str, partition: u32) -> Result<u64> {
        let req = pb::GetOffsetRequest { stream: stream.into(), group: group.into(), partition };
        status(self.streams.clone().get_offset(self.request(req)).await).map(|r| r.offset)
    }

    async fn group_state(&self, stream: &str, group: &str) -> Result<GroupState> {
        let req = pb::GroupStateRequest { stream: stream.into(), group: group.into() };
        let r = status(self.streams.clone().group_state(self.request(req)).await)?;
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
        status(self.queues.clone().enqueue(self.request(req)).await).map(|r| r.job_id)
    }

    async fn reserve(&self, queue: &str, max: usize, visibility_ms: u64, wait_ms: u64) -> Result<Vec<Job>> {
        let req = pb::ReserveRequest {
            queue: queue.into(),
            max_jobs: max.min(u32::MAX as usize) as u32,
            visibility_ms,
            wait_ms,
        };
        let mut r = Request::new(req);
        r.set_timeout(self.timeout + Duration::from_millis(wait_ms));
        let resp = status(self.queues.clone().reserve(r).await)?;
        Ok(resp.jobs.into_iter().map(Into::into).collect())
    }

    async fn ack(&self, queue: &str, job_id: u64) -> Result<()> {
        let req = pb::AckRequest { queue: queue.into(), job_id };
        status(self.queues.clone().ack(self.request(req)).await).map(|_| ())
    }

    async fn nack(&self, queue: &str, job_id: u64, delay_ms: u64) -> Result<()> {
        let req = pb::NackRequest { queue: queue.into(), job_id, delay_ms };
        status(self.queues.clone().nack(self.request(req)).await).map(|_| ())
    }

    async fn queue_stats(&self, queue: &str) -> Result<QueueStats> {
        let r = status(self.queues.clone().stats(self.request(pb::StatsRequest { queue: queue.into() })).await)?;
        Ok(QueueStats { pending: r.pending, in_flight: r.in_flight, delayed: r.delayed, dead: r.dead })
    }

    async fn set_retry_policy(&self, queue: &str, policy: RetryPolicy) -> Result<()> {
        let req = pb::SetRetryPolicyRequest { queue: queue.into(), policy: Some(policy.into()) };
        status(self.queues.clone().set_retry_policy(self.request(req)).await).map(|_| ())
    }

    async fn get_retry_policy(&self, queue: &str) -> Result<RetryPolicy> {
        let req = pb::GetRetryPolicyRequest { queue: queue.into() };
        let r = status(self.queues.clone().get_retry_policy(self.request(req)).await)?;
        Ok(r.policy.map(Into::into).unwrap_or_default())
    }

    async fn dlq_list(&self, queue: &str, max: usize) -> Result<Vec<Job>> {
        let req = pb::DlqListRequest { queue: queue.into(), max: max.min(u32::MAX as usize) as u32 };
        let r = status(self.queues.clone().dlq_list(self.request(req)).await)?;
        Ok(r.jobs.into_iter().map(Into::into).collect())
    }

    async fn dlq_replay(&self, queue: &str, job_id: u64) -> Result<()> {
        let req = pb::DlqReplayRequest { queue: queue.into(), job_id };
        status(self.queues.clone().dlq_replay(self.request(req)).await).map(|_| ())
    }

    async fn dlq_replay_all(&self, queue: &str, header: Option<(String, String)>) -> Result<u64> {
        let req = pb::DlqReplayAllRequest {
            queue: queue.into(),
            filter: header.map(|(key, value)| pb::Header { key, value }),
        };
        status(self.queues.clone().dlq_replay_all(self.request(req)).await).map(|r| r.replayed)
    }

    async fn kv_set(&self, bucket: &str, key: &str, value: Bytes, ttl_ms: u64) -> Result<u64> {
        let req = pb::KvSetRequest { bucket: bucket.into(), key: key.into(), value, ttl_ms, expected_revision: None };
        status(self.kv.clone().set(self.request(req)).await).map(|r| r.revision)
    }

    async fn kv_cas(&self, bucket: &str, key: &str, value: Bytes, expected: u64, ttl_ms: u64) -> Result<u64> {
        let req = pb::KvSetRequest {
            bucket: bucket.into(),
            key: key.into(),
            value,
            ttl_ms,
            expected_revision: Some(expected),
        };
        status(self.kv.clone().set(self.request(req)).await).map(|r| r.revision)
    }

    async fn kv_get(&self, bucket: &str, key: &str) -> Result<KvEntry> {
        let req = pb::KvGetRequest { bucket: bucket.into(), key: key.into() };
        let r = status(self.kv.clone().get(self.request(req)).await)?;
        Ok(KvEntry { key: key.into(), value: r.value, revision: r.revision })
    }

    async fn kv_delete(&self, bucket: &str, key: &str) -> Result<bool> {
        let req = pb::KvDeleteRequest { bucket: bucket.into(), key: key.into() };
        status(self.kv.clone().delete(self.request(req)).await).map(|r| r.deleted)
    }

    async fn kv_exists(&self, bucket: &str, key: &str) -> Result<bool> {
        let req = pb::KvExistsRequest { bucket: bucket.into(), key: key.into() };
        status(self.kv.clone().exists(self.request(req)).await).map(|r| r.exists)
    }

    async fn kv_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        let req = pb::KvKeysRequest { bucket: bucket.into(), prefix: prefix.into() };
        status(self.kv.clone().keys(self.request(req)).await).map(|r| r.keys)
    }

    async fn kv_watch(&self, bucket: &str, prefix: &str) -> Result<KvEventStream> {
        let req = pb::KvWatchRequest { bucket: bucket.into(), prefix: prefix.into() };
        let opened = tokio::time::timeout(self.timeout, self.kv.clone().watch(Request::new(req)))
            .await
            .map_err(|_| Error::Timeout("opening the watch timed out".into()))?;
        let inbound = status(opened)?;
        Ok(Box::pin(inbound.map(|ev| match ev {
            Ok(e) => wire::kv_event_from_pb(e),
            Err(s) => Err(wire::from_status(&s)),
        })))
    }
}

/// One partition of a subscription that survives broker restarts: it
/// remembers the next offset and, after a transport failure, re-subscribes
/// from there with backoff, so nothing is lost or delivered twice.
struct PartitionFeed {
    client: pb::streams_client::StreamsClient<Channel>,
    stream: String,
    partition: u32,
    next: u64,
    open_timeout: Duration,
    backoff: Backoff,
    inbound: Option<Streaming<pb::SubscribeResponse>>,
    buffer: VecDeque<Message>,
    done: bool,
}

/// Failures worth a reconnect: the link, not the broker's answer.
fn transient(s: &tonic::Status) -> bool {
    s.metadata().get(wire::CODE_KEY).is_none()
        || matches!(wire::from_status(s), Error::Disconnected(_) | Error::Unavailable(_))
}

impl PartitionFeed {
    async fn open(&mut self) -> std::result::Result<(), tonic::Status> {
        let req = pb::SubscribeRequest {
            stream: self.stream.clone(),
            partition: Some(self.partition),
            start: pb::StartFrom::Offset as i32,
            offset: self.next,
            group: None,
        };
        let opened = tokio::time::timeout(self.open_timeout, self.client.subscribe(Request::new(req)))
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("opening the subscription timed out"))??;
        self.inbound = Some(opened.into_inner());
        Ok(())
    }

    async fn reconnect(&mut self) -> Result<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            if self.backoff.exhausted(attempt) {
                return Err(Error::Disconnected(format!(
                    "subscription to {}/{} gave up after {} reconnect attempts",
                    self.stream,
                    self.partition,
                    attempt - 1
                )));
            }
            tokio::time::sleep(self.backoff.delay(attempt)).await;
            match self.open().await {
                Ok(()) => {
                    tracing::info!(stream = %self.stream, partition = self.partition, next = self.next, "subscription resumed");
                    return Ok(());
                }
                Err(s) if transient(&s) => continue,
                Err(s) => return Err(wire::from_status(&s)),
            }
        }
    }

    async fn next_message(&mut self) -> Option<Result<Message>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(m) = self.buffer.pop_front() {
                self.next = m.offset + 1;
                return Some(Ok(m));
            }
            let Some(inbound) = self.inbound.as_mut() else {
                if let Err(e) = self.reconnect().await {
                    self.done = true;
                    return Some(Err(e));
                }
                continue;
            };
            match inbound.message().await {
                Ok(Some(batch)) => {
                    let next = self.next;
                    self.buffer.extend(batch.messages.into_iter().map(Message::from).filter(|m| m.offset >= next));
                }
                Ok(None) => self.inbound = None, // broker ended the stream (shutting down)
                Err(s) if transient(&s) => {
                    tracing::warn!(stream = %self.stream, partition = self.partition, error = %s, "subscription lost; reconnecting");
                    self.inbound = None;
                }
                Err(s) => {
                    self.done = true;
                    return Some(Err(wire::from_status(&s)));
                }
            }
        }
    }
}
