//! A rule's events queue. The dispatcher sends what one round routed to a rule as one chunk,
//! so a rule's thread wakes once per round, not once per event: with 20 rules at 100 000
//! values/s, waking per event cost more CPU than everything else on the data path.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_channel::{Receiver, Sender};

use super::batch::Queued;

/// A new rule's events queue (the registry makes one per worker), bounded at `capacity`
/// events waiting.
pub fn queue(capacity: usize) -> (QueueSender, QueueReceiver) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let waiting = Arc::new(AtomicUsize::new(0));
    let sender = QueueSender {
        tx,
        waiting: waiting.clone(),
        capacity,
    };
    let receiver = QueueReceiver {
        rx,
        waiting,
        taken: VecDeque::new(),
    };
    (sender, receiver)
}

/// Why (some of) a chunk did not go into a rule's queue.
#[derive(Debug, PartialEq)]
pub enum NotQueued {
    /// The queue was full: this many events were dropped (the caller counts them).
    Full(usize),
    /// The worker ended.
    Gone,
}

/// The sending side: bounded at `rules.queue_capacity` events, but holding memory only for
/// what waits. (crossbeam's `bounded` allocates and writes every slot up front: 2.6 MiB
/// resident per rule at the default 16 384, whether events ever wait or not.)
#[derive(Clone)]
pub struct QueueSender {
    tx: Sender<Vec<Queued>>,
    waiting: Arc<AtomicUsize>,
    capacity: usize,
}

impl QueueSender {
    /// Queue as much of `chunk` as fits (the oldest first); the rest is dropped. Exact with
    /// one sender (the dispatcher): the worker only ever makes room.
    pub fn send(&self, mut chunk: Vec<Queued>) -> Result<(), NotQueued> {
        if chunk.is_empty() {
            return Ok(());
        }
        let room = self
            .capacity
            .saturating_sub(self.waiting.load(Ordering::Acquire));
        let dropped = chunk.len().saturating_sub(room);
        chunk.truncate(room);
        if !chunk.is_empty() {
            self.waiting.fetch_add(chunk.len(), Ordering::AcqRel);
            if let Err(e) = self.tx.send(chunk) {
                self.waiting.fetch_sub(e.0.len(), Ordering::AcqRel);
                return Err(NotQueued::Gone);
            }
        }
        match dropped {
            0 => Ok(()),
            n => Err(NotQueued::Full(n)),
        }
    }
}

/// The worker's side. Chunks are taken whole and handed out event by event, so a batch can
/// stop at `rules.max_batch` in the middle of a chunk.
pub struct QueueReceiver {
    rx: Receiver<Vec<Queued>>,
    waiting: Arc<AtomicUsize>,
    /// Events of chunks taken from the channel, not yet handed out (no longer counted as
    /// waiting: they are the worker's).
    taken: VecDeque<Queued>,
}

impl QueueReceiver {
    /// For `select!`: a chunk arrives. Hand it to [`take_chunk`](Self::take_chunk).
    pub fn channel(&self) -> &Receiver<Vec<Queued>> {
        &self.rx
    }

    pub fn take_chunk(&mut self, chunk: Vec<Queued>) {
        self.waiting.fetch_sub(chunk.len(), Ordering::AcqRel);
        self.taken.extend(chunk);
    }

    /// The next event, from what was taken or from the channel; `None` when nothing waits.
    pub fn next(&mut self) -> Option<Queued> {
        if self.taken.is_empty()
            && let Ok(chunk) = self.rx.try_recv()
        {
            self.take_chunk(chunk);
        }
        self.taken.pop_front()
    }

    /// Events taken from the channel and not handed out yet: the channel will not say so.
    pub fn has_taken(&self) -> bool {
        !self.taken.is_empty()
    }

    /// The sender is gone (shutdown): what was taken is still handed out, and no more comes.
    pub fn close(&mut self) {
        self.rx = crossbeam_channel::never();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::bindings as wit;

    fn chunk(n: usize) -> Vec<Queued> {
        (0..n)
            .map(|i| Queued::Event(Box::new(wit::Event::Timer(i.to_string()))))
            .collect()
    }

    #[test]
    fn a_rule_queue_takes_what_fits_drops_the_rest_and_takes_more_once_drained() {
        let (tx, mut rx) = queue(3);
        assert_eq!(tx.send(chunk(2)), Ok(()));
        assert_eq!(tx.send(chunk(2)), Err(NotQueued::Full(1)));
        assert_eq!(tx.send(chunk(1)), Err(NotQueued::Full(1)));
        let mut got = 0;
        while rx.next().is_some() {
            got += 1;
        }
        assert_eq!(got, 3);
        assert_eq!(tx.send(chunk(2)), Ok(()));
        drop(rx);
        assert_eq!(tx.send(chunk(1)), Err(NotQueued::Gone));
    }

    #[test]
    fn events_come_out_in_order_across_chunks() {
        let (tx, mut rx) = queue(10);
        tx.send(chunk(2)).unwrap();
        tx.send(chunk(1)).unwrap();
        let names: Vec<String> = std::iter::from_fn(|| rx.next())
            .map(|q| match q {
                Queued::Event(event) => match *event {
                    wit::Event::Timer(name) => name,
                    _ => unreachable!(),
                },
                Queued::Values(_) => unreachable!(),
            })
            .collect();
        assert_eq!(names, ["0", "1", "0"]);
    }
}
