//! Publishes with a per-publish tier that complete through a callback
//! (fm_publish_with_async): each runs as a task of its own, so many can be
//! in flight without a thread per publish, and their callbacks run on the
//! publish completion thread like fm_publish_async's.

use super::{BlockingClient, Completion};
use crate::engine::{Position, Record};
use crate::error::{Error, Result};
use crate::model::{PublishOptions, NO_OFFSET};

impl BlockingClient {
    /// Like [`BlockingClient::publish_async`] with a delivery tier: a memory-tier publish completes with offset [`NO_OFFSET`].
    pub fn publish_with_async(
        &self,
        subject: &str,
        record: Record,
        opts: PublishOptions,
        done: Completion,
    ) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Closed("client is closed".into()));
        }
        // Errors of the caller are returned now, not through the callback.
        crate::subject::for_publish(subject)?;
        let max = self.client.config().engine.max_payload_bytes;
        if record.size() > max {
            return Err(Error::TooLarge(format!(
                "message of {} bytes exceeds max_payload_bytes ({max})",
                record.size()
            )));
        }
        let client = self.client.clone();
        let subject = subject.to_owned();
        self.publisher.spawn(
            async move {
                let pos = client.publish_with(&subject, record, &opts).await?;
                // The memory tier stores nothing: the position without an offset.
                Ok(pos.unwrap_or(Position { partition: 0, offset: NO_OFFSET }))
            },
            done,
        )
    }
}
