//! Per-publish delivery tiers and subjects: fm_publish_with.

use std::ffi::c_char;

use super::args::*;
use super::call::call_opt;
use super::client::fm_client;
use super::fm_status;
use super::options::fm_options;
use super::stream::fm_position;
use crate::error::Result;
use crate::model::{PublishOptions, Record};

/// The offset of a message that has none: the position a memory-tier
/// publish returns, and the offset of a memory-tier message a subscriber
/// receives (such messages are never stored, never read by fm_read and
/// never committed).
pub const FM_OFFSET_NONE: u64 = 0xFFFF_FFFF_FFFF_FFFF;

/// Publishes one message to `subject` in the delivery tier `opts` chooses.
/// `subject` is a stream name or a dotted subject whose first token names
/// the stream (`orders.created` goes to stream `orders`; the whole subject
/// travels in the header "fm-subject", which subscribers read like any
/// header; without it a message's subject is its stream's name). `opts` (may be NULL, copied):
/// "tier" = memory | persistent (default) | replicated, "require_ack" =
/// true | false (default false), "timeout_ms" (deadline of the whole call;
/// FM_ERR_TIMEOUT beyond), "msg_id" (the message's id: a stored publish
/// with an id the stream has seen is stored once and gets the first copy's
/// position). memory: handed to the live subscribers of the
/// stream and stored nowhere (no stream is created); returns once sent,
/// with require_ack once the engine's server took it; `out` gets
/// {0, FM_OFFSET_NONE}. persistent: as fm_publish. replicated: stored on a
/// quorum of 3+ servers before it returns; FM_ERR_UNAVAILABLE, naming why,
/// on an engine that keeps one copy. `out` may be NULL. Errors:
/// INVALID_ARGUMENT (NULL, bad subject or wildcard, unknown option or
/// value), TOO_LARGE, UNAVAILABLE, TIMEOUT, CLOSED, DISCONNECTED, INTERNAL.
#[no_mangle]
pub unsafe extern "C" fn fm_publish_with(
    client: *mut fm_client,
    subject: *const c_char,
    msg: *const fm_msg,
    opts: *const fm_options,
    out: *mut fm_position,
) -> fm_status {
    call_opt(client, out, async |c| {
        let subject = str_arg(subject, "subject")?;
        let (record, opts) = publish_args(msg, opts)?;
        let pos = c.client().publish_with(subject, record, &opts).await?;
        Ok(match pos {
            Some(p) => fm_position { partition: p.partition, offset: p.offset },
            None => fm_position { partition: 0, offset: FM_OFFSET_NONE },
        })
    })
}

/// The record and the per-publish settings of fm_publish_with(_async):
/// option `msg_id` becomes the record's id (a stored publish with an id
/// the stream has seen is stored once).
pub(super) unsafe fn publish_args(msg: *const fm_msg, opts: *const fm_options) -> Result<(Record, PublishOptions)> {
    let mut record = record_arg(msg)?;
    let opts = match opts.as_ref() {
        Some(o) => {
            record.msg_id = o.inner.get("msg_id").map(str::to_owned);
            o.inner.publish_options()?
        }
        None => PublishOptions::default(),
    };
    Ok((record, opts))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_c_constants_are_the_core_ones() {
        assert_eq!(super::FM_OFFSET_NONE, crate::model::NO_OFFSET);
        assert_eq!(crate::subject::SUBJECT_HEADER, "fm-subject"); // named in the header's text
    }
}
