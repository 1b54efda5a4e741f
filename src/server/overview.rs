//! Overview service: what an operator's console shows. The inventory holds
//! the streams, queues and buckets a listing would show the token, with
//! their sizes; the metrics are the broker's own connection and request
//! counters, for any valid token.

use tonic::{Request, Response, Status};

use super::{reply, Shared};
use crate::wire::{self, pb};

pub(crate) struct OverviewService(pub Shared);

#[tonic::async_trait]
impl pb::overview_server::Overview for OverviewService {
    async fn inventory(&self, req: Request<pb::InventoryRequest>) -> Result<Response<pb::InventoryResponse>, Status> {
        let caller = self.0.admit_listing(&req, "inventory", &req.get_ref().prefix)?;
        let prefix = req.into_inner().prefix;
        let inv = match self.0.engine.inventory().await {
            Ok(inv) => inv,
            Err(e) => return reply(Err(e)),
        };
        let shown = |name: &str| name.starts_with(&prefix) && self.0.visible(&caller, name);
        let mut out = pb::InventoryResponse::default();
        for s in inv.streams.into_iter().filter(|s| shown(&s.name)) {
            // A stream deleted since the inventory was taken is left out.
            let Ok(info) = self.0.engine.stream_info(&s.name).await else { continue };
            out.streams.push(pb::StreamSummary {
                name: s.name,
                tier: s.tier.name().to_owned(),
                messages: s.messages,
                bytes: s.bytes,
                partitions: info
                    .partitions
                    .into_iter()
                    .map(|p| pb::PartitionInfo { partition: p.partition, earliest: p.earliest, latest: p.latest })
                    .collect(),
                groups: s.groups.into_iter().map(wire::group_state_to_pb).collect(),
            });
        }
        out.queues = inv
            .queues
            .into_iter()
            .filter(|(n, _)| shown(n))
            .map(|(name, q)| pb::QueueSummary {
                name,
                pending: q.pending,
                in_flight: q.in_flight,
                delayed: q.delayed,
                dead: q.dead,
            })
            .collect();
        out.buckets = inv
            .buckets
            .into_iter()
            .filter(|(n, _)| shown(n))
            .map(|(name, keys)| pb::BucketSummary { name, keys })
            .collect();
        out.streams.sort_by(|a, b| a.name.cmp(&b.name));
        out.queues.sort_by(|a, b| a.name.cmp(&b.name));
        out.buckets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(out))
    }

    async fn metrics(&self, req: Request<pb::MetricsRequest>) -> Result<Response<pb::MetricsResponse>, Status> {
        // The empty prefix is inside every tenant: this only checks the token.
        let _caller = self.0.admit_listing(&req, "metrics", "")?;
        Ok(Response::new(self.0.metrics.snapshot()))
    }
}
