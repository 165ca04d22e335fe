//! The batch a rule receives, built as columns: by the dispatcher for each rule (a rule's
//! queue carries these batches), or by `medic replay`.

use smallvec::SmallVec;

use super::bindings as wit;

/// One value list as observed by the host, handed by reference to every rule that wants it.
/// Its values live inline (no allocation per value list) up to four, which covers collectd's
/// types but a few.
#[derive(Debug)]
pub struct Observation {
    pub series: u32,
    pub time: u64,
    pub interval: u64,
    pub values: SmallVec<[wit::Value; 4]>,
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
    pub fn push_values(&mut self, obs: &Observation) {
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

    /// Add `other`'s events after these, and return a builder to reuse (emptied): when this
    /// one is empty, `other` is taken whole and nothing is copied.
    pub fn append(&mut self, mut other: BatchBuilder) -> BatchBuilder {
        if self.is_empty() {
            std::mem::swap(self, &mut other);
            other.clear();
            return other;
        }
        let offset = self.batch.series.len() as u32;
        let (a, b) = (&mut self.batch, &mut other.batch);
        a.series.append(&mut b.series);
        a.times.append(&mut b.times);
        a.intervals.append(&mut b.intervals);
        a.value_counts.append(&mut b.value_counts);
        a.kinds.append(&mut b.kinds);
        a.raws.append(&mut b.raws);
        a.rates.append(&mut b.rates);
        a.events.extend(b.events.drain(..).map(|mut e| {
            e.after += offset;
            e
        }));
        other
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
        let obs = |series, values: &[wit::Value]| Observation {
            series,
            time: 1,
            interval: 2,
            values: values.iter().cloned().collect(),
        };
        b.push_values(&obs(0, &[gauge(1.0), gauge(2.0)]));
        b.push_event(wit::Event::Timer("t".into()));
        let counter = wit::Value {
            sample: wit::Sample::Derive(-3),
            rate: Some(0.5),
        };
        b.push_values(&obs(1, &[counter]));
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

    #[test]
    fn appended_batches_keep_their_order_and_events_their_place() {
        let obs = |series| Observation {
            series,
            time: 1,
            interval: 2,
            values: [gauge(f64::from(series))].into_iter().collect(),
        };
        let mut a = BatchBuilder::default();
        let mut b = BatchBuilder::default();
        b.push_values(&obs(1));
        b.push_event(wit::Event::Timer("after 1".into()));
        // Into an empty batch: taken whole.
        let spare = a.append(b);
        assert!(spare.is_empty());
        let mut c = BatchBuilder::default();
        c.push_event(wit::Event::Timer("first of c".into()));
        c.push_values(&obs(2));
        let spare = a.append(c);
        assert!(spare.is_empty());
        let batch = a.batch();
        assert_eq!(batch.series, [1, 2]);
        let places: Vec<u32> = batch.events.iter().map(|e| e.after).collect();
        assert_eq!(places, [1, 1], "c's timer comes after a's one value list");
        assert_eq!(a.len(), 4);
    }
}
