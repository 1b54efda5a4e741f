//! Ownership: the session user who first writes to (creates) a stream,
//! queue or KV bucket owns it; the owner may do everything on it and may
//! grant, revoke and transfer it.

use serde::{Deserialize, Serialize};

use super::super::auth::Op;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Owner {
    pub user_id: String,
    /// bucket, stream or queue: what the creating call was.
    pub kind: String,
    pub since: u64,
}

/// The kind of resource a creating call makes, if it creates one.
pub fn created_kind(ops: &[Op]) -> Option<&'static str> {
    ops.iter().find_map(|op| match op {
        Op::KvWrite => Some("bucket"),
        Op::QueueProduce => Some("queue"),
        Op::Publish | Op::Admin => Some("stream"),
        _ => None,
    })
}
