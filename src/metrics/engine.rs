//! [`MeteredEngine`]: an [`Engine`] decorator that counts every call, its
//! outcome and latency, and what subscription feeds yield.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::{ClientMetrics, Op};
use crate::engine::*;
use crate::error::Result;

/// Wraps the real engine of a client; see the module docs for the series.
pub struct MeteredEngine {
    inner: Arc<dyn Engine>,
    metrics: Arc<ClientMetrics>,
}

impl MeteredEngine {
    /// Counts every call of `inner` into `metrics`.
    pub fn new(inner: Arc<dyn Engine>, metrics: Arc<ClientMetrics>) -> MeteredEngine {
        MeteredEngine { inner, metrics }
    }

    /// The metrics it counts into.
    pub fn metrics(&self) -> &Arc<ClientMetrics> {
        &self.metrics
    }

    /// Runs one call: in-flight while it runs (also if it is cancelled),
    /// counted and timed when it finishes.
    async fn call<T>(&self, op: Op, fut: impl Future<Output = Result<T>>) -> Result<T> {
        struct InFlight<'a>(&'a ClientMetrics);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                self.0.in_flight.dec();
            }
        }
        self.metrics.in_flight.inc();
        let _in_flight = InFlight(&self.metrics);
        let start = Instant::now();
        let r = fut.await;
        self.metrics.record(op, r.as_ref().err(), start.elapsed().as_secs_f64());
        r
    }
}

#[async_trait]
impl Engine for MeteredEngine {
    fn connection(&self) -> Option<Arc<connection::ConnectionState>> {
        self.inner.connection()
    }

    async fn health(&self) -> Result<()> {
        self.call(Op::Health, self.inner.health()).await
    }

    async fn ready(&self) -> Result<()> {
        self.call(Op::Ready, self.inner.ready()).await
    }

    async fn create_stream(&self, stream: &str, config: StreamConfig) -> Result<()> {
        self.call(Op::CreateStream, self.inner.create_stream(stream, config)).await
    }

    async fn publish(&self, stream: &str, records: Vec<Record>) -> Result<Vec<Position>> {
        let (count, bytes) = (records.len() as u64, records.iter().map(|r| r.size() as u64).sum::<u64>());
        let r = self.call(Op::Publish, self.inner.publish(stream, records)).await;
        if r.is_ok() {
            self.metrics.published.inc_by(count);
            self.metrics.published_bytes.inc_by(bytes);
        }
        r
    }

    async fn publish_live(&self, stream: &str, record: Record, ack: bool) -> Result<()> {
        let bytes = record.size() as u64;
        let r = self.call(Op::Publish, self.inner.publish_live(stream, record, ack)).await;
        if r.is_ok() {
            self.metrics.published.inc();
            self.metrics.published_bytes.inc_by(bytes);
        }
        r
    }

    async fn publish_replicated(&self, stream: &str, records: Vec<Record>) -> Result<Vec<Position>> {
        let (count, bytes) = (records.len() as u64, records.iter().map(|r| r.size() as u64).sum::<u64>());
        let r = self.call(Op::Publish, self.inner.publish_replicated(stream, records)).await;
        if r.is_ok() {
            self.metrics.published.inc_by(count);
            self.metrics.published_bytes.inc_by(bytes);
        }
        r
    }

    async fn read(&self, stream: &str, partition: u32, offset: u64, max: usize) -> Result<Vec<Message>> {
        self.call(Op::Read, self.inner.read(stream, partition, offset, max)).await
    }

    async fn stream_info(&self, stream: &str) -> Result<StreamInfo> {
        self.call(Op::StreamInfo, self.inner.stream_info(stream)).await
    }

    async fn subscribe(&self, stream: &str, spec: SubscribeSpec) -> Result<MessageStream> {
        let feed = self.call(Op::Subscribe, self.inner.subscribe(stream, spec)).await?;
        let metrics = self.metrics.clone();
        Ok(Box::pin(feed.inspect(move |item| {
            if let Ok(m) = item {
                metrics.delivered.inc();
                metrics.delivered_bytes.inc_by(message_size(m));
            }
        })))
    }

    async fn commit_offset(&self, stream: &str, group: &str, partition: u32, offset: u64) -> Result<()> {
        self.call(Op::CommitOffset, self.inner.commit_offset(stream, group, partition, offset)).await
    }

    async fn get_offset(&self, stream: &str, group: &str, partition: u32) -> Result<u64> {
        self.call(Op::GetOffset, self.inner.get_offset(stream, group, partition)).await
    }

    async fn group_state(&self, stream: &str, group: &str) -> Result<GroupState> {
        self.call(Op::GroupState, self.inner.group_state(stream, group)).await
    }

    async fn enqueue(&self, queue: &str, record: Record, delay_ms: u64, priority: i32) -> Result<u64> {
        let r = self.call(Op::Enqueue, self.inner.enqueue(queue, record, delay_ms, priority)).await;
        if r.is_ok() {
            self.metrics.enqueued.inc();
        }
        r
    }

    async fn reserve(&self, queue: &str, max: usize, visibility_ms: u64, wait_ms: u64) -> Result<Vec<Job>> {
        let r = self.call(Op::Reserve, self.inner.reserve(queue, max, visibility_ms, wait_ms)).await;
        if let Ok(jobs) = &r {
            self.metrics.received_jobs.inc_by(jobs.len() as u64);
        }
        r
    }

    async fn ack(&self, queue: &str, job_id: u64) -> Result<()> {
        self.call(Op::Ack, self.inner.ack(queue, job_id)).await
    }

