//! Roles: named lists of permissions, assigned to users. A permission is a
//! string:
//!
//! - `*`: every data operation in the user's tenant and every identity
//!   permission there;
//! - an operation of the access file (`publish`, `kv_read`, ..., `*`),
//!   optionally scoped: `kv_write:orders` (a namespace glob) or
//!   `publish:orders/invoices*` (namespace/name globs), always inside the
//!   user's tenant;
//! - an identity permission: `users.manage`, `roles.manage`, `acl.manage`,
//!   `audit.read`.
//!
//! The built-in role `superadmin` (the bootstrap admin's) may also manage
//! users, ACL and audit of every tenant.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::super::auth::{op_bits, Grant};
use crate::error::{Error, Result};

pub(crate) const SUPERADMIN: &str = "superadmin";

/// Identity permissions (beyond the data operations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manage {
    Users,
    Roles,
    Acl,
    Audit,
}

impl Manage {
    pub fn name(self) -> &'static str {
        match self {
            Manage::Users => "users.manage",
            Manage::Roles => "roles.manage",
            Manage::Acl => "acl.manage",
            Manage::Audit => "audit.read",
        }
    }

    fn parse(s: &str) -> Option<Manage> {
        [Manage::Users, Manage::Roles, Manage::Acl, Manage::Audit].into_iter().find(|m| m.name() == s)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Role {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub permissions: Vec<String>,
    #[serde(default)]
    pub builtin: bool,
    pub created_at: u64,
}

impl Role {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.name,
            "name": self.name,
            "description": self.description,
            "permissions": self.permissions,
            "builtin": self.builtin,
            "createdAt": self.created_at,
        })
    }

    pub fn superadmin(now: u64) -> Role {
        Role {
            name: SUPERADMIN.into(),
            description: Some("the bootstrap admin: everything, identity of every tenant".into()),
            permissions: vec!["*".into()],
            builtin: true,
            created_at: now,
        }
    }

    /// Whether the role gives `m` (in the holder's tenant).
    pub fn allows(&self, m: Manage) -> bool {
        self.permissions.iter().any(|p| p == "*" || Manage::parse(p) == Some(m))
    }

    /// The data grants of the role for a user of `tenant`.
    pub(crate) fn grants(&self, tenant: &str) -> Vec<Grant> {
        self.permissions.iter().filter_map(|p| data_grant(p, tenant).ok().flatten()).collect()
    }
}

pub fn check_role_name(name: &str) -> Result<()> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 64 || !name.chars().all(ok) {
        return Err(Error::invalid(format!("invalid role name {name:?}: 1-64 characters of [A-Za-z0-9._-]")));
    }
    Ok(())
}

/// Checks every permission of a role (so a typo is refused, not ignored).
pub fn check_permissions(perms: &Value) -> Result<Vec<String>> {
    let Some(list) = perms.as_array() else {
        return Err(Error::invalid("permissions must be a list of strings"));
    };
    let mut out = Vec::with_capacity(list.len());
    for p in list {
        let Some(s) = p.as_str() else {
            return Err(Error::invalid("permissions must be a list of strings"));
        };
        if s != "*" && Manage::parse(s).is_none() {
            data_grant(s, "t")?;
        }
        out.push(s.to_owned());
    }
    Ok(out)
}

/// A data permission as a grant in `tenant`; `None` for identity ones.
fn data_grant(p: &str, tenant: &str) -> Result<Option<Grant>> {
    if p == "*" {
        return Ok(Some(Grant::namespace("*", op_bits(&["*"])?)));
    }
    if Manage::parse(p).is_some() {
        return Ok(None);
    }
    let (op, scope) = p.split_once(':').unwrap_or((p, "*"));
    let bad = || Error::invalid(format!("permission {p:?}: expected OP, OP:NAMESPACE or OP:NAMESPACE/NAME"));
    let ops = op_bits(&[op]).map_err(|e| Error::invalid(format!("permission {p:?}: {}", e.message())))?;
    Ok(Some(match scope.split_once('/') {
        None if !scope.is_empty() => Grant::namespace(scope, ops),
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Grant::resource(tenant, ns, name, ops)
        }
        _ => return Err(bad()),
    }))
}
