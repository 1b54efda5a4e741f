//! Users: who may log in, in which tenant, with which roles. Usernames are
//! unique across the broker (a login names no tenant).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub username: String,
    pub tenant: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    pub enabled: bool,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub metadata: Value,
    /// argon2id PHC string; `None` = no password login (the bootstrap admin).
    #[serde(default)]
    pub password_hash: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
}

impl User {
    /// The user as the API shows it (never the hash).
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "username": self.username,
            "tenant": self.tenant,
            "displayName": self.display_name,
            "email": self.email,
            "enabled": self.enabled,
            "roles": self.roles,
            "metadata": self.metadata,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        })
    }

    /// Applies the changeable fields of an update_user request.
    pub fn apply(&mut self, changes: &Value) -> Result<()> {
        let Some(obj) = changes.as_object() else {
            return Err(Error::invalid("update_user: the changes must be an object"));
        };
        for (k, v) in obj {
            match k.as_str() {
                "displayName" => self.display_name = opt_string(v, k)?,
                "email" => self.email = opt_string(v, k)?,
                "metadata" => self.metadata = v.clone(),
                "userId" | "id" => {}
                other => {
                    return Err(Error::invalid(format!(
                        "update_user: {other:?} cannot be changed here (displayName, email, metadata; \
                         passwords, roles and enabled have their own calls)"
                    )))
                }
            }
        }
        Ok(())
    }
}

fn opt_string(v: &Value, what: &str) -> Result<Option<String>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.len() <= 256 => Ok(Some(s.clone())),
        _ => Err(Error::invalid(format!("{what}: a string of at most 256 bytes, or null"))),
    }
}

pub fn check_username(name: &str) -> Result<()> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    if name.is_empty() || name.len() > 64 || !name.chars().all(ok) {
        return Err(Error::invalid(format!("invalid username {name:?}: 1-64 characters of [A-Za-z0-9._@-]")));
    }
    Ok(())
}

/// A new user id: `u_` and 64 random bits in hex.
pub fn new_id() -> Result<String> {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).map_err(|e| Error::Internal(format!("no randomness for a user id: {e}")))?;
    Ok(format!("u_{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()))
}
