//! Authentication, authorization and per-token limits of the broker.
//!
//! Every service method calls `Shared::admit` with
//! the operation and the qualified resource name before it touches the
//! engine. The access file (JSON, see docs/SECURITY.md) maps SHA-256 hashes
//! of tokens to a tenant, grants and limits; it is swapped atomically on
//! reload, so requests in flight keep the table they started with.
//!
//! Order of the checks (so refusals never reveal whether a resource exists):
//! token -> tenant of the name -> grant -> limits -> engine.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::audit::{Audit, AuditEvent};
use super::identity::{sessions, Identity};
use crate::error::{Error, Result};
use crate::names;

/// What a request does to a resource.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Op {
    /// Append to a stream.
    Publish,
    /// Subscribe to a stream.
    Subscribe,
    /// Read stream messages and the state of streams and queues.
    Read,
    /// Enqueue jobs.
    QueueProduce,
    /// Reserve, ack and nack jobs.
    QueueConsume,
    /// Read and watch keys.
    KvRead,
    /// Set and delete keys.
    KvWrite,
    /// Create, update, purge and delete resources.
    Admin,
}

impl Op {
    /// Every op.
    pub fn all() -> [Op; 8] {
        [Op::Publish, Op::Subscribe, Op::Read, Op::QueueProduce, Op::QueueConsume, Op::KvRead, Op::KvWrite, Op::Admin]
    }

    /// The op's name in the access file (`publish`, `kv_read`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Op::Publish => "publish",
            Op::Subscribe => "subscribe",
            Op::Read => "read",
            Op::QueueProduce => "queue_produce",
            Op::QueueConsume => "queue_consume",
            Op::KvRead => "kv_read",
            Op::KvWrite => "kv_write",
            Op::Admin => "admin",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }

    fn parse(s: &str) -> Result<u16> {
        if s == "*" {
            return Ok(Op::all().iter().fold(0, |m, o| m | o.bit()));
        }
        Op::all().iter().find(|o| o.name() == s).map(|o| o.bit()).ok_or_else(|| {
            let known: Vec<&str> = Op::all().iter().map(|o| o.name()).collect();
            Error::invalid(format!("unknown operation {s:?}; known: {}, or *", known.join(", ")))
        })
    }
}

/// What creating a stream with default settings needs: it is what the first
/// publish or subscribe does anyway.
pub const CREATE_DEFAULT: &[Op] = &[Op::Admin, Op::Publish, Op::Subscribe];

/// The namespace only the broker writes (audit trail).
pub const SYSTEM_NAMESPACE: &str = "_system";

/// Glob over one string: `*` matches any run of characters (also none).
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[derive(Debug, Clone)]
enum Scope {
    /// `tenant/namespace/name`, each segment a glob.
    Resource([String; 3]),
    /// A namespace glob inside the token's tenant.
    Namespace(String),
}

#[derive(Debug, Clone)]
pub(crate) struct Grant {
    scope: Scope,
    ops: u16,
}

/// The operation bits of a list of operation names (`*` = all).
pub(crate) fn op_bits(names: &[&str]) -> Result<u16> {
    names.iter().try_fold(0u16, |m, o| Op::parse(o).map(|b| m | b))
}

impl Grant {
    /// `ops` on `tenant/namespace/name` (each a glob).
    pub(crate) fn resource(tenant: &str, ns: &str, name: &str, ops: u16) -> Grant {
        Grant { scope: Scope::Resource([tenant.into(), ns.into(), name.into()]), ops }
    }

    /// `ops` in a namespace glob inside the holder's tenant.
    pub(crate) fn namespace(ns: &str, ops: u16) -> Grant {
        Grant { scope: Scope::Namespace(ns.into()), ops }
    }

    fn covers(&self, tenant: &str, ns: &str, name: &str) -> bool {
        match &self.scope {
            Scope::Resource([t, n, r]) => glob(t, tenant) && glob(n, ns) && glob(r, name),
            Scope::Namespace(n) => glob(n, ns),
        }
    }
}

/// Per-token limits; `None` = unlimited.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Calls running at once.
    pub max_in_flight: Option<usize>,
    /// Subscriptions open at once.
    pub max_subscriptions: Option<usize>,
    /// Largest message the token may publish.
    pub max_message_bytes: Option<usize>,
    /// The same two limits for each connection (client) of the token.
    pub max_in_flight_per_connection: Option<usize>,
    /// See `max_in_flight_per_connection`.
    pub max_subscriptions_per_connection: Option<usize>,
}

