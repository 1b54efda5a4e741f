//! Streams service: pipelined publish, read, subscribe, offsets.

use std::pin::Pin;

use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::auth::Op;
use super::gate::Caller;
use super::{reply, Shared};
use crate::engine::{Message, Record, StreamConfig};

use crate::wire::{self, pb};

/// Publish requests merged into one engine call at most (one fsync).
const MAX_MERGE: usize = 256;
/// Responses buffered per publish stream before reading more requests.
const PUBLISH_WINDOW: usize = 256;
/// A read or subscribe batch stops growing past this many bytes.
const BATCH_BYTES: usize = 4 << 20;
const SUBSCRIBE_BATCH: usize = 512;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

pub(crate) struct StreamsService(pub Shared);

fn message_size(m: &Message) -> usize {
    m.payload.len() + m.key.as_ref().map_or(0, |k| k.len()) + 64
}

impl StreamsService {
    /// Publishes a run of requests to one stream in one engine call and
    /// answers each request with its own slice of positions.
    async fn publish_run(
        &self,
        stream: String,
        run: Vec<pb::PublishRequest>,
        caller: Result<Caller, crate::error::Error>,
        out: &mpsc::Sender<Result<pb::PublishResponse, Status>>,
    ) -> bool {
        let sizes: Vec<usize> = run.iter().map(|r| r.records.len()).collect();
        let ids: Vec<u64> = run.iter().map(|r| r.id).collect();
        let (tier, ack) = (run[0].tier.clone(), run[0].require_ack);
        let records: Vec<Record> = run.into_iter().flat_map(|r| r.records.into_iter().map(Record::from)).collect();
        let checked =
            caller.and_then(|caller| records.iter().try_for_each(|r| self.0.check_payload_for(&caller, r.size())));
        let result = match (checked, tier.as_str()) {
            (Err(e), _) => Err(e),
            (Ok(()), "" | "persistent") => self.0.engine.publish(&stream, records).await,
            (Ok(()), "replicated") => self.0.engine.publish_replicated(&stream, records).await,
            (Ok(()), "memory") => {
                let mut r = Ok(Vec::new());
                for rec in records {
                    if let Err(e) = self.0.engine.publish_live(&stream, rec, ack).await {
                        r = Err(e);
                        break;
                    }
                }
                // Fire-and-forget publishes wait for no answer.
                if !ack {
                    return true;
                }
                r
            }
            (Ok(()), _) => Err(crate::error::Error::invalid(format!("unknown publish tier {tier:?}"))),
        };
        match result {
            Ok(positions) => {
                let mut positions = positions.into_iter();
                for (id, n) in ids.into_iter().zip(sizes) {
                    let chunk = positions.by_ref().take(n).map(pb::Position::from).collect();
                    if out.send(Ok(pb::PublishResponse { id, positions: chunk, error: None })).await.is_err() {
                        return false;
                    }
                }
            }
            Err(e) => {
                for id in ids {
                    let error = Some(pb::Error { code: e.code(), message: e.message().to_owned() });
                    if out.send(Ok(pb::PublishResponse { id, positions: Vec::new(), error })).await.is_err() {
                        return false;
                    }
                }
            }
        }
        true
    }
}

#[tonic::async_trait]
impl pb::streams_server::Streams for StreamsService {
    type PublishStream = BoxStream<pb::PublishResponse>;
    type SubscribeStream = BoxStream<pb::SubscribeResponse>;

    async fn create_stream(
        &self,
        req: Request<pb::CreateStreamRequest>,
    ) -> Result<Response<pb::CreateStreamResponse>, Status> {
        // Creating with the default settings is what publish and subscribe
        // do implicitly, so their grants allow it; anything else is admin.
        let cfg: StreamConfig = req.get_ref().config.clone().map(Into::into).unwrap_or_default();
        let ops: &[Op] = if cfg == StreamConfig::default() { super::auth::CREATE_DEFAULT } else { &[Op::Admin] };
        let caller = self.0.admit(&req, ops, &req.get_ref().stream)?;
        let r = req.into_inner();
        let result = self.0.engine.create_stream(&r.stream, cfg).await;
        if result.is_ok() {
            self.0.audit_ok(&caller, "create_stream", &r.stream);
        }
        reply(result.map(|_| pb::CreateStreamResponse {}))
    }

