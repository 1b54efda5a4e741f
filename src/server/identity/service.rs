//! The gRPC face of identity (`flowmesh.v1.Identity/Call`): one JSON
//! request per call. It finds the caller from the usual bearer token, runs
//! the request, audits every change and every refusal, and tells open
//! subscriptions to check their callers again after a revoking change.

use serde_json::{json, Value};
use tonic::{Request, Response, Status};

use super::{Caller, Done};
use crate::error::{Error, Result};
use crate::server::audit::AuditEvent;
use crate::server::auth::{hash_token, AccessControl, Op};
use crate::server::identity::sessions;
use crate::server::Shared;
use crate::wire::{self, pb};

pub(crate) struct IdentityService(pub Shared);

fn bearer(meta: &tonic::metadata::MetadataMap) -> Option<String> {
    meta.get(wire::AUTH_KEY)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim().to_owned())
        .filter(|t| !t.is_empty())
}

impl IdentityService {
    fn access(&self) -> Result<&std::sync::Arc<AccessControl>> {
        self.0.cfg.access.as_ref().filter(|ac| ac.identity().is_some()).ok_or_else(|| {
            Error::Unavailable("this broker has no identity: start it with flowmesh serve --identity".into())
        })
    }

    /// Who calls: a live session, an access-file token, or nobody.
    fn caller(&self, ac: &AccessControl, token: Option<&str>, peer: Option<std::net::SocketAddr>) -> Caller {
        let mut c = Caller { peer, ..Caller::default() };
        let Some(token) = token else { return c };
        let identity = ac.identity().expect("checked by access()");
        if sessions::is_session_token(token) {
            let hash = hash_token(token);
            if let (Some(u), Some(entry)) = (identity.session_user(&hash), identity.entry_for(&hash)) {
                c.user = Some((u, hash));
                c.entry = Some(entry);
            }
        } else {
            c.entry = ac.token_entry(token);
        }
        c
    }

    async fn run(&self, req: Request<pb::IdentityRequest>) -> Result<Value> {
        let ac = self.access()?.clone();
        let (token, peer) = (bearer(req.metadata()), req.remote_addr());
        let body: Value = serde_json::from_str(&req.get_ref().json)
            .map_err(|e| Error::invalid(format!("the identity request is not valid JSON: {e}")))?;
        let kind = body.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
        let c = self.caller(&ac, token.as_deref(), peer);
        let result = match kind.as_str() {
            "auth.login" | "auth.whoami"
                if c.user.is_some()
                    || body.get("token").is_some_and(|t| t.as_str().is_some_and(sessions::is_session_token)) =>
            {
                let c = match body.get("token").and_then(Value::as_str) {
                    Some(t) => self.caller(&ac, Some(t), peer),
                    None => c.clone(),
                };
                match c.user {
                    Some(_) => ac.identity().expect("checked").handle(&c, &json!({"type": "identity.whoami"})).await,
                    None => {
                        Err(Error::Unauthorized("the session was not accepted (unknown, expired or revoked)".into()))
                    }
                }
            }
            "auth.login" => self.token_login(&ac, &body, peer),
            "auth.whoami" => token_whoami(&c),
            "auth.logout" => Ok(Done::read(Value::Null)),
            "audit.query" => self.audit_query(&ac, &c, &body).await,
            _ if kind.starts_with("identity.") => {
                if token.is_some() && c.entry.is_none() && !kind.starts_with("identity.login") {
                    Err(Error::Unauthorized("the token was not accepted (unknown, expired or revoked)".into()))
                } else {
                    ac.identity().expect("checked by access()").handle(&c, &body).await
                }
            }
            _ => Err(Error::invalid(format!(
                "unknown request type {kind:?}: identity.*, auth.login, auth.whoami, auth.logout or audit.query"
            ))),
        };
        let op = kind.strip_prefix("identity.").unwrap_or(&kind).to_owned();
        match result {
            Ok(done) => {
                if let Some((tenant, resource)) = &done.audit {
                    let ev = AuditEvent::new(tenant, &op, resource, "ok").peer(peer);
                    ac.audit(match &c.entry {
                        Some(e) => ev.by(e),
                        None => login_user(&done.value).map_or(ev.clone(), |u| ev.user(&u)),
                    });
                }
                if done.revokes {
                    ac.changed();
                }
                Ok(done.value)
            }
            Err(e) => {
                if matches!(e, Error::Unauthorized(_)) {
                    self.audit_refusal(&ac, &c, &op, &body, &e);
                }
                Err(e)
            }
        }
    }