#[derive(Debug)]
/// One token of the access file: who it is, its tenant, grants and limits.
pub struct TokenEntry {
    /// The name the token is audited and metered under.
    pub id: String,
    /// The only tenant it may act in.
    pub tenant: String,
    grants: Vec<Grant>,
    /// Its limits.
    pub limits: Limits,
    /// The identity user behind a session token (then `id` is `user:NAME`).
    pub user: Option<String>,
}

impl TokenEntry {
    /// The entry of a logged-in identity user: what the gate checks.
    pub(crate) fn for_user(user_id: &str, username: &str, tenant: &str, grants: Vec<Grant>) -> TokenEntry {
        TokenEntry {
            id: format!("user:{username}"),
            tenant: tenant.to_owned(),
            grants,
            limits: Limits::default(),
            user: Some(user_id.to_owned()),
        }
    }

    /// Whether a grant gives any of `ops` on the qualified `resource`.
    pub(crate) fn covers(&self, ops: &[Op], resource: &str) -> bool {
        let want = ops.iter().fold(0, |m, o| m | o.bit());
        let mut parts = resource.splitn(3, '/');
        let (Some(t), Some(ns), Some(n)) = (parts.next(), parts.next(), parts.next()) else {
            return false;
        };
        self.grants.iter().any(|g| g.ops & want != 0 && g.covers(t, ns, n))
    }
}

