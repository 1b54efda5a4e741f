//! Queues service.

use tonic::{Request, Response, Status};

use super::auth::Op;
use super::{reply, Shared};
use crate::engine::Record;
use crate::error::Error;
use crate::wire::{self, pb};

pub(crate) struct QueuesService(pub Shared);

/// Longest long poll the broker accepts in one request.
const MAX_WAIT_MS: u64 = 5 * 60 * 1000;

#[tonic::async_trait]
impl pb::queues_server::Queues for QueuesService {
    async fn enqueue(&self, req: Request<pb::EnqueueRequest>) -> Result<Response<pb::EnqueueResponse>, Status> {
        let caller = self.0.admit(&req, &[Op::QueueProduce], &req.get_ref().queue)?;
        let r = req.into_inner();
        let record: Record = r.record.map(Into::into).unwrap_or_default();
        let result = match self.0.check_payload_for(&caller, record.size()) {
            Ok(()) => self.0.engine.enqueue(&r.queue, record, r.delay_ms, r.priority).await,
            Err(e) => Err(e),
        };
        reply(result.map(|job_id| pb::EnqueueResponse { job_id }))
    }

    async fn reserve(&self, req: Request<pb::ReserveRequest>) -> Result<Response<pb::ReserveResponse>, Status> {
        let _caller = self.0.admit(&req, &[Op::QueueConsume], &req.get_ref().queue)?;
        let r = req.into_inner();
        if r.max_jobs == 0 {
            return Err(wire::to_status(&Error::invalid("max_jobs must be at least 1")));
        }
        let wait = r.wait_ms.min(MAX_WAIT_MS);
        let jobs = self.0.engine.reserve(&r.queue, r.max_jobs as usize, r.visibility_ms, wait).await;
        reply(jobs.map(|jobs| pb::ReserveResponse { jobs: jobs.into_iter().map(Into::into).collect() }))
    }

    async fn ack(&self, req: Request<pb::AckRequest>) -> Result<Response<pb::AckResponse>, Status> {
        let _caller = self.0.admit(&req, &[Op::QueueConsume], &req.get_ref().queue)?;
        let r = req.into_inner();
        reply(self.0.engine.ack(&r.queue, r.job_id).await.map(|_| pb::AckResponse {}))
    }

    async fn nack(&self, req: Request<pb::NackRequest>) -> Result<Response<pb::NackResponse>, Status> {
        let _caller = self.0.admit(&req, &[Op::QueueConsume], &req.get_ref().queue)?;
        let r = req.into_inner();
        reply(self.0.engine.nack(&r.queue, r.job_id, r.delay_ms).await.map(|_| pb::NackResponse {}))
    }

    async fn extend(&self, req: Request<pb::ExtendRequest>) -> Result<Response<pb::ExtendResponse>, Status> {
        let _caller = self.0.admit(&req, &[Op::QueueConsume], &req.get_ref().queue)?;
        let r = req.into_inner();
        reply(self.0.engine.extend(&r.queue, r.job_id, r.visibility_ms).await.map(|_| pb::ExtendResponse {}))
    }

    async fn stats(&self, req: Request<pb::StatsRequest>) -> Result<Response<pb::StatsResponse>, Status> {
        let _caller = self.0.admit(&req, &[Op::Read, Op::QueueProduce, Op::QueueConsume], &req.get_ref().queue)?;
        let r = req.into_inner();
        reply(self.0.engine.queue_stats(&r.queue).await.map(|s| pb::StatsResponse {
            pending: s.pending,
            in_flight: s.in_flight,
            delayed: s.delayed,
            dead: s.dead,
        }))
    }

    async fn set_retry_policy(
        &self,
        req: Request<pb::SetRetryPolicyRequest>,
    ) -> Result<Response<pb::SetRetryPolicyResponse>, Status> {
        let caller = self.0.admit(&req, &[Op::Admin], &req.get_ref().queue)?;
        let r = req.into_inner();
        let Some(policy) = r.policy else {
            return Err(wire::to_status(&Error::invalid("policy is required")));
        };
        let result = self.0.engine.set_retry_policy(&r.queue, policy.into()).await;
        if result.is_ok() {
            self.0.audit_ok(&caller, "set_retry_policy", &r.queue);
        }
        reply(result.map(|_| pb::SetRetryPolicyResponse {}))
    }

    async fn get_retry_policy(
        &self,
        req: Request<pb::GetRetryPolicyRequest>,
    ) -> Result<Response<pb::GetRetryPolicyResponse>, Status> {
        let _caller = self.0.admit(&req, &[Op::Read, Op::QueueConsume, Op::Admin], &req.get_ref().queue)?;
        let r = req.into_inner();
        reply(
            self.0
                .engine
                .get_retry_policy(&r.queue)
                .await
                .map(|p| pb::GetRetryPolicyResponse { policy: Some(p.into()) }),
        )
    }

    async fn dlq_list(&self, req: Request<pb::DlqListRequest>) -> Result<Response<pb::DlqListResponse>, Status> {
        let _caller = self.0.admit(&req, &[Op::Admin, Op::QueueConsume], &req.get_ref().queue)?;
        let r = req.into_inner();
        let max = if r.max == 0 { usize::MAX } else { r.max as usize };
        reply(
            self.0
                .engine
                .dlq_list(&r.queue, max)
                .await
                .map(|jobs| pb::DlqListResponse { jobs: jobs.into_iter().map(Into::into).collect() }),
        )
    }

    async fn dlq_replay(&self, req: Request<pb::DlqReplayRequest>) -> Result<Response<pb::DlqReplayResponse>, Status> {
        let caller = self.0.admit(&req, &[Op::Admin], &req.get_ref().queue)?;
        let r = req.into_inner();
        let result = self.0.engine.dlq_replay(&r.queue, r.job_id).await;
        if result.is_ok() {
            self.0.audit_ok(&caller, "dlq_replay", &r.queue);
        }
        reply(result.map(|_| pb::DlqReplayResponse {}))
    }

    async fn dlq_replay_all(
        &self,
        req: Request<pb::DlqReplayAllRequest>,
    ) -> Result<Response<pb::DlqReplayAllResponse>, Status> {
        let caller = self.0.admit(&req, &[Op::Admin], &req.get_ref().queue)?;
        let r = req.into_inner();
        let filter = r.filter.map(|h| (h.key, h.value));
        let result = self.0.engine.dlq_replay_all(&r.queue, filter).await;
        if result.is_ok() {
            self.0.audit_ok(&caller, "dlq_replay_all", &r.queue);
        }
        reply(result.map(|replayed| pb::DlqReplayAllResponse { replayed }))
    }
}
