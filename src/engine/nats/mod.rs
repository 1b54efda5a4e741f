//! The `nats://` engine: the whole engine contract on NATS JetStream, so
//! streams, queues and KV are replicated by a JetStream cluster (Raft, R3)
//! and shared by every client of it. No state lives only in one client
//! process (docs/NATS.md has the mapping).

mod api;
mod existence;
mod kv;
mod meta;
mod names;
mod queues;
mod streams;
mod txn;

use std::sync::Arc;
use std::time::Duration;

use async_nats::{ConnectOptions, Event, ServerAddr};
use async_trait::async_trait;
use bytes::Bytes;

use crate::engine::config::EngineConfig;
use crate::engine::connection::{ConnState, ConnectionState};
use crate::engine::*;
use crate::error::{Error, Result};

/// Splits `h1:4222,tls://h2:4222` into server addresses.
pub fn parse_hosts(url: &str, rest: &str) -> Result<Vec<String>> {
    let rest = rest.trim_end_matches('/');
    let mut hosts = Vec::new();
    for h in rest.split(',') {
        let h = h.trim();
        if h.is_empty() {
            return Err(Error::invalid(format!("invalid NATS URL {url:?}: expected nats://host:port[,host:port...]")));
        }
        let full = if h.contains("://") { h.to_owned() } else { format!("nats://{h}") };
        full.parse::<ServerAddr>().map_err(|e| Error::invalid(format!("invalid NATS server {h:?} in {url:?}: {e}")))?;
        hosts.push(full);
    }
    if hosts.is_empty() {
        return Err(Error::invalid(format!("invalid NATS URL {url:?}: no host")));
    }
    Ok(hosts)
}

pub struct NatsEngine {
    js: api::Js,
    state: Arc<ConnectionState>,
    meta: Arc<meta::Meta>,
    streams: streams::Streams,
    queues: queues::Queues,
    kv: kv::Kv,
}

impl NatsEngine {
    pub async fn connect(hosts: &[String], cfg: &EngineConfig) -> Result<Arc<dyn Engine>> {
        let addrs: Vec<ServerAddr> = hosts.iter().map(|h| h.parse().expect("checked by parse_hosts")).collect();
        let connect_timeout = Duration::from_millis(cfg.connect_timeout_ms.max(1));
        let request_timeout = Duration::from_millis(cfg.request_timeout_ms.max(1));
        let state = Arc::new(ConnectionState::new(ConnState::Connecting));
        let backoff = cfg.reconnect;
        let events = state.clone();
        let mut o = ConnectOptions::new()
            .name("flowmesh")
            .connection_timeout(connect_timeout)
            .request_timeout(Some(request_timeout))
            // async-nats counts the first try of every (re)connect as attempt
            // 1 and sleeps what this returns before it: no wait then, the
            // configured backoff from the second try on.
            .reconnect_delay_callback(move |attempt| match attempt {
                0 | 1 => Duration::ZERO,
                n => backoff.delay(n as u64 - 1),
            })
            .max_reconnects(if cfg.reconnect.max_attempts == 0 {
                None
            } else {
                Some(cfg.reconnect.max_attempts as usize)
            })
            .event_callback(move |ev| {
                let events = events.clone();
                async move {
                    match ev {
                        Event::Connected => {
                            events.set(ConnState::Connected, None);
                        }
                        Event::Disconnected => {
                            events
                                .set(ConnState::Reconnecting, Some(Error::Disconnected("lost the NATS server".into())));
                        }
                        Event::Closed => {
                            events.set(
                                ConnState::Disconnected,
                                Some(Error::Disconnected("NATS connection closed".into())),
                            );
                        }
                        other => tracing::debug!(event = %other, "NATS connection event"),
                    }
                }
            });
        if cfg.heartbeat_ms > 0 {
            o = o.ping_interval(Duration::from_millis(cfg.heartbeat_ms));
        }
        let n = &cfg.nats;
        if let (Some(u), Some(p)) = (&n.user, &n.password) {
            o = o.user_and_password(u.clone(), p.clone());
        }
        if let Some(t) = &cfg.token {
            o = o.token(t.clone());
        }
        if let Some(f) = &n.creds_file {
            o = o
                .credentials_file(f)
                .await
                .map_err(|e| Error::invalid(format!("option creds_file: cannot read {f:?}: {e}")))?;
        }
        let tls =
            hosts.iter().any(|h| h.starts_with("tls://")) || cfg.tls_ca_file.is_some() || n.tls_cert_file.is_some();
        if tls {
            o = o.require_tls(true);
        }
        if let Some(ca) = &cfg.tls_ca_file {
            o = o.add_root_certificates(ca.into());
        }
        if let (Some(c), Some(k)) = (&n.tls_cert_file, &n.tls_key_file) {
            o = o.add_client_certificate(c.into(), k.into());
        }
        let where_ = hosts.join(",");
        let client = match tokio::time::timeout(connect_timeout, o.connect(addrs)).await {
            Err(_) => {
                return Err(Error::Unavailable(format!(
                    "no NATS server at {where_} answered within {} ms",
                    cfg.connect_timeout_ms
                )))
            }
            Ok(Err(e)) => {
                let text = e.to_string();
                if text.to_ascii_lowercase().contains("authorization") {
                    return Err(Error::Unauthorized(format!("NATS at {where_}: {text}")));
                }
                return Err(Error::Unavailable(format!("cannot connect to NATS at {where_}: {text}")));
            }
            Ok(Ok(c)) => c,
        };
        state.set(ConnState::Connected, None);
        let b = async_nats::jetstream::ContextBuilder::new().timeout(request_timeout);
        let js = match &n.js_domain {
            Some(d) => b.domain(d.clone()).build(client.clone()),
            None => b.build(client.clone()),
        };
        let info = client.server_info();
        let replicas = n.replicas.unwrap_or(if info.cluster.is_some() && info.connect_urls.len() >= 3 { 3 } else { 1 });
        let api_prefix = match &n.js_domain {
            Some(d) => format!("$JS.{d}.API"),
            None => "$JS.API".to_owned(),
        };
        let js = api::Js { client, js, replicas, api_prefix, timeout: request_timeout };
        // JetStream must answer for this account, within the connect deadline.
        match tokio::time::timeout(connect_timeout, js.call("INFO", &serde_json::json!({}), "JetStream account info"))
            .await
        {
            Err(_) => {
                return Err(Error::Unavailable(format!(
                    "JetStream at {where_} did not answer within {} ms",
                    cfg.connect_timeout_ms
                )))
            }
            Ok(Err(e)) => return Err(Error::Unavailable(format!("JetStream at {where_}: {}", e.message()))),
            Ok(Ok(_)) => {}
        }
        let meta = Arc::new(meta::Meta::new(js.clone()));
        Ok(Arc::new(NatsEngine {
            streams: streams::Streams::new(js.clone()),
            queues: queues::Queues::new(js.clone(), meta.clone()),
            kv: kv::Kv::new(js.clone(), meta.clone(), cfg.max_payload_bytes),
            meta,
            js,
            state,
        }))
    }

