//! Which outbox messages the broker has. rumqttc's `publish` returns no handle: a publish gets
//! its packet id only when the event loop sends it (`Outgoing::Publish(pkid)`, in request
//! order), and is acknowledged by `PubAck`/`PubComp(pkid)`. This pairs them up.

use std::collections::{HashMap, VecDeque};

/// An outbox id, or `None` for a publish that is not in the outbox (the status message).
type Entry = Option<i64>;

#[derive(Default)]
pub struct Tracker {
    /// Publishes handed to rumqttc, in order, not yet given a packet id.
    awaiting: VecDeque<Entry>,
    /// Packet id → what it carries, until acknowledged.
    in_flight: HashMap<u16, Entry>,
    /// Highest outbox id handed over; the next outbox scan starts after it.
    pub cursor: i64,
    /// Outbox messages handed over and not yet acknowledged.
    outstanding: usize,
}

impl Tracker {
    pub fn issue(&mut self, entry: Entry) {
        if let Some(id) = entry {
            self.cursor = self.cursor.max(id);
            self.outstanding += 1;
        }
        self.awaiting.push_back(entry);
    }

    /// rumqttc sent a publish. Returns an outbox id that is done already (QoS 0 has no ack).
    pub fn sent(&mut self, pkid: u16) -> Option<i64> {
        // A packet id still in flight is a retransmission after a resumed session.
        if pkid != 0 && self.in_flight.contains_key(&pkid) {
            return None;
        }
        let entry = self.awaiting.pop_front()?;
        if pkid == 0 {
            return self.done(entry);
        }
        self.in_flight.insert(pkid, entry);
        None
    }

    /// The broker acknowledged a packet id; returns the outbox id it carried.
    pub fn acked(&mut self, pkid: u16) -> Option<i64> {
        let entry = self.in_flight.remove(&pkid)?;
        self.done(entry)
    }

    fn done(&mut self, entry: Entry) -> Option<i64> {
        if entry.is_some() {
            self.outstanding -= 1;
        }
        entry
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// The broker has no session for us: nothing handed over will be acknowledged, so the
    /// whole outbox is sent again.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_packet_ids_with_outbox_ids() {
        let mut t = Tracker::default();
        t.issue(Some(10));
        t.issue(None);
        t.issue(Some(11));
        assert_eq!((t.cursor, t.outstanding()), (11, 2));
        assert_eq!(t.sent(1), None);
        assert_eq!(t.sent(2), None);
        assert_eq!(t.sent(3), None);
        // A resumed session retransmits 1: not a new publish.
        assert_eq!(t.sent(1), None);
        assert_eq!(t.acked(3), Some(11));
        assert_eq!(t.acked(2), None);
        assert_eq!(t.acked(1), Some(10));
        assert_eq!(t.acked(1), None);
        assert_eq!(t.outstanding(), 0);
        // QoS 0: done when sent.
        t.issue(Some(12));
        assert_eq!(t.sent(0), Some(12));
        t.issue(Some(13));
        t.reset();
        assert_eq!((t.cursor, t.outstanding()), (0, 0));
    }
}
