//! What waits in a rule's queue, and the batch a rule receives.

use std::sync::Arc;

use super::bindings as wit;

/// One value list as observed by the host: shared (not copied) between every rule that wants it.
#[derive(Debug)]
pub struct Observation {
    pub series: u32,
    pub time: u64,
    pub interval: u64,
    pub values: Vec<wit::Value>,
}

impl Observation {
    /// The WIT form, for `last-value`.
    pub fn snapshot(&self) -> wit::Snapshot {
        wit::Snapshot {
            list: wit::ValueList {
                series: self.series,
                time: self.time,
                interval: self.interval,
                first: 0,
                count: self.values.len() as u32,
            },
            values: self.values.clone(),
        }
    }
}

/// An entry of a rule's queue.
pub enum Queued {
    Values(Arc<Observation>),
    /// Notifications, MQTT messages: anything that is not a value list.
    Event(wit::Event),
}

/// A new rule's events queue (the registry makes one per worker).
pub fn queue(capacity: usize) -> (QueueSender, crossbeam_channel::Receiver<Queued>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    (QueueSender { tx, capacity }, rx)
}

/// Why an event did not go into a rule's queue.
#[derive(Debug, PartialEq)]
pub enum NotQueued {
    Full,
    /// The worker ended.
    Gone,
}

/// The sending side of a rule's events queue: bounded at `rules.queue_capacity`, but holding
/// memory only for what waits. (crossbeam's `bounded` allocates and writes every slot up front:
/// 2.6 MiB resident per rule at the default 16 384, whether events ever wait or not.)
#[derive(Clone)]
pub struct QueueSender {
    tx: crossbeam_channel::Sender<Queued>,
    capacity: usize,
}

impl QueueSender {
    /// Full at `capacity` waiting. Exact with one sender (the dispatcher); the worker only
    /// ever makes room. A refused event is dropped (the caller counts it).
    pub fn try_send(&self, event: Queued) -> Result<(), NotQueued> {
        if self.tx.len() >= self.capacity {
            return Err(NotQueued::Full);
        }
        self.tx.try_send(event).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(_) => NotQueued::Full,
            crossbeam_channel::TrySendError::Disconnected(_) => NotQueued::Gone,
        })
    }
}

/// Builds the `batch` record one `on-events` call gets: events in order, and one flat list of
/// values they point into. Its buffers are reused from call to call.
pub struct BatchBuilder {
    batch: wit::Batch,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self {
            batch: wit::Batch {
                events: Vec::new(),
                values: Vec::new(),
            },
        }
    }
}

impl BatchBuilder {
    pub fn push(&mut self, item: Queued) {
        match item {
            Queued::Values(obs) => {
                let first = self.batch.values.len() as u32;
                self.batch.values.extend_from_slice(&obs.values);
                self.batch.events.push(wit::Event::Values(wit::ValueList {
                    series: obs.series,
                    time: obs.time,
                    interval: obs.interval,
                    first,
                    count: obs.values.len() as u32,
                }));
            }
            Queued::Event(event) => self.batch.events.push(event),
        }
    }

    pub fn push_event(&mut self, event: wit::Event) {
        self.batch.events.push(event);
    }

    pub fn len(&self) -> usize {
        self.batch.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batch.events.is_empty()
    }

    pub fn batch(&self) -> &wit::Batch {
        &self.batch
    }

    pub fn clear(&mut self) {
        self.batch.events.clear();
        self.batch.values.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauge(v: f64) -> wit::Value {
        wit::Value {
            sample: wit::Sample::Gauge(v),
            rate: None,
        }
    }

    #[test]
    fn a_rule_queue_is_full_at_its_capacity_and_takes_more_once_drained() {
        let (tx, rx) = queue(2);
        let event = || Queued::Event(wit::Event::Timer("t".into()));
        assert_eq!(tx.try_send(event()), Ok(()));
        assert_eq!(tx.try_send(event()), Ok(()));
        assert_eq!(tx.try_send(event()), Err(NotQueued::Full));
        rx.recv().unwrap();
        assert_eq!(tx.try_send(event()), Ok(()));
        drop(rx);
        assert_eq!(tx.try_send(event()), Err(NotQueued::Gone));
    }

    #[test]
    fn value_lists_point_into_one_flat_list() {
        let mut b = BatchBuilder::default();
        let obs = |series, values| {
            Queued::Values(Arc::new(Observation {
                series,
                time: 1,
                interval: 2,
                values,
            }))
        };
        b.push(obs(0, vec![gauge(1.0), gauge(2.0)]));
        b.push_event(wit::Event::Timer("t".into()));
        b.push(obs(1, vec![gauge(3.0)]));
        let batch = b.batch();
        assert_eq!(batch.values.len(), 3);
        let wit::Event::Values(second) = &batch.events[2] else {
            panic!()
        };
        assert_eq!((second.series, second.first, second.count), (1, 2, 1));
        b.clear();
        assert!(b.is_empty() && b.batch().values.is_empty());
    }
}
