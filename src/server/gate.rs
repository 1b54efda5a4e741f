//! The broker's request gate: what every service method calls before it
//! touches the engine. Without an access file the gate is open (and the
//! broker logs a warning at startup); with one, each request is
//! authenticated, authorized for (operation, qualified name), and counted
//! against its token's limits.

use tonic::{Request, Status};

use super::auth::{Op, Principal, Slot};
use super::Shared;
use crate::error::{Error, Result};
use crate::wire;

/// The admitted caller of one request; holds its in-flight slot until dropped.
pub(crate) struct Caller {
    pub principal: Option<Principal>,
    _slot: Option<Slot>,
}

impl Shared {
    /// Authenticates the request's token (if the broker checks tokens).
    pub(crate) fn authenticate(
        &self,
        meta: &tonic::metadata::MetadataMap,
        peer: Option<std::net::SocketAddr>,
        op: Op,
        resource: &str,
    ) -> Result<Option<Principal>> {
        match &self.cfg.access {
            None => Ok(None),
            Some(ac) => ac.authenticate(meta, peer, op.name(), resource).map(Some),
        }
    }

    /// May the caller do any of `ops` on `resource` (a qualified name)?
    pub(crate) fn authorize(&self, p: &Option<Principal>, ops: &[Op], resource: &str) -> Result<()> {
        match (&self.cfg.access, p) {
            (Some(ac), Some(p)) => ac.authorize(p, ops, resource),
            _ => Ok(()),
        }
    }

    fn check(&self, p: Option<Principal>, ops: &[Op], resource: &str) -> Result<Caller> {
        self.authorize(&p, ops, resource)?;
        self.note_write(&p, ops, resource);
        let slot = match (&self.cfg.access, &p) {
            (Some(ac), Some(p)) => Some(ac.request_slot(p)?),
            _ => None,
        };
        Ok(Caller { principal: p, _slot: slot })
    }

    /// An admitted write of an identity user: its first writer owns it.
    fn note_write(&self, p: &Option<Principal>, ops: &[Op], resource: &str) {
        if let (Some(ac), Some(p)) = (&self.cfg.access, p) {
            if let Some(identity) = ac.identity() {
                identity.note_write(&p.entry, ops, resource);
            }
        }
    }

    /// The whole gate for one unary request: token, grant, in-flight limit.
    /// `ops` lists the operations any one of which allows the call.
    pub(crate) fn admit<T>(&self, req: &Request<T>, ops: &[Op], resource: &str) -> Result<Caller, Status> {
        self.authenticate(req.metadata(), req.remote_addr(), ops[0], resource)
            .and_then(|p| self.check(p, ops, resource))
            .map_err(|e| wire::to_status(&e))
    }

    /// The gate for a request over several resources (a transaction): one
    /// token check, every (operations, resource) pair authorized, one slot.
    pub(crate) fn admit_all<T>(&self, req: &Request<T>, needs: &[(&[Op], &str)]) -> Result<Caller, Status> {
        let Some((first_ops, first)) = needs.first() else {
            return Err(wire::to_status(&Error::invalid("the request names no resource")));
        };
        let admitted = self.authenticate(req.metadata(), req.remote_addr(), first_ops[0], first).and_then(|p| {
            for (ops, resource) in &needs[1..] {
                self.authorize(&p, ops, resource)?;
                self.note_write(&p, ops, resource);
            }
            self.check(p, first_ops, first)
        });
        admitted.map_err(|e| wire::to_status(&e))
    }

    /// The gate of a listing: token, tenant of the prefix, in-flight limit.
    /// What it may show is then filtered with [`Shared::visible`].
    pub(crate) fn admit_listing<T>(&self, req: &Request<T>, op: &str, prefix: &str) -> Result<Caller, Status> {
        let admitted = (|| {
            let p = match &self.cfg.access {
                None => return Ok(Caller { principal: None, _slot: None }),
                Some(ac) => ac.authenticate(req.metadata(), req.remote_addr(), op, prefix)?,
            };
            let ac = self.cfg.access.as_ref().expect("checked above");
            ac.authorize_listing(&p, op, prefix)?;
            let slot = ac.request_slot(&p)?;
            Ok(Caller { principal: Some(p), _slot: Some(slot) })
        })();
        admitted.map_err(|e: Error| wire::to_status(&e))
    }

    /// Whether a listing shows `name` to the caller.
    pub(crate) fn visible(&self, caller: &Caller, name: &str) -> bool {
        match (&self.cfg.access, &caller.principal) {
            (Some(ac), Some(p)) => ac.may_see(p, name),
            _ => true,
        }
    }

    /// The gate for one message of an open publish stream.
    pub(crate) fn admit_with(
        &self,
        meta: &tonic::metadata::MetadataMap,
        peer: Option<std::net::SocketAddr>,
        op: Op,
        resource: &str,
    ) -> Result<Caller> {
        self.authenticate(meta, peer, op, resource).and_then(|p| self.check(p, &[op], resource))
    }

    /// Records an admin action that went through.
    pub(crate) fn audit_ok(&self, caller: &Caller, op: &str, resource: &str) {
        if let (Some(ac), Some(p)) = (&self.cfg.access, &caller.principal) {
            ac.audit_ok(p, op, resource);
        }
    }

    /// The broker's payload limit, and the token's own if it is smaller.
    pub(crate) fn check_payload_for(&self, caller: &Caller, size: usize) -> Result<()> {
        self.check_payload(size)?;
        if let Some(max) = caller.principal.as_ref().and_then(|p| p.entry.limits.max_message_bytes) {
            if size > max {
                return Err(Error::TooLarge(format!(
                    "message of {size} bytes exceeds the limit of {max} bytes of token {:?}",
                    caller.principal.as_ref().map_or("", |p| p.entry.id.as_str())
                )));
            }
        }
        Ok(())
    }

    /// An endless server stream (subscription, watch) of `caller` that ends
    /// with UNAUTHORIZED once an access file reload revokes the token or
    /// its grant for `ops` on `resource`.
    pub(crate) fn until_revoked<S, T>(
        &self,
        caller: &Caller,
        ops: &'static [Op],
        resource: &str,
        stream: S,
    ) -> futures::stream::BoxStream<'static, Result<T, Status>>
    where
        S: futures::Stream<Item = Result<T, Status>> + Send + 'static,
        T: Send + 'static,
    {
        use futures::StreamExt;
        let (Some(ac), Some(p)) = (&self.cfg.access, &caller.principal) else {
            return stream.boxed();
        };
        let revoked = ac.revoked(p.clone(), ops, resource.to_owned());
        let state = Some((Box::pin(stream), Box::pin(revoked)));
        futures::stream::unfold(state, |state| async move {
            let (mut stream, mut revoked) = state?;
            tokio::select! {
                e = &mut revoked => Some((Err(wire::to_status(&e)), None)),
                item = stream.next() => item.map(|i| (i, Some((stream, revoked)))),
            }
        })
        .boxed()
    }

    /// A slot for one more open subscription or watch of the caller.
    pub(crate) fn subscription_slot(&self, caller: &Caller) -> Result<Option<Slot>, Status> {
        match (&self.cfg.access, &caller.principal) {
            (Some(ac), Some(p)) => ac.subscription_slot(p).map(Some).map_err(|e| wire::to_status(&e)),
            _ => Ok(None),
        }
    }
}
