//! KV service.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::auth::Op;
use super::{reply, Shared};
use crate::wire::{self, pb};

pub(crate) struct KvService(pub Shared);

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::KvEvent, Status>> + Send>>;

    async fn set(&self, req: Request<pb::KvSetRequest>) -> Result<Response<pb::KvSetResponse>, Status> {
        let caller = self.0.admit(&req, &[Op::KvWrite], &req.get_ref().bucket)?;
        let r = req.into_inner();
        if let Err(e) = self.0.check_payload_for(&caller, r.value.len()) {
            return Err(wire::to_status(&e));
        }
        let result = match r.expected_revision {
            Some(expected) => self.0.engine.kv_cas(&r.bucket, &r.key, r.value, expected, r.ttl_ms).await,
            None => self.0.engine.kv_set(&r.bucket, &r.key, r.value, r.ttl_ms).await,
        };
        reply(result.map(|revision| pb::KvSetResponse { revision }))
    }

    async fn get(&self, req: Request<pb::KvGetRequest>) -> Result<Response<pb::KvGetResponse>, Status> {
        let _caller = self.0.admit(&req, &[Op::KvRead], &req.get_ref().bucket)?;
        let r = req.into_inner();
        reply(
            self.0
                .engine
                .kv_get(&r.bucket, &r.key)
                .await
                .map(|e| pb::KvGetResponse { value: e.value, revision: e.revision }),
        )
    }

    async fn delete(&self, req: Request<pb::KvDeleteRequest>) -> Result<Response<pb::KvDeleteResponse>, Status> {
        let _caller = self.0.admit(&req, &[Op::KvWrite], &req.get_ref().bucket)?;
        let r = req.into_inner();
        reply(self.0.engine.kv_delete(&r.bucket, &r.key).await.map(|deleted| pb::KvDeleteResponse { deleted }))
    }

    async fn exists(&self, req: Request<pb::KvExistsRequest>) -> Result<Response<pb::KvExistsResponse>, Status> {
        let _caller = self.0.admit(&req, &[Op::KvRead], &req.get_ref().bucket)?;
        let r = req.into_inner();
        reply(self.0.engine.kv_exists(&r.bucket, &r.key).await.map(|exists| pb::KvExistsResponse { exists }))
    }

    async fn keys(&self, req: Request<pb::KvKeysRequest>) -> Result<Response<pb::KvKeysResponse>, Status> {
        let _caller = self.0.admit(&req, &[Op::KvRead], &req.get_ref().bucket)?;
        let r = req.into_inner();
        reply(self.0.engine.kv_keys(&r.bucket, &r.prefix).await.map(|keys| pb::KvKeysResponse { keys }))
    }

    async fn watch(&self, req: Request<pb::KvWatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let caller = self.0.admit(&req, &[Op::KvRead], &req.get_ref().bucket)?;
        let slot = self.0.subscription_slot(&caller)?;
        let r = req.into_inner();
        let after = r.resume_after.map(|c| crate::engine::WatchCursor { epoch: c.epoch, seq: c.seq });
        let (start, feed) =
            self.0.engine.kv_watch_resume(&r.bucket, &r.prefix, after).await.map_err(|e| wire::to_status(&e))?;
        // First a marker (op unspecified) with the cursor the watch starts
        // from: a client cut off before any change can still resume exactly.
        let marker = pb::KvEvent {
            op: pb::KvOp::Unspecified as i32,
            cursor: Some(pb::WatchCursor { epoch: start.epoch, seq: start.seq }),
            ..Default::default()
        };
        let events = futures::stream::once(async move { Ok(marker) }).chain(feed.map(move |ev| {
            let _held = &slot; // given back when the watch ends
            ev.map(pb::KvEvent::from).map_err(|e| wire::to_status(&e))
        }));
        let events = self.0.until_revoked(&caller, &[Op::KvRead], &r.bucket, events);
        Ok(Response::new(Box::pin(events.take_until(self.0.stopped()))))
    }
}