    fn check_link(&self) -> Result<()> {
        match self.state.current() {
            ConnState::Disconnected => Err(Error::Disconnected("gave up reconnecting to NATS".into())),
            ConnState::Closed => Err(Error::Closed("client closed".into())),
            _ => Ok(()),
        }
    }
}

impl Drop for NatsEngine {
    fn drop(&mut self) {
        self.state.set(ConnState::Closed, None);
    }
}

#[async_trait]
impl Engine for NatsEngine {
    fn connection(&self) -> Option<Arc<ConnectionState>> {
        Some(self.state.clone())
    }

    async fn health(&self) -> Result<()> {
        self.check_link()?;
        self.js.call("INFO", &serde_json::json!({}), "JetStream account info").await.map(|_| ())
    }

    async fn create_stream(&self, stream: &str, config: StreamConfig) -> Result<()> {
        self.check_link()?;
        self.streams.create(stream, config).await
    }

    async fn publish(&self, stream: &str, records: Vec<Record>) -> Result<Vec<Position>> {
        self.check_link()?;
        self.streams.publish(stream, records).await
    }

    async fn publish_live(&self, stream: &str, record: Record, ack: bool) -> Result<()> {
        self.check_link()?;
        self.streams.publish_live(stream, record, ack).await
    }

    async fn publish_replicated(&self, stream: &str, records: Vec<Record>) -> Result<Vec<Position>> {
        self.check_link()?;
        self.streams.publish_replicated(stream, records).await
    }

    async fn read(&self, stream: &str, partition: u32, offset: u64, max: usize) -> Result<Vec<Message>> {
        self.check_link()?;
        self.streams.read(stream, partition, offset, max).await
    }

    async fn stream_info(&self, stream: &str) -> Result<StreamInfo> {
        self.check_link()?;
        self.streams.info(stream).await
    }

    async fn subscribe(&self, stream: &str, spec: SubscribeSpec) -> Result<MessageStream> {
        self.check_link()?;
        self.streams.subscribe(stream, spec, &self.meta).await
    }

    async fn commit_offset(&self, stream: &str, group: &str, partition: u32, offset: u64) -> Result<()> {
        self.check_link()?;
        self.streams.commit(&self.meta, stream, group, partition, offset).await
    }

    async fn get_offset(&self, stream: &str, group: &str, partition: u32) -> Result<u64> {
        self.check_link()?;
        self.streams.get_offset(&self.meta, stream, group, partition).await
    }

    async fn group_state(&self, stream: &str, group: &str) -> Result<GroupState> {
        self.check_link()?;
        self.streams.group_state(&self.meta, stream, group).await
    }

    async fn enqueue(&self, queue: &str, record: Record, delay_ms: u64, priority: i32) -> Result<u64> {
        self.check_link()?;
        self.queues.enqueue(queue, record, delay_ms, priority).await
    }

    async fn reserve(&self, queue: &str, max: usize, visibility_ms: u64, wait_ms: u64) -> Result<Vec<Job>> {
        self.check_link()?;
        self.queues.reserve(queue, max, visibility_ms, wait_ms).await
    }

