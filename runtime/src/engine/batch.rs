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
