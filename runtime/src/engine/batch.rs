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
    /// Notifications, MQTT messages: anything that is not a value list. Boxed: they are rare,
    /// and a queue entry stays two words, which is what the dispatcher moves per value list
    /// and rule.
    Event(Box<wit::Event>),
}

/// Builds the `batch` record one `on-events` call gets, as the columns of `medic:rules@0.2.0`:
/// value lists and their values column by column, other events with their place among the
/// value lists. Its buffers are reused from call to call.
pub struct BatchBuilder {
    batch: wit::Batch,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self {
            batch: wit::Batch {
                series: Vec::new(),
                times: Vec::new(),
                intervals: Vec::new(),
                value_counts: Vec::new(),
                kinds: Vec::new(),
                raws: Vec::new(),
                rates: Vec::new(),
                events: Vec::new(),
            },
        }
    }
}

/// The `kinds` column's flag for "this value has a rate".
pub const HAS_RATE: u8 = 0x80;

impl BatchBuilder {
    pub fn push(&mut self, item: Queued) {
        match item {
            Queued::Values(obs) => self.push_values(&obs),
            Queued::Event(event) => self.push_event(*event),
        }
    }

    fn push_values(&mut self, obs: &Observation) {
        let b = &mut self.batch;
        b.series.push(obs.series);
        b.times.push(obs.time);
        b.intervals.push(obs.interval);
        b.value_counts.push(obs.values.len() as u32);
        for value in &obs.values {
            let (kind, raw) = match value.sample {
                wit::Sample::Gauge(v) => (0, v.to_bits()),
                wit::Sample::Derive(v) => (1, v as u64),
                wit::Sample::Counter(v) => (2, v),
                wit::Sample::Absolute(v) => (3, v),
            };
            let (flag, rate) = match value.rate {
                Some(rate) => (HAS_RATE, rate),
                None => (0, f64::NAN),
            };
            b.kinds.push(kind | flag);
            b.raws.push(raw);
            b.rates.push(rate);
        }
    }

    pub fn push_event(&mut self, event: wit::Event) {
        let after = self.batch.series.len() as u32;
        self.batch.events.push(wit::PlacedEvent { after, event });
    }

    /// Events in the batch: value lists and others.
    pub fn len(&self) -> usize {
        self.batch.series.len() + self.batch.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn batch(&self) -> &wit::Batch {
        &self.batch
    }

    pub fn clear(&mut self) {
        let b = &mut self.batch;
        b.series.clear();
        b.times.clear();
        b.intervals.clear();
        b.value_counts.clear();
        b.kinds.clear();
        b.raws.clear();
        b.rates.clear();
        b.events.clear();
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
    fn value_lists_travel_as_columns_and_other_events_keep_their_place() {
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
        let counter = wit::Value {
            sample: wit::Sample::Derive(-3),
            rate: Some(0.5),
        };
        b.push(obs(1, vec![counter]));
        assert_eq!(b.len(), 3);
        let batch = b.batch();
        assert_eq!(batch.series, [0, 1]);
        assert_eq!(batch.value_counts, [2, 1]);
        assert_eq!(batch.kinds, [0, 0, 1 | HAS_RATE]);
        assert_eq!(batch.raws, [1f64.to_bits(), 2f64.to_bits(), -3i64 as u64]);
        assert_eq!(batch.rates[2], 0.5);
        assert_eq!(batch.events.len(), 1);
        assert_eq!(
            batch.events[0].after, 1,
            "the timer came after the first value list"
        );
        b.clear();
        assert!(b.is_empty() && b.batch().kinds.is_empty());
    }
}