impl AuditEvent {
    /// Names who acted: the identity user, or the access-file token.
    pub(crate) fn by(self, entry: &TokenEntry) -> AuditEvent {
        match &entry.user {
            Some(u) => self.user(u),
            None => self.token(&entry.id),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGrant {
    resource: Option<String>,
    namespace: Option<String>,
    ops: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToken {
    id: String,
    sha256: String,
    tenant: String,
    #[serde(default)]
    grants: Vec<FileGrant>,
    #[serde(default)]
    limits: Limits,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessFile {
    tokens: Vec<FileToken>,
}

/// One loaded access file: token hash -> entry.
#[derive(Debug, Default)]
pub struct Table {
    by_hash: HashMap<String, Arc<TokenEntry>>,
}

impl Table {
    /// Parses and checks an access file's JSON; InvalidArgument naming the first problem.
    pub fn parse(text: &str) -> Result<Table> {
        let file: AccessFile =
            serde_json::from_str(text).map_err(|e| Error::invalid(format!("access file is not valid: {e}")))?;
        let mut by_hash = HashMap::new();
        let mut ids = std::collections::HashSet::new();
        for t in file.tokens {
            let at = |msg: String| Error::invalid(format!("access file, token {:?}: {msg}", t.id));
            if t.id.is_empty() || !ids.insert(t.id.clone()) {
                return Err(at("id must be non-empty and unique".into()));
            }
            let hash = t.sha256.to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(at("sha256 must be 64 hex digits (see `flowmesh token new`)".into()));
            }
            names::check_scope("tenant", &t.tenant).map_err(|e| at(e.message().to_owned()))?;
            let mut grants = Vec::new();
            for g in t.grants {
                let ops =
                    g.ops.iter().try_fold(0u16, |m, o| Op::parse(o).map(|b| m | b)).map_err(|e| at(e.to_string()))?;
                let scope = match (g.resource, g.namespace) {
                    (Some(r), None) => {
                        let parts: Vec<&str> = r.split('/').collect();
                        let [tn, ns, name] = parts[..] else {
                            return Err(at(format!("resource {r:?}: expected tenant/namespace/name (globs with *)")));
                        };
                        Scope::Resource([tn.into(), ns.into(), name.into()])
                    }
                    (None, Some(ns)) if !ns.is_empty() && !ns.contains('/') => Scope::Namespace(ns),
                    _ => return Err(at("each grant needs exactly one of resource or namespace".into())),
                };
                grants.push(Grant { scope, ops });
            }
            if by_hash.contains_key(&hash) {
                return Err(at("two tokens share one hash".into()));
            }
            let entry = TokenEntry { id: t.id, tenant: t.tenant, grants, limits: t.limits, user: None };
            by_hash.insert(hash, Arc::new(entry));
        }
        Ok(Table { by_hash })
    }

    fn tenants(&self) -> Vec<String> {
        let mut t: Vec<String> = self.by_hash.values().map(|e| e.tenant.clone()).collect();
        t.sort();
        t.dedup();
        t
    }
}

/// The hash of `token` as the access file stores it, so the file holds no secret.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Counters of one token, kept across reloads (keyed by token id).
#[derive(Debug, Default)]
pub struct Usage {
    in_flight: AtomicUsize,
    subscriptions: AtomicUsize,
}

type Counter = fn(&Usage) -> &AtomicUsize;
/// Counters per (token id, client address): one entry per live connection
/// that has something in flight, removed when it is idle again.
type ConnKey = (String, SocketAddr);
type ConnMap = Arc<Mutex<HashMap<ConnKey, Arc<Usage>>>>;

/// One unit of one counter, given back when dropped.
struct Unit(Arc<Usage>, Counter, Option<(ConnMap, ConnKey)>);

impl Drop for Unit {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_sub(1, Ordering::AcqRel);
        if let Some((map, key)) = &self.2 {
            // Units are taken under this lock, so "idle" cannot change here.
            let mut m = map.lock().unwrap();
            let idle =
                self.0.in_flight.load(Ordering::Acquire) == 0 && self.0.subscriptions.load(Ordering::Acquire) == 0;
            if idle && m.get(key).is_some_and(|u| Arc::ptr_eq(u, &self.0)) {
                m.remove(key);
            }
        }
    }
}

/// What a request or a stream holds against the limits (end of a request
/// or stream gives it back).
pub struct Slot {
    _units: Vec<Unit>,
}

fn take_unit(usage: &Arc<Usage>, which: Counter, limit: Option<usize>) -> Option<Unit> {
    let now = which(usage).fetch_add(1, Ordering::AcqRel) + 1;
    let unit = Unit(usage.clone(), which, None);
    match limit {
        Some(max) if now > max => None, // dropping `unit` gives it back
        _ => Some(unit),
    }
}

/// The authenticated caller of one request.
#[derive(Clone)]
pub struct Principal {
    /// The token's entry.
    pub entry: Arc<TokenEntry>,
    /// The token's hash: what a reloaded table is searched by.
    hash: String,
    usage: Arc<Usage>,
    /// Where the request came from, when known.
    pub peer: Option<SocketAddr>,
}

/// The broker's access control: the current table, reloadable.
pub struct AccessControl {
    path: PathBuf,
    table: RwLock<Arc<Table>>,
    usage: Mutex<HashMap<String, Arc<Usage>>>,
    conns: ConnMap,
    audit: OnceLock<Audit>,
    /// Bumped by every successful reload: open subscriptions and watches
    /// check their token again.
    reloads: tokio::sync::watch::Sender<u64>,
    /// Users and sessions of `serve --identity`.
    identity: OnceLock<Arc<Identity>>,
}

impl std::fmt::Debug for AccessControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessControl").field("path", &self.path).finish_non_exhaustive()
    }
}

impl AccessControl {
    /// Loads the access file; fails on any error (a broker must not start
    /// with a half-understood policy).
    pub fn load(path: &Path) -> Result<AccessControl> {
        Ok(AccessControl::with_table(path.to_owned(), read_table(path)?))
    }

    /// Access control without an access file: only identity sessions
    /// (`serve --identity` alone).
    pub fn without_file() -> AccessControl {
        AccessControl::with_table(PathBuf::new(), Table::default())
    }

    /// Fresh state (no usage, connections, audit or identity) around `table`.
    fn with_table(path: PathBuf, table: Table) -> AccessControl {
        AccessControl {
            path,
            table: RwLock::new(Arc::new(table)),
            usage: Mutex::default(),
            conns: ConnMap::default(),
            audit: OnceLock::new(),
            reloads: tokio::sync::watch::channel(0).0,
            identity: OnceLock::new(),
        }
    }

    pub(crate) fn attach_identity(&self, identity: Arc<Identity>) {
        let _ = self.identity.set(identity);
    }

    pub(crate) fn identity(&self) -> Option<&Arc<Identity>> {
        self.identity.get()
    }

