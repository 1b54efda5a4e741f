//! Identity of a broker started with `--identity`: users with argon2id
//! passwords, expiring sessions, roles, ACL grants and ownership. It grows
//! the access-file model rather than adding a second one: a session token is
//! one more kind of bearer token, and the gate turns a session into the same
//! [`TokenEntry`] (tenant + grants) an access-file token has, so every
//! check, limit, audit record and revocation of docs/SECURITY.md applies.
//!
//! State lives in the broker's own engine, in the KV bucket
//! `_flowmesh/_system/identity` (keys `user/ID`, `role/TENANT/NAME`,
//! `acl/KEY`, `owner/QUALIFIED`, `session/SHA256` with the session's TTL),
//! and is read into memory at startup; every change is written through.

pub(crate) mod acl;
pub(crate) mod ownership;
pub mod passwords;
pub(crate) mod roles;
mod service;
pub(crate) mod sessions;
pub(crate) mod users;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};

use super::auth::{hash_token, Grant, Op, TokenEntry};
use crate::engine::Engine;
use crate::error::{Error, Result};
use ownership::Owner;
use passwords::{HashCost, Hasher};
use roles::{Manage, Role, SUPERADMIN};
use sessions::Session;
use users::User;

pub(crate) use service::IdentityService;

/// The KV bucket of the identity state (tenant `_flowmesh` is the broker's).
pub(crate) const BUCKET: &str = "_flowmesh/_system/identity";
/// The id and username of the bootstrap admin.
pub(crate) const ADMIN_ID: &str = "admin";

#[derive(Debug, Clone)]
/// Settings of the identity service (`serve --identity`).
pub struct IdentityConfig {
    /// What `login_with_secret` takes (`--admin-secret`).
    pub admin_secret: String,
    /// The bootstrap admin's tenant (`--admin-tenant`, default `default`).
    pub admin_tenant: String,
    /// How long a session lives without refresh_session.
    pub session_ttl_ms: u64,
    /// Cost of new password hashes.
    pub hash_cost: HashCost,
}

impl IdentityConfig {
    /// Defaults around `admin_secret`: tenant `default`, sessions of one hour, the default hash cost.
    pub fn new(admin_secret: &str) -> IdentityConfig {
        IdentityConfig {
            admin_secret: admin_secret.to_owned(),
            admin_tenant: "default".into(),
            session_ttl_ms: 3_600_000,
            hash_cost: HashCost::default(),
        }
    }
}

#[derive(Default)]
struct State {
    users: HashMap<String, User>,
    by_name: HashMap<String, String>,
    /// `TENANT/NAME` -> role; the built-in superadmin is `*/superadmin`.
    roles: BTreeMap<String, Role>,
    acl: BTreeMap<String, acl::Entry>,
    /// qualified resource name -> owner
    owners: HashMap<String, Owner>,
    /// SHA-256 of the session token -> session
    sessions: HashMap<String, Session>,
}

impl State {
    fn role(&self, tenant: &str, name: &str) -> Option<&Role> {
        if name == SUPERADMIN {
            return self.roles.get(&format!("*/{SUPERADMIN}"));
        }
        self.roles.get(&format!("{tenant}/{name}"))
    }

    fn user_roles(&self, u: &User) -> Vec<&Role> {
        u.roles.iter().filter_map(|r| self.role(&u.tenant, r)).collect()
    }

    fn is_superadmin(&self, u: &User) -> bool {
        u.roles.iter().any(|r| r == SUPERADMIN)
    }

    fn grants(&self, u: &User) -> Vec<Grant> {
        let mut g: Vec<Grant> = self.user_roles(u).iter().flat_map(|r| r.grants(&u.tenant)).collect();
        g.extend(self.acl.values().filter(|e| e.user_id == u.id).flat_map(|e| e.grants(&u.tenant)));
        let all = super::auth::op_bits(&["*"]).unwrap_or(0);
        for (q, o) in &self.owners {
            let mut parts = q.splitn(3, '/');
            if let (Some(t), Some(ns), Some(n)) = (parts.next(), parts.next(), parts.next()) {
                if o.user_id == u.id && t == u.tenant {
                    g.push(Grant::resource(t, ns, n, all));
                }
            }
        }
        g
    }
}

/// Who sent an identity request.
#[derive(Clone, Default)]
pub(crate) struct Caller {
    /// An access-file token or a session's entry.
    pub entry: Option<Arc<TokenEntry>>,
    /// The session user, and the session's hash.
    pub user: Option<(User, String)>,
    pub peer: Option<std::net::SocketAddr>,
}

impl Caller {
    pub fn tenant(&self) -> Option<&str> {
        self.entry.as_ref().map(|e| e.tenant.as_str())
    }
}

/// A change that went through: audited in `tenant` on `resource`.
pub(crate) struct Done {
    pub value: Value,
    pub audit: Option<(String, String)>,
    /// Whether open subscriptions must check their callers again.
    pub revokes: bool,
}

