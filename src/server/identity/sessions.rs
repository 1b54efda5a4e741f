//! Sessions: expiring bearer tokens (`fms_` + 256 random bits). The broker
//! keeps only their SHA-256, like access-file tokens; the token is shown
//! once, in the login answer.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub(crate) const PREFIX: &str = "fms_";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub user_id: String,
    pub created_at: u64,
    pub expires_at: u64,
}

impl Session {
    pub fn live(&self, now: u64) -> bool {
        now < self.expires_at
    }
}

/// A new session token.
pub fn new_token() -> Result<String> {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).map_err(|e| Error::Internal(format!("no randomness for a session: {e}")))?;
    Ok(format!("{PREFIX}{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()))
}

pub fn is_session_token(token: &str) -> bool {
    token.starts_with(PREFIX)
}