    /// Identity changed (logout, disable, roles, grants): open
    /// subscriptions and watches check their caller again.
    pub(crate) fn changed(&self) {
        self.reloads.send_modify(|n| *n += 1);
    }

    /// The access-file entry of `token`, if any.
    pub(crate) fn token_entry(&self, token: &str) -> Option<Arc<TokenEntry>> {
        self.table.read().unwrap().by_hash.get(&hash_token(token)).cloned()
    }

    /// Reads the file again; on error the old table stays in force.
    pub fn reload(&self) -> Result<usize> {
        if self.path.as_os_str().is_empty() {
            return Ok(0);
        }
        match read_table(&self.path) {
            Ok(table) => {
                let n = table.by_hash.len();
                let tenants = table.tenants();
                *self.table.write().unwrap() = Arc::new(table);
                self.reloads.send_modify(|n| *n += 1);
                tracing::info!(path = %self.path.display(), tokens = n, "access file reloaded");
                if let Some(audit) = self.audit.get() {
                    for t in tenants {
                        audit.record(AuditEvent::new(&t, "token_reload", "", "ok").detail(format!("{n} tokens")));
                    }
                }
                Ok(n)
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "access file reload failed; keeping the previous one");
                Err(e)
            }
        }
    }

    /// Writes the audit events queued so far (bounded wait).
    pub(crate) async fn flush_audit(&self) {
        if let Some(a) = self.audit.get() {
            super::audit::flush(a, std::time::Duration::from_secs(2)).await;
        }
    }

    pub(crate) fn knows_tenant(&self, tenant: &str) -> bool {
        self.table.read().unwrap().by_hash.values().any(|e| e.tenant == tenant)
            || self.identity.get().is_some_and(|i| i.knows_tenant(tenant))
    }

    pub(crate) fn attach_audit(&self, audit: Audit) {
        let _ = self.audit.set(audit);
    }

    pub(crate) fn audit(&self, ev: AuditEvent) {
        if let Some(a) = self.audit.get() {
            a.record(ev);
        }
    }