impl Done {
    fn read(value: Value) -> Done {
        Done { value, audit: None, revokes: false }
    }
    fn change(value: Value, tenant: &str, resource: impl Into<String>) -> Done {
        Done { value, audit: Some((tenant.to_owned(), resource.into())), revokes: false }
    }
    fn revoking(mut self) -> Done {
        self.revokes = true;
        self
    }
}

pub(crate) struct Identity {
    cfg: IdentityConfig,
    engine: Arc<dyn Engine>,
    hasher: Arc<Hasher>,
    secret_hash: String,
    state: RwLock<State>,
    /// Serializes changes, so writes reach the bucket in the order made.
    writes: tokio::sync::Mutex<()>,
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn denied(msg: impl Into<String>) -> Error {
    Error::Unauthorized(msg.into())
}

fn field<'a>(req: &'a Value, name: &str) -> Result<&'a str> {
    req.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid(format!("{}: the field {name:?} (a string) is missing", kind_of(req))))
}

fn kind_of(req: &Value) -> &str {
    req.get("type").and_then(Value::as_str).unwrap_or("request")
}

fn same_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Identity {
    /// Opens the identity state in `engine` (creating the bootstrap admin).
    pub async fn open(engine: Arc<dyn Engine>, cfg: IdentityConfig) -> Result<Arc<Identity>> {
        if cfg.admin_secret.len() < 8 {
            return Err(Error::invalid("--admin-secret: at least 8 characters"));
        }
        crate::names::check_scope("--admin-tenant", &cfg.admin_tenant)?;
        let cost = cfg.hash_cost;
        let hasher = tokio::task::spawn_blocking(move || Hasher::new(cost))
            .await
            .map_err(|e| Error::Internal(format!("hasher: {e}")))??;
        let identity = Identity {
            secret_hash: hash_token(&cfg.admin_secret),
            cfg,
            engine,
            hasher: Arc::new(hasher),
            state: RwLock::default(),
            writes: tokio::sync::Mutex::new(()),
        };
        identity.load().await?;
        identity.bootstrap().await?;
        Ok(Arc::new(identity))
    }

    async fn load(&self) -> Result<()> {
        let keys = match self.engine.kv_keys(BUCKET, "").await {
            Ok(k) => k,
            Err(Error::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e),
        };
        let now = now_ms();
        let mut st = State::default();
        for key in keys {
            let value = match self.engine.kv_get(BUCKET, &key).await {
                Ok(e) => e.value,
                Err(Error::NotFound(_)) => continue, // expired session
                Err(e) => return Err(e),
            };
            let (kind, rest) = key.split_once('/').unwrap_or((&key, ""));
            let bad = |e: serde_json::Error| Error::Internal(format!("identity state {key:?} is not valid: {e}"));
            match kind {
                "user" => {
                    let u: User = serde_json::from_slice(&value).map_err(bad)?;
                    st.by_name.insert(u.username.clone(), u.id.clone());
                    st.users.insert(u.id.clone(), u);
                }
                "role" => {
                    st.roles.insert(rest.to_owned(), serde_json::from_slice(&value).map_err(bad)?);
                }
                "acl" => {
                    st.acl.insert(rest.to_owned(), serde_json::from_slice(&value).map_err(bad)?);
                }
                "owner" => {
                    st.owners.insert(rest.to_owned(), serde_json::from_slice(&value).map_err(bad)?);
                }
                "session" => {
                    let s: Session = serde_json::from_slice(&value).map_err(bad)?;
                    if s.live(now) {
                        st.sessions.insert(rest.to_owned(), s);
                    }
                }
                _ => tracing::warn!(%key, "unknown key in the identity bucket, ignored"),
            }
        }
        *self.state.write().unwrap() = st;
        Ok(())
    }

    async fn bootstrap(&self) -> Result<()> {
        let now = now_ms();
        let role_key = format!("*/{SUPERADMIN}");
        let (role, admin) = {
            let mut st = self.state.write().unwrap();
            let role = (!st.roles.contains_key(&role_key)).then(|| Role::superadmin(now));
            if let Some(r) = &role {
                st.roles.insert(role_key.clone(), r.clone());
            }
            let admin = match st.users.get(ADMIN_ID) {
                Some(_) => None,
                None => {
                    let u = User {
                        id: ADMIN_ID.into(),
                        username: ADMIN_ID.into(),
                        tenant: self.cfg.admin_tenant.clone(),
                        display_name: Some("bootstrap admin".into()),
                        email: None,
                        enabled: true,
                        roles: vec![SUPERADMIN.into()],
                        metadata: Value::Null,
                        password_hash: None,
                        created_at: now,
                        updated_at: now,
                    };
                    st.by_name.insert(u.username.clone(), u.id.clone());
                    st.users.insert(u.id.clone(), u.clone());
                    Some(u)
                }
            };
            (role, admin)
        };
        if let Some(r) = role {
            self.put(&format!("role/{role_key}"), &r, 0).await?;
        }
        if let Some(u) = admin {
            self.put(&format!("user/{}", u.id), &u, 0).await?;
        }
        Ok(())
    }

    async fn put(&self, key: &str, value: &impl Serialize, ttl_ms: u64) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| Error::Internal(format!("identity state: {e}")))?;
        self.engine.kv_set(BUCKET, key, Bytes::from(bytes), ttl_ms).await.map(|_| ())
    }

    async fn del(&self, key: &str) -> Result<()> {
        self.engine.kv_delete(BUCKET, key).await.map(|_| ())
    }

    pub fn knows_tenant(&self, tenant: &str) -> bool {
        self.state.read().unwrap().users.values().any(|u| u.tenant == tenant)
    }

    /// The gate's view of a session (by the token's SHA-256): `None` when
    /// unknown, expired, or its user is disabled or gone.
    pub fn entry_for(&self, hash: &str) -> Option<Arc<TokenEntry>> {
        let st = self.state.read().unwrap();
        let s = st.sessions.get(hash).filter(|s| s.live(now_ms()))?;
        let u = st.users.get(&s.user_id).filter(|u| u.enabled)?;
        Some(Arc::new(TokenEntry::for_user(&u.id, &u.username, &u.tenant, st.grants(u))))
    }

    /// The user behind a session token hash, if the session is live.
    pub fn session_user(&self, hash: &str) -> Option<User> {
        let st = self.state.read().unwrap();
        let s = st.sessions.get(hash).filter(|s| s.live(now_ms()))?;
        st.users.get(&s.user_id).filter(|u| u.enabled).cloned()
    }

    /// After the gate admitted a write by a session user: the first writer
    /// of a resource without an owner becomes its owner.
    pub fn note_write(self: &Arc<Self>, entry: &TokenEntry, ops: &[Op], resource: &str) {
        let (Some(user), Some(kind)) = (&entry.user, ownership::created_kind(ops)) else {
            return;
        };
        if self.state.read().unwrap().owners.contains_key(resource) {
            return;
        }
        let owner = Owner { user_id: user.clone(), kind: kind.into(), since: now_ms() };
        {
            let mut st = self.state.write().unwrap();
            if st.owners.contains_key(resource) {
                return;
            }
            st.owners.insert(resource.to_owned(), owner.clone());
        }
        let me = self.clone();
        let key = format!("owner/{resource}");
        tokio::spawn(async move {
            let _w = me.writes.lock().await;
            if let Err(e) = me.put(&key, &owner, 0).await {
                tracing::error!(%key, error = %e, "cannot record the owner");
            }
        });
    }

    /// The tenant whose trail hears of a failed login: the named user's,
    /// else the bootstrap admin's.
    pub fn tenant_for_login(&self, username: Option<&str>) -> String {
        let st = self.state.read().unwrap();
        username
            .and_then(|n| st.by_name.get(n))
            .and_then(|id| st.users.get(id))
            .map_or_else(|| self.cfg.admin_tenant.clone(), |u| u.tenant.clone())
    }

    pub fn tenant_of_user(&self, id: &str) -> Option<String> {
        self.state.read().unwrap().users.get(id).map(|u| u.tenant.clone())
    }

    pub fn may_read_audit(&self, c: &Caller, tenant: &str) -> bool {
        self.may(c, Manage::Audit, tenant).is_ok()
    }

    // ---- permission checks -------------------------------------------------

    fn user_of<'a>(&self, c: &'a Caller) -> Result<&'a User> {
        c.user.as_ref().map(|(u, _)| u).ok_or_else(|| {
            denied("this call needs an identity session: log in with identity.login or identity.login_with_secret")
        })
    }

    /// Whether the caller holds `m` in `tenant` (a superadmin: everywhere).
    fn may(&self, c: &Caller, m: Manage, tenant: &str) -> Result<()> {
        let u = self.user_of(c)?;
        let st = self.state.read().unwrap();
        if st.is_superadmin(u) || (u.tenant == tenant && st.user_roles(u).iter().any(|r| r.allows(m))) {
            return Ok(());
        }
        Err(denied(format!("user {:?} has no {} permission in tenant {tenant:?}", u.username, m.name())))
    }

    /// The tenant a request acts in: its `tenant` field, else the caller's.
    fn tenant_of(&self, c: &Caller, req: &Value) -> Result<String> {
        match req.get("tenant").and_then(Value::as_str) {
            Some(t) => {
                crate::names::check_scope("tenant", t)?;
                if t.starts_with('_') {
                    return Err(Error::invalid("tenants starting with _ are the broker's"));
                }
                Ok(t.to_owned())
            }
            None => c.tenant().map(str::to_owned).ok_or_else(|| denied("this call needs an identity session")),
        }
    }

    /// A user the caller may manage (users.manage in the user's tenant);
    /// unknown users are NOT_FOUND only to callers who may manage users.
    fn managed_user(&self, c: &Caller, id: &str, m: Manage) -> Result<User> {
        let found = self.state.read().unwrap().users.get(id).cloned();
        match found {
            Some(u) => self.may(c, m, &u.tenant).map(|()| u),
            None => {
                let own = self.user_of(c)?.tenant.clone();
                self.may(c, m, &own)?;
                Err(Error::NotFound(format!("no user {id:?}")))
            }
        }
    }

    /// The caller itself, or a user it may manage.
    fn self_or_managed(&self, c: &Caller, id: &str) -> Result<User> {
        match &c.user {
            Some((u, _)) if u.id == id => Ok(self.state.read().unwrap().users.get(id).cloned().unwrap_or(u.clone())),
            _ => self.managed_user(c, id, Manage::Users),
        }
    }

    fn session_json(&self, u: &User, s: &Session, token: Option<&str>) -> Value {
        let mut v = json!({
            "userId": u.id,
            "username": u.username,
            "tenant": u.tenant,
            "roles": u.roles,
            "expiresAt": s.expires_at,
            "user": u.to_json(),
        });
        if let Some(t) = token {
            v["token"] = json!(t);
        }
        v
    }

    // ---- requests ----------------------------------------------------------

    /// Runs one identity request (its `type` and fields, as in
    /// docs/SECURITY.md) for `c`.
    pub async fn handle(&self, c: &Caller, req: &Value) -> Result<Done> {
        let kind = kind_of(req).to_owned();
        let op = kind.strip_prefix("identity.").ok_or_else(|| Error::invalid(format!("unknown request {kind:?}")))?;
        let _w = self.writes.lock().await;
        match op {
            "login" => self.login(req).await,
            "login_with_secret" => self.login_with_secret(req).await,
            "whoami" => self.whoami(c),
            "refresh_session" => self.refresh(c).await,
            "logout" => self.logout(c).await,
            "create_user" => self.create_user(c, req).await,
            "get_user" => Ok(Done::read(self.self_or_managed(c, field(req, "userId")?)?.to_json())),
            "update_user" => self.update_user(c, req).await,
            "list_users" => self.list_users(c, req),
            "enable_user" => self.set_enabled(c, req, true).await,
            "disable_user" => self.set_enabled(c, req, false).await,
            "delete_user" => self.delete_user(c, req).await,
            "change_password" => self.change_password(c, req).await,
            "reset_password" => self.reset_password(c, req).await,
            "create_role" => self.create_role(c, req).await,
            "update_role" => self.update_role(c, req).await,
            "delete_role" => self.delete_role(c, req).await,
            "list_roles" => self.list_roles(c, req),
            "assign_role" => self.assign_role(c, req, true).await,
            "remove_role" => self.assign_role(c, req, false).await,
            "get_user_roles" => self.get_user_roles(c, req),
            "grant" => self.grant(c, req, true).await,
            "revoke" => self.grant(c, req, false).await,
            "get_acl" => self.get_acl(c, req),
            "my_access" => self.my_access(c),
            "get_owner" => self.get_owner(c, req),
            "transfer_owner" => self.transfer_owner(c, req).await,
            _ => Err(Error::invalid(format!("unknown request {kind:?}"))),
        }
    }

    async fn verify(&self, stored: Option<String>, password: String) -> Result<bool> {
        let h = self.hasher.clone();
        tokio::task::spawn_blocking(move || h.verify(stored.as_deref(), &password))
            .await
            .map_err(|e| Error::Internal(format!("password check: {e}")))
    }

    async fn hash(&self, password: &str) -> Result<String> {
        passwords::check_new(password)?;
        let (h, pw) = (self.hasher.clone(), password.to_owned());
        tokio::task::spawn_blocking(move || h.hash(&pw)).await.map_err(|e| Error::Internal(format!("hash: {e}")))?
    }

    async fn start_session(&self, u: &User) -> Result<Done> {
        let token = sessions::new_token()?;
        let now = now_ms();
        let s = Session { user_id: u.id.clone(), created_at: now, expires_at: now + self.cfg.session_ttl_ms };
        let hash = hash_token(&token);
        self.state.write().unwrap().sessions.insert(hash.clone(), s.clone());
        self.put(&format!("session/{hash}"), &s, self.cfg.session_ttl_ms).await?;
        Ok(Done::change(self.session_json(u, &s, Some(&token)), &u.tenant, format!("user:{}", u.id)))
    }

    async fn login(&self, req: &Value) -> Result<Done> {
        let (name, password) = (field(req, "username")?, field(req, "password")?);
        let user = {
            let st = self.state.read().unwrap();
            st.by_name.get(name).and_then(|id| st.users.get(id)).cloned()
        };
        // The same argon2 work whether or not the user exists.
        let ok = self.verify(user.as_ref().and_then(|u| u.password_hash.clone()), password.to_owned()).await?;
        match user {
            Some(u) if ok && u.enabled => self.start_session(&u).await,
            Some(u) if ok => Err(denied(format!("user {:?} is disabled", u.username))),
            _ => Err(denied("invalid username or password")),
        }
    }

    async fn login_with_secret(&self, req: &Value) -> Result<Done> {
        let secret = field(req, "secret")?;
        if !same_time_eq(&hash_token(secret), &self.secret_hash) {
            return Err(denied("the admin secret was not accepted"));
        }
        let admin = self.state.read().unwrap().users.get(ADMIN_ID).cloned();
        match admin {
            Some(u) if u.enabled => self.start_session(&u).await,
            _ => Err(denied("the bootstrap admin is disabled")),
        }
    }

    fn whoami(&self, c: &Caller) -> Result<Done> {
        let u = self.user_of(c)?;
        let hash = &c.user.as_ref().expect("user_of checked").1;
        let s = self.state.read().unwrap().sessions.get(hash).cloned().ok_or_else(|| denied("the session ended"))?;
        Ok(Done::read(self.session_json(u, &s, None)))
    }

    async fn refresh(&self, c: &Caller) -> Result<Done> {
        let u = self.user_of(c)?.clone();
        let hash = c.user.as_ref().expect("user_of checked").1.clone();
        let s = {
            let mut st = self.state.write().unwrap();
            let s = st.sessions.get_mut(&hash).ok_or_else(|| denied("the session ended"))?;
            s.expires_at = now_ms() + self.cfg.session_ttl_ms;
            s.clone()
        };
        self.put(&format!("session/{hash}"), &s, self.cfg.session_ttl_ms).await?;
        Ok(Done::change(self.session_json(&u, &s, None), &u.tenant, format!("user:{}", u.id)))
    }

    async fn logout(&self, c: &Caller) -> Result<Done> {
        let u = self.user_of(c)?.clone();
        let hash = c.user.as_ref().expect("user_of checked").1.clone();
        self.state.write().unwrap().sessions.remove(&hash);
        self.del(&format!("session/{hash}")).await?;
        Ok(Done::change(Value::Null, &u.tenant, format!("user:{}", u.id)).revoking())
    }

    /// Ends every session of `user_id` (disable, delete, reset_password).
    async fn end_sessions(&self, user_id: &str) -> Result<()> {
        let gone: Vec<String> = {
            let mut st = self.state.write().unwrap();
            let gone: Vec<String> =
                st.sessions.iter().filter(|(_, s)| s.user_id == user_id).map(|(h, _)| h.clone()).collect();
            for h in &gone {
                st.sessions.remove(h);
            }
            gone
        };
        for h in gone {
            self.del(&format!("session/{h}")).await?;
        }
        Ok(())
    }

    async fn save_user(&self, u: &User) -> Result<()> {
        {
            let mut st = self.state.write().unwrap();
            st.by_name.insert(u.username.clone(), u.id.clone());
            st.users.insert(u.id.clone(), u.clone());
        }
        self.put(&format!("user/{}", u.id), u, 0).await
    }

    fn check_roles_assignable(&self, c: &Caller, tenant: &str, names: &[String]) -> Result<()> {
        let st = self.state.read().unwrap();
        for r in names {
            if st.role(tenant, r).is_none() {
                return Err(Error::NotFound(format!("no role {r:?} in tenant {tenant:?}")));
            }
            if r == SUPERADMIN && !c.user.as_ref().is_some_and(|(u, _)| st.is_superadmin(u)) {
                return Err(denied("only a superadmin may give the superadmin role"));
            }
        }
        Ok(())
    }

    async fn create_user(&self, c: &Caller, req: &Value) -> Result<Done> {
        let tenant = self.tenant_of(c, req)?;
        self.may(c, Manage::Users, &tenant)?;
        let username = field(req, "username")?;
        users::check_username(username)?;
        let password = field(req, "password")?;
        let roles: Vec<String> = match req.get("roles") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => serde_json::from_value(v.clone()).map_err(|_| Error::invalid("roles: a list of role names"))?,
        };
        self.check_roles_assignable(c, &tenant, &roles)?;
        if self.state.read().unwrap().by_name.contains_key(username) {
            return Err(Error::AlreadyExists(format!("user {username:?} exists")));
        }
        let now = now_ms();
        let mut u = User {
            id: users::new_id()?,
            username: username.to_owned(),
            tenant: tenant.clone(),
            display_name: None,
            email: None,
            enabled: true,
            roles,
            metadata: Value::Null,
            password_hash: Some(self.hash(password).await?),
            created_at: now,
            updated_at: now,
        };
        let mut extra = req.clone();
        if let Some(o) = extra.as_object_mut() {
            for k in ["type", "username", "password", "roles", "tenant"] {
                o.remove(k);
            }
        }
        u.apply(&extra)?;
        self.save_user(&u).await?;
        Ok(Done::change(u.to_json(), &tenant, format!("user:{}", u.id)))
    }

    async fn update_user(&self, c: &Caller, req: &Value) -> Result<Done> {
        let mut u = self.self_or_managed(c, field(req, "userId")?)?;
        let mut changes = req.get("changes").cloned().unwrap_or_else(|| req.clone());
        if let Some(o) = changes.as_object_mut() {
            o.remove("type");
        }
        u.apply(&changes)?;
        u.updated_at = now_ms();
        self.save_user(&u).await?;
        Ok(Done::change(u.to_json(), &u.tenant.clone(), format!("user:{}", u.id)))
    }

    fn list_users(&self, c: &Caller, req: &Value) -> Result<Done> {
        let tenant = self.tenant_of(c, req)?;
        self.may(c, Manage::Users, &tenant)?;
        let page = req.get("page").and_then(Value::as_u64).unwrap_or(1).max(1);
        let size = req.get("pageSize").and_then(Value::as_u64).unwrap_or(20).clamp(1, 1000);
        let st = self.state.read().unwrap();
        let mut all: Vec<&User> = st.users.values().filter(|u| u.tenant == tenant).collect();
        all.sort_by(|a, b| a.username.cmp(&b.username));
        let total = all.len();
        let skip = ((page - 1) * size) as usize;
        let users: Vec<Value> = all.into_iter().skip(skip).take(size as usize).map(User::to_json).collect();
        Ok(Done::read(json!({"users": users, "total": total, "page": page, "pageSize": size})))
    }

    async fn set_enabled(&self, c: &Caller, req: &Value, enabled: bool) -> Result<Done> {
        let mut u = self.managed_user(c, field(req, "userId")?, Manage::Users)?;
        if !enabled && u.id == ADMIN_ID {
            return Err(Error::invalid("the bootstrap admin cannot be disabled"));
        }
        u.enabled = enabled;
        u.updated_at = now_ms();
        self.save_user(&u).await?;
        if !enabled {
            self.end_sessions(&u.id).await?;
        }
        Ok(Done::change(u.to_json(), &u.tenant.clone(), format!("user:{}", u.id)).revoking())
    }

    async fn delete_user(&self, c: &Caller, req: &Value) -> Result<Done> {
        let u = self.managed_user(c, field(req, "userId")?, Manage::Users)?;
        if u.id == ADMIN_ID {
            return Err(Error::invalid("the bootstrap admin cannot be deleted"));
        }
        self.end_sessions(&u.id).await?;
        let acl: Vec<String> = {
            let mut st = self.state.write().unwrap();
            st.users.remove(&u.id);
            st.by_name.remove(&u.username);
            let keys: Vec<String> = st.acl.iter().filter(|(_, e)| e.user_id == u.id).map(|(k, _)| k.clone()).collect();
            for k in &keys {
                st.acl.remove(k);
            }
            keys
        };
        for k in acl {
            self.del(&format!("acl/{k}")).await?;
        }
        self.del(&format!("user/{}", u.id)).await?;
        Ok(Done::change(Value::Null, &u.tenant, format!("user:{}", u.id)).revoking())
    }

    async fn change_password(&self, c: &Caller, req: &Value) -> Result<Done> {
        let me = self.user_of(c)?;
        let id = field(req, "userId")?;
        if me.id != id {
            return Err(denied("change_password changes the caller's own password; reset_password sets another's"));
        }
        let (current, new) = (field(req, "currentPassword")?, field(req, "newPassword")?);
        let mut u = self.state.read().unwrap().users.get(id).cloned().ok_or_else(|| denied("the session ended"))?;
        if !self.verify(u.password_hash.clone(), current.to_owned()).await? {
            return Err(denied("the current password is wrong"));
        }
        u.password_hash = Some(self.hash(new).await?);
        u.updated_at = now_ms();
        self.save_user(&u).await?;
        Ok(Done::change(Value::Null, &u.tenant, format!("user:{}", u.id)))
    }

    async fn reset_password(&self, c: &Caller, req: &Value) -> Result<Done> {
        let mut u = self.managed_user(c, field(req, "userId")?, Manage::Users)?;
        u.password_hash = Some(self.hash(field(req, "newPassword")?).await?);
        u.updated_at = now_ms();
        self.save_user(&u).await?;
        // Whoever knew the old password is logged out.
        self.end_sessions(&u.id).await?;
        Ok(Done::change(Value::Null, &u.tenant.clone(), format!("user:{}", u.id)).revoking())
    }

    /// A role of the caller's tenant (or `tenant`) by id or name.
    fn role_key(&self, c: &Caller, req: &Value, field_name: &str) -> Result<(String, String)> {
        let tenant = self.tenant_of(c, req)?;
        let name = field(req, field_name)?;
        roles::check_role_name(name)?;
        Ok((tenant, name.to_owned()))
    }

    async fn create_role(&self, c: &Caller, req: &Value) -> Result<Done> {
        let (tenant, name) = self.role_key(c, req, "name")?;
        self.may(c, Manage::Roles, &tenant)?;
        if name == SUPERADMIN {
            return Err(Error::AlreadyExists("superadmin is a built-in role".into()));
        }
        let perms = roles::check_permissions(req.get("permissions").unwrap_or(&json!([])))?;
        let key = format!("{tenant}/{name}");
        if self.state.read().unwrap().roles.contains_key(&key) {
            return Err(Error::AlreadyExists(format!("role {name:?} exists in tenant {tenant:?}")));
        }
        let role = Role {
            name: name.clone(),
            description: req.get("description").and_then(Value::as_str).map(str::to_owned),
            permissions: perms,
            builtin: false,
            created_at: now_ms(),
        };
        self.state.write().unwrap().roles.insert(key.clone(), role.clone());
        self.put(&format!("role/{key}"), &role, 0).await?;
        Ok(Done::change(role.to_json(), &tenant, format!("role:{name}")))
    }

    async fn update_role(&self, c: &Caller, req: &Value) -> Result<Done> {
        let (tenant, name) = self.role_key(c, req, "roleId")?;
        self.may(c, Manage::Roles, &tenant)?;
        let key = format!("{tenant}/{name}");
        let mut role = self
            .state
            .read()
            .unwrap()
            .roles
            .get(&key)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no role {name:?} in tenant {tenant:?}")))?;
        let changes = req.get("changes").unwrap_or(req);
        if let Some(p) = changes.get("permissions") {
            role.permissions = roles::check_permissions(p)?;
        }
        if let Some(d) = changes.get("description") {
            role.description = d.as_str().map(str::to_owned);
        }
        self.state.write().unwrap().roles.insert(key.clone(), role.clone());
        self.put(&format!("role/{key}"), &role, 0).await?;
        Ok(Done::change(role.to_json(), &tenant, format!("role:{name}")).revoking())
    }

    async fn delete_role(&self, c: &Caller, req: &Value) -> Result<Done> {
        let (tenant, name) = self.role_key(c, req, "roleId")?;
        self.may(c, Manage::Roles, &tenant)?;
        let key = format!("{tenant}/{name}");
        let holders: Vec<User> = {
            let mut st = self.state.write().unwrap();
            st.roles.remove(&key).ok_or_else(|| Error::NotFound(format!("no role {name:?} in tenant {tenant:?}")))?;
            st.users
                .values_mut()
                .filter(|u| u.tenant == tenant && u.roles.contains(&name))
                .map(|u| {
                    u.roles.retain(|r| r != &name);
                    u.clone()
                })
                .collect()
        };
        for u in holders {
            self.put(&format!("user/{}", u.id), &u, 0).await?;
        }
        self.del(&format!("role/{key}")).await?;
        Ok(Done::change(Value::Null, &tenant, format!("role:{name}")).revoking())
    }

    fn list_roles(&self, c: &Caller, req: &Value) -> Result<Done> {
        let tenant = self.tenant_of(c, req)?;
        self.may(c, Manage::Roles, &tenant).or_else(|_| self.may(c, Manage::Users, &tenant))?;
        let st = self.state.read().unwrap();
        let prefix = format!("{tenant}/");
        let list: Vec<Value> = st
            .roles
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix) || k.starts_with("*/"))
            .map(|(_, r)| r.to_json())
            .collect();
        Ok(Done::read(json!(list)))
    }

    async fn assign_role(&self, c: &Caller, req: &Value, add: bool) -> Result<Done> {
        let mut u = self.managed_user(c, field(req, "userId")?, Manage::Users)?;
        let role = field(req, "roleName").or_else(|_| field(req, "role"))?.to_owned();
        self.check_roles_assignable(c, &u.tenant, std::slice::from_ref(&role))?;
        if add {
            if !u.roles.contains(&role) {
                u.roles.push(role.clone());
            }
        } else {
            if u.id == ADMIN_ID && role == SUPERADMIN {
                return Err(Error::invalid("the bootstrap admin keeps the superadmin role"));
            }
            u.roles.retain(|r| r != &role);
        }
        u.updated_at = now_ms();
        self.save_user(&u).await?;
        let done = Done::change(json!(u.roles), &u.tenant.clone(), format!("user:{}", u.id));
        Ok(if add { done } else { done.revoking() })
    }

    fn get_user_roles(&self, c: &Caller, req: &Value) -> Result<Done> {
        let u = self.self_or_managed(c, field(req, "userId")?)?;
        let st = self.state.read().unwrap();
        Ok(Done::read(json!(st.user_roles(&u).iter().map(|r| r.to_json()).collect::<Vec<_>>())))
    }

    /// Whether the caller owns the resource `kind:name` of `tenant`.
    fn owns(&self, c: &Caller, tenant: &str, kind: &str, name: &str) -> bool {
        let Some((u, _)) = &c.user else { return false };
        let st = self.state.read().unwrap();
        st.owners.iter().any(|(q, o)| o.user_id == u.id && acl::names(tenant, kind, name, q))
    }

    async fn grant(&self, c: &Caller, req: &Value, add: bool) -> Result<Done> {
        let target = field(req, "userId")?;
        let (kind, name) = acl::parse_resource(field(req, "resource")?)?;
        let permission = field(req, "permission")?;
        acl::ops_for(&kind, permission)?;
        let u = self.state.read().unwrap().users.get(target).cloned();
        let tenant = match &u {
            Some(u) => u.tenant.clone(),
            None => self.user_of(c)?.tenant.clone(),
        };
        if !self.owns(c, &tenant, &kind, &name) {
            self.may(c, Manage::Acl, &tenant)?;
        }
        let u = u.ok_or_else(|| Error::NotFound(format!("no user {target:?}")))?;
        let entry = acl::Entry { user_id: u.id.clone(), kind, name, permission: permission.to_owned() };
        let key = entry.key();
        let resource = format!("{}:{}", entry.kind, entry.name);
        if add {
            self.state.write().unwrap().acl.insert(key.clone(), entry.clone());
            self.put(&format!("acl/{key}"), &entry, 0).await?;
            Ok(Done::change(entry.to_json(), &tenant, resource))
        } else {
            let had = self.state.write().unwrap().acl.remove(&key).is_some();
            if had {
                self.del(&format!("acl/{key}")).await?;
            }
            Ok(Done::change(json!(had), &tenant, resource).revoking())
        }
    }

    fn kind_name(req: &Value) -> Result<(String, String)> {
        let kind = field(req, "resourceType")?;
        let name = field(req, "resourceName")?;
        acl::check_kind_name(kind, name)?;
        Ok((kind.to_owned(), name.to_owned()))
    }

    fn get_acl(&self, c: &Caller, req: &Value) -> Result<Done> {
        let (kind, name) = Self::kind_name(req)?;
        let tenant = self.tenant_of(c, req)?;
        if !self.owns(c, &tenant, &kind, &name) {
            self.may(c, Manage::Acl, &tenant)?;
        }
        let st = self.state.read().unwrap();
        let list: Vec<Value> = st
            .acl
            .values()
            .filter(|e| e.kind == kind && e.name == name)
            .filter(|e| st.users.get(&e.user_id).is_some_and(|u| u.tenant == tenant))
            .map(acl::Entry::to_json)
            .collect();
        Ok(Done::read(json!(list)))
    }

    fn my_access(&self, c: &Caller) -> Result<Done> {
        let u = self.user_of(c)?;
        let st = self.state.read().unwrap();
        let mut permissions: Vec<String> = st.user_roles(u).iter().flat_map(|r| r.permissions.clone()).collect();
        permissions.sort();
        permissions.dedup();
        let acl: Vec<Value> = st.acl.values().filter(|e| e.user_id == u.id).map(acl::Entry::to_json).collect();
        let mut owned: Vec<Value> = st
            .owners
            .iter()
            .filter(|(_, o)| o.user_id == u.id)
            .map(|(q, o)| json!({"resourceType": o.kind, "resource": q}))
            .collect();
        owned.sort_by_key(|v| v["resource"].as_str().unwrap_or_default().to_owned());
        Ok(Done::read(json!({
            "userId": u.id, "tenant": u.tenant, "roles": u.roles, "permissions": permissions,
            "acl": acl, "owned": owned,
        })))
    }

    fn owner_of(&self, tenant: &str, kind: &str, name: &str) -> Option<(String, Owner)> {
        let st = self.state.read().unwrap();
        let mut found: Vec<(&String, &Owner)> =
            st.owners.iter().filter(|(q, _)| acl::names(tenant, kind, name, q)).collect();
        found.sort_by_key(|(q, _)| (*q).clone());
        found.first().map(|(q, o)| ((*q).clone(), (*o).clone()))
    }

    fn get_owner(&self, c: &Caller, req: &Value) -> Result<Done> {
        let (kind, name) = Self::kind_name(req)?;
        let u = self.user_of(c)?;
        let tenant = self.tenant_of(c, req)?;
        if tenant != u.tenant {
            self.may(c, Manage::Acl, &tenant)?;
        }
        Ok(Done::read(match self.owner_of(&tenant, &kind, &name) {
            Some((q, o)) => json!({
                "userId": o.user_id, "resourceType": kind, "resourceName": name, "resource": q, "since": o.since,
            }),
            None => Value::Null,
        }))
    }

    async fn transfer_owner(&self, c: &Caller, req: &Value) -> Result<Done> {
        let (kind, name) = Self::kind_name(req)?;
        let new_owner = field(req, "newOwnerId")?;
        self.user_of(c)?;
        let tenant = self.tenant_of(c, req)?;
        if !self.owns(c, &tenant, &kind, &name) {
            self.may(c, Manage::Acl, &tenant)?;
        }
        let target = self.state.read().unwrap().users.get(new_owner).cloned();
        let target = target.filter(|u| u.tenant == tenant).ok_or_else(|| {
            Error::NotFound(format!("no user {new_owner:?} in tenant {tenant:?} to own the resource"))
        })?;
        let Some((q, mut o)) = self.owner_of(&tenant, &kind, &name) else {
            return Err(Error::NotFound(format!("{kind}:{name} has no owner")));
        };
        o.user_id = target.id.clone();
        o.since = now_ms();
        self.state.write().unwrap().owners.insert(q.clone(), o.clone());
        self.put(&format!("owner/{q}"), &o, 0).await?;
        Ok(Done::change(json!({"userId": o.user_id, "resource": q}), &tenant, format!("{kind}:{name}")).revoking())
    }
}