    /// A refusal goes to the caller's tenant, or for a failed login to the
    /// named user's (or the admin's) tenant.
    fn audit_refusal(&self, ac: &AccessControl, c: &Caller, op: &str, body: &Value, e: &Error) {
        let identity = ac.identity().expect("checked by access()");
        let named = body.get("username").and_then(Value::as_str);
        let tenant = c.tenant().map(str::to_owned).unwrap_or_else(|| identity.tenant_for_login(named));
        let resource = body
            .get("userId")
            .and_then(Value::as_str)
            .map(|u| format!("user:{u}"))
            .or_else(|| body.get("resource").and_then(Value::as_str).map(str::to_owned))
            .or_else(|| named.map(|n| format!("username:{n}")))
            .unwrap_or_default();
        let outcome = if c.entry.is_some() { "denied" } else { "unauthenticated" };
        let ev = AuditEvent::new(&tenant, op, &resource, outcome).peer(c.peer).detail(e.message().to_owned());
        let ev = match &c.entry {
            Some(en) => ev.by(en),
            None => ev,
        };
        // The tenant that was aimed at hears of it too.
        let target = body
            .get("tenant")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| body.get("userId").and_then(Value::as_str).and_then(|u| identity.tenant_of_user(u)));
        if let Some(t) = target.filter(|t| *t != tenant && ac.knows_tenant(t)) {
            let mut other = ev.clone();
            other.tenant = t;
            ac.audit(other);
        }
        ac.audit(ev);
    }

    fn token_login(&self, ac: &AccessControl, body: &Value, peer: Option<std::net::SocketAddr>) -> Result<Done> {
        let token = body.get("token").and_then(Value::as_str).ok_or_else(|| Error::invalid("auth.login: token"))?;
        let c = self.caller(ac, Some(token), peer);
        if c.entry.is_none() {
            return Err(Error::Unauthorized("the token was not accepted (unknown, expired or revoked)".into()));
        }
        token_whoami(&c)
    }

    async fn audit_query(&self, ac: &AccessControl, c: &Caller, body: &Value) -> Result<Done> {
        let identity = ac.identity().expect("checked by access()");
        let filter = body.get("filter").unwrap_or(body);
        let tenant = match filter.get("tenant").and_then(Value::as_str) {
            Some(t) => t.to_owned(),
            None => c
                .tenant()
                .ok_or_else(|| Error::Unauthorized("audit.query needs a token or a session".into()))?
                .to_owned(),
        };
        let audit_stream =
            format!("{tenant}/{}/{}", crate::server::auth::SYSTEM_NAMESPACE, crate::server::audit::AUDIT_STREAM);
        let allowed = match (&c.user, &c.entry) {
            (Some(_), _) => identity.may_read_audit(c, &tenant),
            (None, Some(e)) => e.tenant == tenant && e.covers(&[Op::Admin], &audit_stream),
            _ => false,
        };
        if !allowed {
            return Err(Error::Unauthorized(format!("no audit.read permission in tenant {tenant:?}")));
        }
        ac.flush_audit().await;
        let q = crate::server::audit::Query::parse(filter)?;
        Ok(Done::read(json!(crate::server::audit::query(self.0.engine.as_ref(), &audit_stream, &q).await?)))
    }
}

/// The user a login answer names (a failed-free login has no caller yet).
fn login_user(v: &Value) -> Option<String> {
    v.get("userId").and_then(Value::as_str).map(str::to_owned)
}

/// The session shape `{userId, roles, expiresAt}` of the calling token.
fn token_whoami(c: &Caller) -> Result<Done> {
    match (&c.user, &c.entry) {
        (Some((u, _)), _) => Ok(Done::read(json!({
            "userId": u.id, "username": u.username, "tenant": u.tenant, "roles": u.roles, "expiresAt": null,
        }))),
        (None, Some(e)) => Ok(Done::read(json!({
            "userId": e.id, "tenant": e.tenant, "roles": [], "expiresAt": null,
        }))),
        _ => Err(Error::Unauthorized("no token: log in first".into())),
    }
}

#[tonic::async_trait]
impl pb::identity_server::Identity for IdentityService {
    async fn call(&self, req: Request<pb::IdentityRequest>) -> Result<Response<pb::IdentityResponse>, Status> {
        match self.run(req).await {
            Ok(v) => Ok(Response::new(pb::IdentityResponse { json: v.to_string() })),
            Err(e) => Err(wire::to_status(&e)),
        }
    }
}