    /// Who is calling: the token from the `authorization` metadata.
    /// `resource` only names the tenant whose audit trail hears of a failure.
    pub fn authenticate(
        &self,
        meta: &tonic::metadata::MetadataMap,
        peer: Option<SocketAddr>,
        op: &str,
        resource: &str,
    ) -> Result<Principal> {
        let token = meta
            .get(crate::wire::AUTH_KEY)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim());
        let refused = |outcome: &str, msg: &str| {
            // Only tenants of the access file get a trail: a caller naming
            // made-up tenants must not make the broker create streams.
            if let Some(t) = resource.split('/').next().filter(|t| self.knows_tenant(t)) {
                self.audit(AuditEvent::new(t, op, resource, outcome).peer(peer).detail(msg.to_owned()));
            }
            Error::Unauthorized(msg.to_owned())
        };
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(refused(
                "unauthenticated",
                "this broker requires a token: set the connect option token (Python auth_token)",
            ));
        };
        let hash = hash_token(token);
        let entry = match self.identity.get() {
            Some(identity) if sessions::is_session_token(token) => identity.entry_for(&hash),
            _ => self.table.read().unwrap().by_hash.get(&hash).cloned(),
        };
        let Some(entry) = entry else {
            return Err(refused("unauthenticated", "the token was not accepted (unknown, expired or revoked)"));
        };
        let usage = self.usage.lock().unwrap().entry(entry.id.clone()).or_default().clone();
        Ok(Principal { entry, hash, usage, peer })
    }

    /// Is `p`'s token still in the current table, with a grant for any of
    /// `ops` on `resource`? UNAUTHORIZED if a reload revoked either.
    pub fn revalidate(&self, p: &Principal, ops: &[Op], resource: &str) -> Result<()> {
        let entry = match (&p.entry.user, self.identity.get()) {
            (Some(_), Some(identity)) => identity.entry_for(&p.hash),
            _ => self.table.read().unwrap().by_hash.get(&p.hash).cloned(),
        };
        let Some(entry) = entry else {
            let why = match p.entry.user {
                Some(_) => "the session ended (logout, expiry, or the user was disabled or deleted)",
                None => "the token was revoked by an access file reload",
            };
            let ev = AuditEvent::new(&p.entry.tenant, ops[0].name(), resource, "revoked").by(&p.entry);
            self.audit(ev.peer(p.peer).detail(why.into()));
            return Err(Error::Unauthorized(format!("{:?}: {why}; the subscription is closed", p.entry.id)));
        };
        let now = Principal { entry, hash: p.hash.clone(), usage: p.usage.clone(), peer: p.peer };
        self.authorize(&now, ops, resource)
    }

    /// Resolves, with the refusal, once a reload makes `p`'s token invalid
    /// for `ops` on `resource` (never, while it stays valid).
    pub fn revoked(
        self: &Arc<Self>,
        p: Principal,
        ops: &'static [Op],
        resource: String,
    ) -> impl std::future::Future<Output = Error> + Send + 'static {
        let mut reloads = self.reloads.subscribe();
        let ac = Arc::clone(self);
        async move {
            loop {
                if reloads.changed().await.is_err() {
                    return std::future::pending().await;
                }
                if let Err(e) = ac.revalidate(&p, ops, &resource) {
                    return e;
                }
            }
        }
    }

    /// May `p` do any of `ops` on the qualified name `resource`?
    pub fn authorize(&self, p: &Principal, ops: &[Op], resource: &str) -> Result<()> {
        names::check_qualified(resource)?;
        let mut parts = resource.splitn(3, '/');
        let (tenant, ns, name) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        let op = ops[0].name();
        let deny = |msg: String| {
            let ev = AuditEvent::new(&p.entry.tenant, op, resource, "denied").by(&p.entry).peer(p.peer);
            self.audit(ev.detail(msg.clone()));
            if tenant != p.entry.tenant && self.knows_tenant(tenant) {
                // The tenant that was aimed at hears of it too.
                let ev = AuditEvent::new(tenant, op, resource, "denied").by(&p.entry).peer(p.peer);
                self.audit(ev.detail(msg.clone()));
            }
            Err(Error::Unauthorized(msg))
        };
        if tenant != p.entry.tenant {
            // Same answer whether or not the resource exists.
            return deny(format!(
                "token {:?} belongs to tenant {:?} and may not use resources of another tenant",
                p.entry.id, p.entry.tenant
            ));
        }
        let want = ops.iter().fold(0, |m, o| m | o.bit());
        if ns == SYSTEM_NAMESPACE {
            // Only the broker writes here; reading needs an admin grant.
            // Creating the audit stream with default settings (what a
            // subscription to it does first) is a read as well.
            let reads = ops.iter().all(|o| matches!(o, Op::Read | Op::Subscribe))
                || (ops == CREATE_DEFAULT && name == super::audit::AUDIT_STREAM);
            let admin = p.entry.grants.iter().any(|g| g.ops & Op::Admin.bit() != 0 && g.covers(tenant, ns, name));
            if !reads || !admin {
                return deny(format!(
                    "namespace {SYSTEM_NAMESPACE} is written by the broker only and read with an admin grant ({op} refused on {resource})"
                ));
            }
            return Ok(());
        }
        if p.entry.grants.iter().any(|g| g.ops & want != 0 && g.covers(tenant, ns, name)) {
            return Ok(());
        }
        let names: Vec<&str> = ops.iter().map(|o| o.name()).collect();
        deny(format!("token {:?} has no {} grant on {resource}", p.entry.id, names.join(" or ")))
    }

    /// Whether `p` may use the qualified name `resource` in any way: what a
    /// listing shows. Silent (no audit record), unlike [`Self::authorize`].
    pub fn may_see(&self, p: &Principal, resource: &str) -> bool {
        let mut parts = resource.splitn(3, '/');
        let (Some(tenant), Some(ns), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return false;
        };
        if tenant != p.entry.tenant {
            return false;
        }
        let any = if ns == SYSTEM_NAMESPACE { Op::Admin.bit() } else { u16::MAX };
        p.entry.grants.iter().any(|g| g.ops & any != 0 && g.covers(tenant, ns, name))
    }

    /// A listing with `prefix` (the start of a qualified name) may only
    /// reach into the token's own tenant; refused (and audited) otherwise.
    pub fn authorize_listing(&self, p: &Principal, op: &str, prefix: &str) -> Result<()> {
        let own = format!("{}/", p.entry.tenant);
        if prefix.starts_with(&own) || own.starts_with(prefix) {
            return Ok(());
        }
        let msg = format!(
            "token {:?} belongs to tenant {:?} and may not list resources of another tenant",
            p.entry.id, p.entry.tenant
        );
        let ev = AuditEvent::new(&p.entry.tenant, op, prefix, "denied").by(&p.entry).peer(p.peer);
        self.audit(ev.detail(msg.clone()));
        if let Some(target) = prefix.split_once('/').map(|(t, _)| t).filter(|t| self.knows_tenant(t)) {
            // The tenant that was aimed at hears of it too.
            let ev = AuditEvent::new(target, op, prefix, "denied").by(&p.entry).peer(p.peer);
            self.audit(ev.detail(msg.clone()));
        }
        Err(Error::Unauthorized(msg))
    }

    /// A unit of the caller's connection counter, if the token limits it.
    fn conn_unit(&self, p: &Principal, which: Counter, limit: Option<usize>) -> std::result::Result<Option<Unit>, ()> {
        let (Some(max), Some(peer)) = (limit, p.peer) else {
            return Ok(None);
        };
        let key = (p.entry.id.clone(), peer);
        let unit = {
            let mut m = self.conns.lock().unwrap();
            let usage = m.entry(key.clone()).or_default().clone();
            let now = which(&usage).fetch_add(1, Ordering::AcqRel) + 1;
            (now, Unit(usage, which, Some((self.conns.clone(), key))))
        };
        match unit {
            (now, _) if now > max => Err(()), // the unit is given back here
            (_, u) => Ok(Some(u)),
        }
    }

    fn slot(
        &self,
        p: &Principal,
        which: Counter,
        token_max: Option<usize>,
        conn_max: Option<usize>,
        what: &str,
    ) -> Result<Slot> {
        let id = &p.entry.id;
        let token = take_unit(&p.usage, which, token_max).ok_or_else(|| {
            Error::Unavailable(format!(
                "token {id:?} has too many {what} (limit {}); retry later",
                token_max.unwrap_or_default()
            ))
        })?;
        let conn = self.conn_unit(p, which, conn_max).map_err(|()| {
            Error::Unavailable(format!(
                "this connection of token {id:?} has too many {what} (limit {} per connection); retry later",
                conn_max.unwrap_or_default()
            ))
        })?;
        Ok(Slot { _units: std::iter::once(token).chain(conn).collect() })
    }

    /// One more request in flight for this token (and connection), if the
    /// limits allow.
    pub fn request_slot(&self, p: &Principal) -> Result<Slot> {
        let l = &p.entry.limits;
        self.slot(p, |u| &u.in_flight, l.max_in_flight, l.max_in_flight_per_connection, "requests in flight")
    }

    /// One more open subscription or watch for this token (and connection).
    pub fn subscription_slot(&self, p: &Principal) -> Result<Slot> {
        let l = &p.entry.limits;
        self.slot(
            p,
            |u| &u.subscriptions,
            l.max_subscriptions,
            l.max_subscriptions_per_connection,
            "open subscriptions",
        )
    }

    #[cfg(test)]
    fn connections(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    /// An admin action that went through, for the tenant's audit trail.
    pub fn audit_ok(&self, p: &Principal, op: &str, resource: &str) {
        self.audit(AuditEvent::new(&p.entry.tenant, op, resource, "ok").by(&p.entry).peer(p.peer));
    }
}

