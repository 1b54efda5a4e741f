//! ACL grants: one user, one resource (`bucket:NAME`, `stream:NAME`,
//! `queue:NAME`), one permission (`read`, `write`, `admin`). NAME is a
//! name in the user's tenant in any namespace (`users`), or
//! `namespace/name`; a store bucket `users` is the KV bucket `store.users`,
//! and both are covered.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::super::auth::{op_bits, Grant};
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub user_id: String,
    pub kind: String,
    pub name: String,
    pub permission: String,
}

impl Entry {
    pub fn to_json(&self) -> Value {
        json!({
            "userId": self.user_id,
            "resource": format!("{}:{}", self.kind, self.name),
            "resourceType": self.kind,
            "resourceName": self.name,
            "permission": self.permission,
        })
    }

    pub fn key(&self) -> String {
        format!("{}|{}:{}|{}", self.user_id, self.kind, self.name, self.permission)
    }

    /// The grants of this entry for a user of `tenant`.
    pub(crate) fn grants(&self, tenant: &str) -> Vec<Grant> {
        let ops = ops_for(&self.kind, &self.permission).unwrap_or(0);
        patterns(&self.kind, &self.name).into_iter().map(|(ns, n)| Grant::resource(tenant, &ns, &n, ops)).collect()
    }
}

/// `kind:name` of a request, checked.
pub fn parse_resource(resource: &str) -> Result<(String, String)> {
    let Some((kind, name)) = resource.split_once(':') else {
        return Err(Error::invalid(format!("resource {resource:?}: expected bucket:NAME, stream:NAME or queue:NAME")));
    };
    check_kind_name(kind, name)?;
    Ok((kind.to_owned(), name.to_owned()))
}

pub fn check_kind_name(kind: &str, name: &str) -> Result<()> {
    if !matches!(kind, "bucket" | "stream" | "queue") {
        return Err(Error::invalid(format!("resource type {kind:?}: one of bucket, stream, queue")));
    }
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 2 {
        return Err(Error::invalid(format!("resource name {name:?}: NAME or NAMESPACE/NAME")));
    }
    for p in parts {
        crate::names::check_scope("resource name", p)?;
    }
    Ok(())
}

/// The engine operations a permission on a kind of resource gives.
pub fn ops_for(kind: &str, permission: &str) -> Result<u16> {
    let ops: &[&str] = match (kind, permission) {
        (_, "admin") => &["*"],
        ("bucket", "read") => &["kv_read"],
        ("bucket", "write") => &["kv_read", "kv_write"],
        ("stream", "read") => &["read", "subscribe"],
        ("stream", "write") => &["read", "subscribe", "publish"],
        ("queue", "read") => &["read", "queue_consume"],
        ("queue", "write") => &["read", "queue_produce"],
        _ => return Err(Error::invalid(format!("permission {permission:?}: one of read, write, admin"))),
    };
    op_bits(ops)
}

/// (namespace glob, name) pairs a resource name covers.
pub fn patterns(kind: &str, name: &str) -> Vec<(String, String)> {
    let (ns, n) = match name.split_once('/') {
        Some((ns, n)) => (ns.to_owned(), n.to_owned()),
        None => ("*".to_owned(), name.to_owned()),
    };
    let mut out = vec![(ns.clone(), n.clone())];
    if kind == "bucket" {
        out.push((ns, format!("store.{n}")));
    }
    out
}

/// Whether the qualified `resource` is the one `kind:name` names in `tenant`.
pub fn names(tenant: &str, kind: &str, name: &str, resource: &str) -> bool {
    let mut parts = resource.splitn(3, '/');
    let (Some(t), Some(ns), Some(n)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    t == tenant && patterns(kind, name).iter().any(|(pns, pn)| (pns == "*" || pns == ns) && pn == n)
}
