//! Resources service: list, delete, purge and reconfigure streams, queues
//! and buckets. Listings show only what the token may use; the other calls
//! need an admin grant on the resource and land in the audit trail.

use tonic::{Request, Response, Status};

use super::auth::Op;
use super::{reply, Shared};
use crate::engine::StreamUpdate;
use crate::error::Error;
use crate::wire::{self, pb};

pub(crate) struct ResourcesService(pub Shared);

fn kind(k: i32) -> Result<pb::ResourceKind, Status> {
    pb::ResourceKind::try_from(k).map_err(|_| wire::to_status(&Error::invalid(format!("unknown resource kind {k}"))))
}

fn kind_name(k: pb::ResourceKind) -> &'static str {
    match k {
        pb::ResourceKind::Stream => "stream",
        pb::ResourceKind::Queue => "queue",
        pb::ResourceKind::Bucket => "bucket",
    }
}

#[tonic::async_trait]
impl pb::resources_server::Resources for ResourcesService {
    async fn list(
        &self,
        req: Request<pb::ListResourcesRequest>,
    ) -> Result<Response<pb::ListResourcesResponse>, Status> {
        let k = kind(req.get_ref().kind)?;
        let op = format!("list_{}s", kind_name(k));
        let caller = self.0.admit_listing(&req, &op, &req.get_ref().prefix)?;
        let prefix = req.into_inner().prefix;
        let names = match k {
            pb::ResourceKind::Stream => self.0.engine.list_streams(&prefix).await,
            pb::ResourceKind::Queue => self.0.engine.list_queues(&prefix).await,
            pb::ResourceKind::Bucket => self.0.engine.list_buckets(&prefix).await,
        };
        reply(names.map(|names| pb::ListResourcesResponse {
            names: names.into_iter().filter(|n| self.0.visible(&caller, n)).collect(),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteResourceRequest>,
    ) -> Result<Response<pb::DeleteResourceResponse>, Status> {
        let k = kind(req.get_ref().kind)?;
        let caller = self.0.admit(&req, &[Op::Admin], &req.get_ref().name)?;
        let name = req.into_inner().name;
        let result = match k {
            pb::ResourceKind::Stream => self.0.engine.delete_stream(&name).await,
            pb::ResourceKind::Queue => self.0.engine.delete_queue(&name).await,
            pb::ResourceKind::Bucket => self.0.engine.delete_bucket(&name).await,
        };
        if result.is_ok() {
            self.0.audit_ok(&caller, &format!("delete_{}", kind_name(k)), &name);
        }
        reply(result.map(|_| pb::DeleteResourceResponse {}))
    }

    async fn purge(
        &self,
        req: Request<pb::PurgeResourceRequest>,
    ) -> Result<Response<pb::PurgeResourceResponse>, Status> {
        let k = kind(req.get_ref().kind)?;
        let caller = self.0.admit(&req, &[Op::Admin], &req.get_ref().name)?;
        let name = req.into_inner().name;
        let result = match k {
            pb::ResourceKind::Stream => self.0.engine.purge_stream(&name).await,
            pb::ResourceKind::Queue => self.0.engine.purge_queue(&name).await,
            pb::ResourceKind::Bucket => Err(Error::invalid("buckets are not purged: delete the bucket or its keys")),
        };
        if result.is_ok() {
            self.0.audit_ok(&caller, &format!("purge_{}", kind_name(k)), &name);
        }
        reply(result.map(|removed| pb::PurgeResourceResponse { removed }))
    }

    async fn update_stream(
        &self,
        req: Request<pb::UpdateStreamRequest>,
    ) -> Result<Response<pb::UpdateStreamResponse>, Status> {
        let caller = self.0.admit(&req, &[Op::Admin], &req.get_ref().stream)?;
        let r = req.into_inner();
        let update = StreamUpdate {
            partitions: r.partitions,
            max_age_ms: r.max_age_ms,
            max_bytes: r.max_bytes,
            max_messages: r.max_messages,
        };
        let result = self.0.engine.update_stream(&r.stream, update).await;
        if result.is_ok() {
            self.0.audit_ok(&caller, "update_stream", &r.stream);
        }
        reply(result.map(|c| pb::UpdateStreamResponse { config: Some(c.into()) }))
    }
}