    async fn nack(&self, queue: &str, job_id: u64, delay_ms: u64) -> Result<()> {
        self.call(Op::Nack, self.inner.nack(queue, job_id, delay_ms)).await
    }

    async fn queue_stats(&self, queue: &str) -> Result<QueueStats> {
        self.call(Op::QueueStats, self.inner.queue_stats(queue)).await
    }

    async fn set_retry_policy(&self, queue: &str, policy: RetryPolicy) -> Result<()> {
        self.call(Op::SetRetryPolicy, self.inner.set_retry_policy(queue, policy)).await
    }

    async fn get_retry_policy(&self, queue: &str) -> Result<RetryPolicy> {
        self.call(Op::GetRetryPolicy, self.inner.get_retry_policy(queue)).await
    }

    async fn dlq_list(&self, queue: &str, max: usize) -> Result<Vec<Job>> {
        self.call(Op::DlqList, self.inner.dlq_list(queue, max)).await
    }

    async fn dlq_replay(&self, queue: &str, job_id: u64) -> Result<()> {
        self.call(Op::DlqReplay, self.inner.dlq_replay(queue, job_id)).await
    }

    async fn dlq_replay_all(&self, queue: &str, header: Option<(String, String)>) -> Result<u64> {
        self.call(Op::DlqReplayAll, self.inner.dlq_replay_all(queue, header)).await
    }

    async fn kv_set(&self, bucket: &str, key: &str, value: Bytes, ttl_ms: u64) -> Result<u64> {
        self.call(Op::KvSet, self.inner.kv_set(bucket, key, value, ttl_ms)).await
    }

    async fn kv_cas(&self, bucket: &str, key: &str, value: Bytes, expected: u64, ttl_ms: u64) -> Result<u64> {
        self.call(Op::KvCas, self.inner.kv_cas(bucket, key, value, expected, ttl_ms)).await
    }

    async fn kv_get(&self, bucket: &str, key: &str) -> Result<KvEntry> {
        self.call(Op::KvGet, self.inner.kv_get(bucket, key)).await
    }

    async fn kv_delete(&self, bucket: &str, key: &str) -> Result<bool> {
        self.call(Op::KvDelete, self.inner.kv_delete(bucket, key)).await
    }

    async fn kv_exists(&self, bucket: &str, key: &str) -> Result<bool> {
        self.call(Op::KvExists, self.inner.kv_exists(bucket, key)).await
    }

    async fn kv_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        self.call(Op::KvKeys, self.inner.kv_keys(bucket, prefix)).await
    }

    async fn kv_watch(&self, bucket: &str, prefix: &str) -> Result<KvEventStream> {
        self.call(Op::KvWatch, self.inner.kv_watch(bucket, prefix)).await
    }

    async fn kv_watch_resume(&self, bucket: &str, prefix: &str, after: Option<WatchCursor>) -> Result<ResumedWatch> {
        self.call(Op::KvWatch, self.inner.kv_watch_resume(bucket, prefix, after)).await
    }

    async fn identity(&self, request: &str) -> Result<String> {
        self.inner.identity(request).await
    }

    fn set_token(&self, token: Option<&str>) -> Result<()> {
        self.inner.set_token(token)
    }

    async fn kv_txn(&self, ops: Vec<TxnOp>) -> Result<Vec<TxnResult>> {
        self.call(Op::KvTxn, self.inner.kv_txn(ops)).await
    }

    async fn sync(&self) -> Result<()> {
        self.call(Op::Sync, self.inner.sync()).await
    }

    async fn list_streams(&self, prefix: &str) -> Result<Vec<String>> {
        self.call(Op::ListStreams, self.inner.list_streams(prefix)).await
    }

    async fn list_queues(&self, prefix: &str) -> Result<Vec<String>> {
        self.call(Op::ListQueues, self.inner.list_queues(prefix)).await
    }

    async fn list_buckets(&self, prefix: &str) -> Result<Vec<String>> {
        self.call(Op::ListBuckets, self.inner.list_buckets(prefix)).await
    }

    async fn delete_stream(&self, stream: &str) -> Result<()> {
        self.call(Op::DeleteStream, self.inner.delete_stream(stream)).await
    }

    async fn delete_queue(&self, queue: &str) -> Result<()> {
        self.call(Op::DeleteQueue, self.inner.delete_queue(queue)).await
    }

    async fn delete_bucket(&self, bucket: &str) -> Result<()> {
        self.call(Op::DeleteBucket, self.inner.delete_bucket(bucket)).await
    }

    async fn purge_stream(&self, stream: &str) -> Result<u64> {
        self.call(Op::PurgeStream, self.inner.purge_stream(stream)).await
    }

    async fn purge_queue(&self, queue: &str) -> Result<u64> {
        self.call(Op::PurgeQueue, self.inner.purge_queue(queue)).await
    }

    async fn extend(&self, queue: &str, job_id: u64, visibility_ms: u64) -> Result<()> {
        self.call(Op::Extend, self.inner.extend(queue, job_id, visibility_ms)).await
    }

    async fn update_stream(&self, stream: &str, update: StreamUpdate) -> Result<StreamConfig> {
        self.call(Op::UpdateStream, self.inner.update_stream(stream, update)).await
    }

    async fn inventory(&self) -> Result<Inventory> {
        self.inner.inventory().await
    }
}

fn message_size(m: &Message) -> u64 {
    (m.payload.len()
        + m.key.as_ref().map_or(0, |k| k.len())
        + m.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()) as u64
}