    async fn publish(
        &self,
        req: Request<Streaming<pb::PublishRequest>>,
    ) -> Result<Response<Self::PublishStream>, Status> {
        // Each request is checked on its own (it names its stream), with
        // the token the stream was opened with.
        let (meta, peer) = (req.metadata().clone(), req.remote_addr());
        // Stop reading new requests at shutdown; those already read finish.
        let mut input = Box::pin(req.into_inner().take_until(self.0.stopped()));
        let (tx, rx) = mpsc::channel(PUBLISH_WINDOW);
        let this = StreamsService(self.0.clone());
        tokio::spawn(async move {
            while let Some(Ok(first)) = input.next().await {
                // Take whatever else already arrived, so concurrent publishes
                // share one append and one fsync.
                let mut pending = vec![first];
                while pending.len() < MAX_MERGE {
                    match input.next().now_or_never() {
                        Some(Some(Ok(r))) => pending.push(r),
                        _ => break,
                    }
                }
                let mut pending = pending.into_iter().peekable();
                while let Some(first) = pending.next() {
                    let stream = first.stream.clone();
                    // A run shares one stream and one tier (one engine call).
                    let (tier, ack) = (first.tier.clone(), first.require_ack);
                    let mut run = vec![first];
                    while let Some(r) =
                        pending.next_if(|r| r.stream == stream && r.tier == tier && r.require_ack == ack)
                    {
                        run.push(r);
                    }
                    let caller = this.0.admit_with(&meta, peer, Op::Publish, &stream);
                    if !this.publish_run(stream, run, caller, &tx).await {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn read(&self, req: Request<pb::ReadRequest>) -> Result<Response<pb::ReadResponse>, Status> {
        let _caller = self.0.admit(&req, &[Op::Read], &req.get_ref().stream)?;
        let r = req.into_inner();
        let result = self.0.engine.read(&r.stream, r.partition, r.offset, r.max_messages as usize).await.map(|msgs| {
            // Cap the response size; the client reads on from the last offset.
            let mut bytes = 0;
            let messages = msgs
                .into_iter()
                .take_while(|m| {
                    let first = bytes == 0;
                    bytes += message_size(m);
                    first || bytes <= BATCH_BYTES
                })
                .map(pb::Message::from)
                .collect();
            pb::ReadResponse { messages }
        });
        reply(result)
    }

    async fn info(&self, req: Request<pb::StreamInfoRequest>) -> Result<Response<pb::StreamInfoResponse>, Status> {
        // Subscribers need the partition layout too.
        let _caller = self.0.admit(&req, &[Op::Read, Op::Subscribe], &req.get_ref().stream)?;
        let r = req.into_inner();
        reply(self.0.engine.stream_info(&r.stream).await.map(|i| {
            pb::StreamInfoResponse {
                config: Some(i.config.into()),
                partitions: i
                    .partitions
                    .into_iter()
                    .map(|p| pb::PartitionInfo { partition: p.partition, earliest: p.earliest, latest: p.latest })
                    .collect(),
            }
        }))
    }

    async fn subscribe(&self, req: Request<pb::SubscribeRequest>) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = self.0.admit(&req, &[Op::Subscribe], &req.get_ref().stream)?;
        let slot = self.0.subscription_slot(&caller)?;
        let r = req.into_inner();
        let resource = r.stream.clone();
        let spec = wire::spec_from_pb(&r).map_err(|e| wire::to_status(&e))?;
        let feed = self.0.engine.subscribe(&r.stream, spec).await.map_err(|e| wire::to_status(&e))?;
        // The slot goes back when the client drops the subscription.
        let feed = feed.map(move |m| {
            let _held = &slot;
            m
        });
        // Pulled by tonic only as fast as the client reads (HTTP/2 flow
        // control), so a slow consumer never makes the broker buffer.
        let batches = futures::stream::unfold(feed, |mut feed| async move {
            let first = match feed.next().await? {
                Ok(m) => m,
                Err(e) => return Some((Err(wire::to_status(&e)), feed)),
            };
            let mut bytes = message_size(&first);
            let mut messages = vec![pb::Message::from(first)];
            while messages.len() < SUBSCRIBE_BATCH && bytes < BATCH_BYTES {
                match feed.next().now_or_never() {
                    Some(Some(Ok(m))) => {
                        bytes += message_size(&m);
                        messages.push(m.into());
                    }
                    _ => break,
                }
            }
            Some((Ok(pb::SubscribeResponse { messages }), feed))
        });
        let batches = self.0.until_revoked(&caller, &[Op::Subscribe], &resource, batches);
        Ok(Response::new(Box::pin(batches.take_until(self.0.stopped()))))
    }

    async fn commit_offset(
        &self,
        req: Request<pb::CommitOffsetRequest>,
    ) -> Result<Response<pb::CommitOffsetResponse>, Status> {
        let _caller = self.0.admit(&req, &[Op::Subscribe], &req.get_ref().stream)?;
        let r = req.into_inner();
        reply(
            self.0
                .engine
                .commit_offset(&r.stream, &r.group, r.partition, r.offset)
                .await
                .map(|_| pb::CommitOffsetResponse {}),
        )
    }

    async fn get_offset(&self, req: Request<pb::GetOffsetRequest>) -> Result<Response<pb::GetOffsetResponse>, Status> {
        let _caller = self.0.admit(&req, &[Op::Subscribe, Op::Read], &req.get_ref().stream)?;
        let r = req.into_inner();
        reply(
            self.0
                .engine
                .get_offset(&r.stream, &r.group, r.partition)
                .await
                .map(|offset| pb::GetOffsetResponse { offset }),
        )
    }

    async fn group_state(
        &self,
        req: Request<pb::GroupStateRequest>,
    ) -> Result<Response<pb::GroupStateResponse>, Status> {
        let _caller = self.0.admit(&req, &[Op::Read], &req.get_ref().stream)?;
        let r = req.into_inner();
        reply(self.0.engine.group_state(&r.stream, &r.group).await.map(wire::group_state_to_pb))
    }
}
