//! Health service.

use tonic::{Request, Response, Status};

use super::{reply, Shared};
use crate::wire::pb;

pub(crate) struct HealthService(pub Shared);

#[tonic::async_trait]
impl pb::health_server::Health for HealthService {
    async fn check(&self, _: Request<pb::CheckRequest>) -> Result<Response<pb::CheckResponse>, Status> {
        reply(self.0.engine.health().await.map(|_| pb::CheckResponse { version: env!("CARGO_PKG_VERSION").into() }))
    }

    async fn ready(&self, _: Request<pb::ReadyRequest>) -> Result<Response<pb::ReadyResponse>, Status> {
        reply(self.0.engine.ready().await.map(|_| pb::ReadyResponse {}))
    }
}
