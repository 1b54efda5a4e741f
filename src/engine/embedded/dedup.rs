//! The duplicate-detection window of a stream: a record carrying a message id
//! (the `fm-msg-id` header) is stored once; a later publish with the same id
//! gets the original position back instead of a second copy. The remote
//! client stamps every publish with `<producer id>-<sequence>` so a publish it
//! retries after a lost link is stored once; applications may set their own
//! ids (like JetStream's `Nats-Msg-Id`). The window is rebuilt from the
//! retained tail of the log when a durable stream opens, so it survives a crash.

use std::collections::{HashMap, VecDeque};

use crate::engine::Position;

/// Ids remembered per stream; older ids are forgotten first.
pub const DEDUP_WINDOW: usize = 1 << 17;

#[derive(Default)]
pub struct DedupWindow {
    positions: HashMap<String, Position>,
    order: VecDeque<String>,
}

impl DedupWindow {
    pub fn get(&self, id: &str) -> Option<Position> {
        self.positions.get(id).copied()
    }

    pub fn insert(&mut self, id: String, pos: Position) {
        if let std::collections::hash_map::Entry::Vacant(slot) = self.positions.entry(id.clone()) {
            slot.insert(pos);
            self.order.push_back(id);
        }
        while self.order.len() > DEDUP_WINDOW {
            if let Some(old) = self.order.pop_front() {
                self.positions.remove(&old);
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_and_forgets_oldest_first() {
        let mut w = DedupWindow::default();
        for i in 0..DEDUP_WINDOW as u64 + 10 {
            w.insert(format!("p-{i}"), Position { partition: 0, offset: i });
        }
        assert_eq!(w.len(), DEDUP_WINDOW);
        assert_eq!(w.get("p-5"), None);
        assert_eq!(w.get("p-10"), Some(Position { partition: 0, offset: 10 }));
        // A known id keeps its first position.
        w.insert("p-10".into(), Position { partition: 1, offset: 99 });
        assert_eq!(w.get("p-10"), Some(Position { partition: 0, offset: 10 }));
        assert_eq!(w.len(), DEDUP_WINDOW);
    }
}
