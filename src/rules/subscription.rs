//! Topic subscriptions: the events appended to the log from now on whose
//! topic matches a pattern, each with its topic.

use futures::StreamExt;
use serde_json::Value;

use super::event::Event;
use super::pattern;
use crate::model::MessageStream;
use crate::store::StoreResult;

/// Events appended from now on whose topic matches a pattern (see [`Rules::subscribe`](super::Rules::subscribe)).
pub struct Subscription {
    pub(super) feed: MessageStream,
    pub(super) pattern: String,
}

impl Subscription {
    /// The next matching event as `(topic, event JSON)`; None when the feed
    /// ended (the client closed, the log was deleted).
    pub async fn next(&mut self) -> Option<StoreResult<(String, Value)>> {
        loop {
            let m = match self.feed.next().await? {
                Ok(m) => m,
                Err(e) => return Some(Err(e.into())),
            };
            let Ok(event) = Event::from_message(&m) else { continue };
            if pattern::topic_matches(&self.pattern, &event.topic) {
                return Some(Ok((event.topic.clone(), event.to_json())));
            }
        }
    }

    /// The topic pattern it matches.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }
}
