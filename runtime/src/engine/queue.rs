//! A rule's events queue. It carries batches, not events: the dispatcher builds each rule's
//! batch as it routes (columns, as the rule will receive them) and sends what one round routed
//! as one chunk, so a rule's thread wakes once per round, not once per value list, and never
//! touches a value list another thread made. With 20 rules at 100 000 values/s, waking per
//! value list, and reading value lists shared across threads, cost more CPU than everything
//! else on the data path. Emptied batches go back to the dispatcher to be filled again, so a
//! steady flow allocates nothing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_channel::{Receiver, Sender};

use super::batch::BatchBuilder;

/// Emptied batches kept for reuse per rule: enough for the chunks in flight at a steady flow.
const SPARES: usize = 4;

/// A new rule's events queue (the registry makes one per worker), bounded at `capacity`
/// events waiting.
pub fn queue(capacity: usize) -> (QueueSender, QueueReceiver) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let (spares_tx, spares) = crossbeam_channel::bounded(SPARES);
    let waiting = Arc::new(AtomicUsize::new(0));
    let sender = QueueSender {
        tx,
        spares,
        waiting: waiting.clone(),
        capacity,
    };
    let receiver = QueueReceiver {
        rx,
        spares: spares_tx,
        waiting,
        taken: VecDeque::new(),
    };
    (sender, receiver)
}

/// Why a chunk did not go into a rule's queue.
#[derive(Debug, PartialEq)]
pub enum NotQueued {
    /// The queue was full: the chunk's events were dropped (the caller counts them).
    Full(usize),
    /// The worker ended.
    Gone,
}

/// The dispatcher's side: bounded at `rules.queue_capacity` events, but holding memory only
/// for what waits. (crossbeam's `bounded` allocates and writes every slot up front: 2.6 MiB
/// resident per rule at the default 16 384, whether events ever wait or not.)
pub struct QueueSender {
    tx: Sender<BatchBuilder>,
    spares: Receiver<BatchBuilder>,
    waiting: Arc<AtomicUsize>,
    capacity: usize,
}

impl QueueSender {
    /// Queue `chunk` whole, or drop it whole when it does not fit (chunks are at most
    /// `rules.max_batch` events, far below the capacity). Exact with one sender (the
    /// dispatcher): the worker only ever makes room.
    pub fn send(&self, chunk: BatchBuilder) -> Result<(), NotQueued> {
        let n = chunk.len();
        if n == 0 {
            return Ok(());
        }
        if self.waiting.load(Ordering::Acquire) + n > self.capacity {
            return Err(NotQueued::Full(n));
        }
        self.waiting.fetch_add(n, Ordering::AcqRel);
        if self.tx.send(chunk).is_err() {
            self.waiting.fetch_sub(n, Ordering::AcqRel);
            return Err(NotQueued::Gone);
        }
        Ok(())
    }

    /// An empty batch to fill: one the worker gave back, or a new one.
    pub fn spare(&self) -> BatchBuilder {
        self.spares.try_recv().unwrap_or_default()
    }
}

/// The worker's side.
pub struct QueueReceiver {
    rx: Receiver<BatchBuilder>,
    spares: Sender<BatchBuilder>,
    waiting: Arc<AtomicUsize>,
    /// Chunks taken from the channel, not handed out yet (no longer counted as waiting: they
    /// are the worker's).
    taken: VecDeque<BatchBuilder>,
}

impl QueueReceiver {
    /// For `select!`: a chunk arrives. Hand it to [`take_chunk`](Self::take_chunk).
    pub fn channel(&self) -> &Receiver<BatchBuilder> {
        &self.rx
    }

    pub fn take_chunk(&mut self, chunk: BatchBuilder) {
        self.waiting.fetch_sub(chunk.len(), Ordering::AcqRel);
        self.taken.push_back(chunk);
    }

    /// The next chunk if it fits in `room` more events (any chunk fits an empty batch);
    /// `None` when nothing waits or it does not fit.
    pub fn next_chunk(&mut self, room: usize, batch_empty: bool) -> Option<BatchBuilder> {
        if self.taken.is_empty()
            && let Ok(chunk) = self.rx.try_recv()
        {
            self.take_chunk(chunk);
        }
        let fits = self
            .taken
            .front()
            .is_some_and(|c| batch_empty || c.len() <= room);
        if fits { self.taken.pop_front() } else { None }
    }

    /// Give an emptied batch back to the dispatcher (dropped when it has enough).
    pub fn recycle(&self, mut spare: BatchBuilder) {
        spare.clear();
        let _ = self.spares.try_send(spare);
    }

    /// Chunks taken from the channel and not handed out yet: the channel will not say so.
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

    fn chunk(n: usize) -> BatchBuilder {
        let mut b = BatchBuilder::default();
        for i in 0..n {
            b.push_event(wit::Event::Timer(i.to_string()));
        }
        b
    }

    #[test]
    fn a_rule_queue_drops_a_chunk_that_does_not_fit_and_takes_more_once_drained() {
        let (tx, mut rx) = queue(3);
        assert_eq!(tx.send(chunk(2)), Ok(()));
        assert_eq!(tx.send(chunk(2)), Err(NotQueued::Full(2)));
        assert_eq!(tx.send(chunk(1)), Ok(()));
        let mut got = 0;
        while let Some(c) = rx.next_chunk(usize::MAX, false) {
            got += c.len();
            rx.recycle(c);
        }
        assert_eq!(got, 3);
        assert_eq!(tx.send(chunk(3)), Ok(()));
        assert!(tx.spare().is_empty(), "a recycled batch comes back empty");
        rx.next_chunk(usize::MAX, true).unwrap();
        drop(rx);
        assert_eq!(tx.send(chunk(1)), Err(NotQueued::Gone));
    }

    #[test]
    fn a_chunk_waits_when_it_does_not_fit_the_batch_unless_the_batch_is_empty() {
        let (tx, mut rx) = queue(10);
        tx.send(chunk(3)).unwrap();
        assert!(rx.next_chunk(2, false).is_none());
        assert!(rx.has_taken());
        assert_eq!(rx.next_chunk(2, true).map(|c| c.len()), Some(3));
        assert!(!rx.has_taken());
    }
}