    async fn ack(&self, queue: &str, job_id: u64) -> Result<()> {
        self.check_link()?;
        self.queues.ack(queue, job_id).await
    }

    async fn nack(&self, queue: &str, job_id: u64, delay_ms: u64) -> Result<()> {
        self.check_link()?;
        self.queues.nack(queue, job_id, delay_ms).await
    }

    async fn queue_stats(&self, queue: &str) -> Result<QueueStats> {
        self.check_link()?;
        self.queues.stats(queue).await
    }

    async fn set_retry_policy(&self, queue: &str, policy: RetryPolicy) -> Result<()> {
        self.check_link()?;
        self.queues.set_policy(queue, policy).await
    }

    async fn get_retry_policy(&self, queue: &str) -> Result<RetryPolicy> {
        self.check_link()?;
        self.queues.get_policy(queue).await
    }

    async fn dlq_list(&self, queue: &str, max: usize) -> Result<Vec<Job>> {
        self.check_link()?;
        self.queues.dlq_list(queue, max).await
    }

    async fn dlq_replay(&self, queue: &str, job_id: u64) -> Result<()> {
        self.check_link()?;
        self.queues.dlq_replay(queue, job_id).await
    }

    async fn dlq_replay_all(&self, queue: &str, header: Option<(String, String)>) -> Result<u64> {
        self.check_link()?;
        self.queues.dlq_replay_all(queue, header).await
    }

    async fn kv_set(&self, bucket: &str, key: &str, value: Bytes, ttl_ms: u64) -> Result<u64> {
        self.check_link()?;
        crate::names::check_key(key)?;
        self.kv.set(bucket, key, value, ttl_ms).await
    }

    async fn kv_cas(&self, bucket: &str, key: &str, value: Bytes, expected: u64, ttl_ms: u64) -> Result<u64> {
        self.check_link()?;
        crate::names::check_key(key)?;
        self.kv.cas(bucket, key, value, expected, ttl_ms).await
    }

    async fn kv_get(&self, bucket: &str, key: &str) -> Result<KvEntry> {
        self.check_link()?;
        crate::names::check_key(key)?;
        self.kv.get(bucket, key).await
    }

    async fn kv_delete(&self, bucket: &str, key: &str) -> Result<bool> {
        self.check_link()?;
        crate::names::check_key(key)?;
        self.kv.delete(bucket, key).await
    }

    async fn kv_exists(&self, bucket: &str, key: &str) -> Result<bool> {
        self.check_link()?;
        crate::names::check_key(key)?;
        match self.kv.get(bucket, key).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn kv_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        self.check_link()?;
        self.kv.keys(bucket, prefix).await
    }

    async fn kv_watch(&self, bucket: &str, prefix: &str) -> Result<KvEventStream> {
        self.check_link()?;
        Ok(self.kv.watch(bucket, prefix, None).await?.1)
    }

    async fn kv_watch_resume(&self, bucket: &str, prefix: &str, after: Option<WatchCursor>) -> Result<ResumedWatch> {
        self.check_link()?;
        self.kv.watch(bucket, prefix, after).await
    }

    async fn kv_txn(&self, ops: Vec<TxnOp>) -> Result<Vec<TxnResult>> {
        self.check_link()?;
        txn::run(&self.kv, ops).await
    }

    async fn list_streams(&self, prefix: &str) -> Result<Vec<String>> {
        self.check_link()?;
        self.streams.list(prefix).await
    }

    async fn list_queues(&self, prefix: &str) -> Result<Vec<String>> {
        self.check_link()?;
        self.queues.list(prefix).await
    }

    async fn list_buckets(&self, prefix: &str) -> Result<Vec<String>> {
        self.check_link()?;
        self.kv.list(prefix).await
    }

    async fn delete_stream(&self, stream: &str) -> Result<()> {
        self.check_link()?;
        self.streams.delete(&self.meta, stream).await
    }

    async fn delete_queue(&self, queue: &str) -> Result<()> {
        self.check_link()?;
        self.queues.delete(queue).await
    }

    async fn delete_bucket(&self, bucket: &str) -> Result<()> {
        self.check_link()?;
        self.kv.delete_bucket(bucket).await
    }

    async fn purge_stream(&self, stream: &str) -> Result<u64> {
        self.check_link()?;
        self.streams.purge(&self.meta, stream).await
    }

    async fn purge_queue(&self, queue: &str) -> Result<u64> {
        self.check_link()?;
        self.queues.purge(queue).await
    }

    async fn extend(&self, queue: &str, job_id: u64, visibility_ms: u64) -> Result<()> {
        self.check_link()?;
        if visibility_ms == 0 {
            return Err(Error::invalid("visibility_ms must be at least 1"));
        }
        self.queues.extend(queue, job_id, visibility_ms).await
    }

    async fn update_stream(&self, stream: &str, update: StreamUpdate) -> Result<StreamConfig> {
        self.check_link()?;
        self.streams.update(stream, update).await
    }

    async fn sync(&self) -> Result<()> {
        // An acknowledged write is already held by a quorum of the cluster.
        Ok(())
    }
}