fn read_table(path: &Path) -> Result<Table> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::invalid(format!("cannot read access file {}: {e}", path.display())))?;
    Table::parse(&text).map_err(|e| Error::invalid(format!("{}: {}", path.display(), e.message())))
}

/// A new random token (`fmt_` + 256 bits in hex) for `flowmesh token new`.
pub fn new_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| Error::Internal(format!("no randomness for a token: {e}")))?;
    Ok(format!("fmt_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("orders*", "orders-eu"));
        assert!(glob("*-eu", "orders-eu"));
        assert!(glob("a*c*e", "abcde"));
        assert!(!glob("orders", "orders2"));
        assert!(!glob("a*c", "abd"));
    }

    fn principal(json: &str) -> (AccessControl, Principal) {
        let table = Table::parse(json).unwrap();
        let (hash, entry) = table.by_hash.iter().next().map(|(h, e)| (h.clone(), e.clone())).unwrap();
        let ac = AccessControl::with_table(PathBuf::new(), table);
        (ac, Principal { entry, hash, usage: Arc::default(), peer: None })
    }

    #[test]
    fn grants_tenants_and_system_namespace() {
        let h = hash_token("x");
        let (ac, p) = principal(&format!(
            r#"{{"tokens":[{{"id":"r","sha256":"{h}","tenant":"acme","grants":[
                {{"namespace":"prod","ops":["read","subscribe"]}},
                {{"resource":"acme/dev/orders*","ops":["*"]}}]}}]}}"#
        ));
        assert!(ac.authorize(&p, &[Op::Read], "acme/prod/x").is_ok());
        assert!(ac.authorize(&p, &[Op::Publish], "acme/prod/x").is_err());
        assert!(ac.authorize(&p, &[Op::Publish], "acme/dev/orders-eu").is_ok());
        assert!(ac.authorize(&p, &[Op::Publish], "acme/dev/other").is_err());
        let other = ac.authorize(&p, &[Op::Read], "globex/prod/x").unwrap_err();
        assert!(matches!(other, Error::Unauthorized(_)));
        assert!(ac.authorize(&p, &[Op::Read], "acme/_system/_audit").is_err());
        let h = hash_token("y");
        let (ac, admin) = principal(&format!(
            r#"{{"tokens":[{{"id":"a","sha256":"{h}","tenant":"acme","grants":[{{"namespace":"*","ops":["*"]}}]}}]}}"#
        ));
        assert!(ac.authorize(&admin, &[Op::Subscribe], "acme/_system/_audit").is_ok());
        assert!(ac.authorize(&admin, CREATE_DEFAULT, "acme/_system/_audit").is_ok());
        assert!(ac.authorize(&admin, CREATE_DEFAULT, "acme/_system/other").is_err());
        assert!(ac.authorize(&admin, &[Op::Publish], "acme/_system/_audit").is_err());
        assert!(ac.authorize(&admin, &[Op::Admin], "acme/_system/_audit").is_err());
        assert!(ac.authorize(&p, &[Op::Publish, Op::Subscribe], "acme/prod/x").is_ok());
    }

    #[test]
    fn bad_files_are_refused() {
        let h = hash_token("x");
        for bad in [
            "{}".to_owned(),
            r#"{"tokens":[{"id":"a","sha256":"zz","tenant":"t"}]}"#.to_owned(),
            format!(
                r#"{{"tokens":[{{"id":"a","sha256":"{h}","tenant":"t","grants":[{{"namespace":"n","ops":["fly"]}}]}}]}}"#
            ),
            format!(r#"{{"tokens":[{{"id":"a","sha256":"{h}","tenant":"t","grants":[{{"ops":["read"]}}]}}]}}"#),
            format!(r#"{{"tokens":[{{"id":"a","sha256":"{h}","tenant":"t/x"}}]}}"#),
        ] {
            assert!(Table::parse(&bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn limits_give_slots_back() {
        let h = hash_token("x");
        let (ac, p) = principal(&format!(
            r#"{{"tokens":[{{"id":"a","sha256":"{h}","tenant":"t","limits":{{"max_in_flight":1}}}}]}}"#
        ));
        let first = ac.request_slot(&p).unwrap();
        assert!(ac.request_slot(&p).is_err());
        drop(first);
        assert!(ac.request_slot(&p).is_ok());

        let (ac, mut p) = principal(&format!(
            r#"{{"tokens":[{{"id":"a","sha256":"{h}","tenant":"t","limits":{{"max_in_flight_per_connection":1}}}}]}}"#
        ));
        p.peer = Some("127.0.0.1:1000".parse().unwrap());
        let mut q = p.clone();
        q.peer = Some("127.0.0.1:1001".parse().unwrap());
        let a = ac.request_slot(&p).unwrap();
        let err = ac.request_slot(&p).err().unwrap();
        assert!(err.message().contains("per connection"), "{err}");
        let b = ac.request_slot(&q).unwrap(); // another connection of the token
        assert_eq!(ac.connections(), 2);
        drop((a, b));
        assert_eq!(ac.connections(), 0, "idle connections are forgotten");
    }
}
