//! Types of the resource lifecycle calls of the [`Engine`](super::Engine)
//! contract: listing, deleting, purging and reconfiguring streams, queues
//! and buckets.
//!
//! Semantics shared by every engine:
//! - a listing returns fully qualified names starting with a qualified
//!   prefix (`tenant/namespace/` plus the caller's prefix), sorted;
//! - a delete removes the resource with everything in it; open
//!   subscriptions, KV watches and waiting reserves on it end with
//!   `NotFound` ("... was deleted"); a later use re-creates the resource
//!   empty, like any first use (stream offsets start again at 0);
//! - a stream purge removes every retained message while offsets keep
//!   growing from where they were; committed offsets of consumer groups
//!   that pointed into the removed range are moved to its end, so groups
//!   resume at the next new message;
//! - a queue purge removes pending and delayed jobs; jobs in flight are
//!   left to their workers (ack, nack and the visibility timeout still
//!   apply to them), and dead jobs stay in the dead-letter queue.

use crate::error::{Error, Result};

use super::StreamConfig;

/// A change of a stream's configuration: `None` keeps a setting. The
/// partition count may only grow (keys then map to other partitions);
/// retention limits (0 = unlimited) apply from the next enforcement on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamUpdate {
    pub partitions: Option<u32>,
    pub max_age_ms: Option<u64>,
    pub max_bytes: Option<u64>,
    pub max_messages: Option<u64>,
}

impl StreamUpdate {
    /// `config` with this update applied, refusing a shrinking partition count.
    pub fn apply(&self, stream: &str, config: StreamConfig) -> Result<StreamConfig> {
        let mut next = config;
        if let Some(p) = self.partitions {
            if p < config.partitions {
                return Err(Error::InvalidArgument(format!(
                    "stream {stream} has {} partitions; the partition count may only grow",
                    config.partitions
                )));
            }
            if p > 4096 {
                return Err(Error::InvalidArgument("partitions must be between 1 and 4096".into()));
            }
            next.partitions = p;
        }
        next.max_age_ms = self.max_age_ms.unwrap_or(config.max_age_ms);
        next.max_bytes = self.max_bytes.unwrap_or(config.max_bytes);
        next.max_messages = self.max_messages.unwrap_or(config.max_messages);
        Ok(next)
    }

    pub fn is_empty(&self) -> bool {
        *self == StreamUpdate::default()
    }
}

/// Checks a listing prefix as an engine or the broker receives it: the
/// start of a qualified name (`tenant/namespace/...`), segments limited to
/// the name alphabet.
pub fn check_prefix(prefix: &str) -> Result<()> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/');
    if prefix.len() > 3 * crate::names::MAX_SEGMENT + 2 || !prefix.chars().all(ok) || prefix.split('/').count() > 3 {
        return Err(Error::InvalidArgument(format!(
            "invalid prefix {prefix:?}: the start of a name tenant/namespace/name of [A-Za-z0-9._-]"
        )));
    }
    Ok(())
}
