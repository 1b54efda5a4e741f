//! Memory-tier delivery: messages fanned out to the live subscribers of a
//! stream without being stored. An engine keeps a [`LiveHub`] (or uses its
//! server's own fan-out) and merges the live feed into every subscription
//! with [`merge`]. Live messages carry [`NO_OFFSET`]; a subscriber
//! that falls behind by more than the buffer loses the oldest of them
//! (memory-tier delivery is at most once).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::RwLock;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use tokio::sync::broadcast;

use crate::engine::{Message, MessageStream, Record, SubscribeSpec, NO_OFFSET};
use crate::error::Result;

/// Live messages buffered per subscriber before the oldest are dropped.
const LIVE_BUFFER: usize = 8192;

/// Per-stream fan-out channels of one engine.
#[derive(Default)]
pub struct LiveHub {
    streams: RwLock<HashMap<String, broadcast::Sender<Message>>>,
}

impl LiveHub {
    /// Hands `record` to every live subscriber of `stream` (none: dropped).
    pub fn publish(&self, stream: &str, record: Record, timestamp_ms: i64) {
        let streams = self.streams.read().unwrap();
        let Some(tx) = streams.get(stream) else { return };
        if tx.receiver_count() == 0 {
            return;
        }
        let _ = tx.send(live_message(stream, record, timestamp_ms));
    }

    /// A receiver of `stream`'s live messages from now on.
    pub fn subscribe(&self, stream: &str) -> broadcast::Receiver<Message> {
        if let Some(tx) = self.streams.read().unwrap().get(stream) {
            return tx.subscribe();
        }
        let mut streams = self.streams.write().unwrap();
        streams.retain(|_, tx| tx.receiver_count() > 0);
        streams.entry(stream.to_owned()).or_insert_with(|| broadcast::channel(LIVE_BUFFER).0).subscribe()
    }
}

/// The message a subscriber receives for a memory-tier `record`.
pub fn live_message(stream: &str, record: Record, timestamp_ms: i64) -> Message {
    Message {
        stream: stream.to_owned(),
        partition: 0,
        offset: NO_OFFSET,
        timestamp_ms,
        key: record.key,
        payload: record.payload,
        headers: record.headers,
    }
}

/// Live messages go to subscriptions of every partition or of partition 0,
/// so a client that subscribes per partition (the remote engine) gets each once.
pub fn wants_live(spec: &SubscribeSpec) -> bool {
    matches!(spec.partition, None | Some(0))
}

/// A broadcast receiver as a feed; messages lost to lag are skipped.
pub fn feed(rx: broadcast::Receiver<Message>) -> MessageStream {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(m) => return Some((Ok(m), rx)),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(lost = n, "memory-tier subscriber fell behind; oldest live messages dropped");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .boxed()
}

/// The stored feed with live messages mixed in; it ends when the stored
/// feed ends (an error, a deleted stream), whatever the live one does.
pub fn merge(stored: MessageStream, live: MessageStream) -> MessageStream {
    Box::pin(Merged { stored, live: Some(live) })
}

struct Merged {
    stored: MessageStream,
    live: Option<MessageStream>,
}

impl Stream for Merged {
    type Item = Result<Message>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Poll::Ready(item) = self.stored.as_mut().poll_next(cx) {
            return Poll::Ready(item);
        }
        if let Some(live) = self.live.as_mut() {
            match live.as_mut().poll_next(cx) {
                Poll::Ready(Some(item)) => return Poll::Ready(Some(item)),
                Poll::Ready(None) => self.live = None,
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }
}
