//! What a rule's `on_batch` sees: events in arrival order and the values their value lists point
//! into. The host sends a batch as columns (`medic:rules@0.2.0`, cheap to hand over); this module
//! turns them back into this shape, reusing the previous batch's buffers.

use crate::__bindings::medic::rules::types as wire;
use crate::{CommandResult, MqttMessage, Notification, Sample, Value, ValueList};

/// One event of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A value list; its values are `batch.values_of(list)`.
    Values(ValueList),
    Notification(Notification),
    Mqtt(MqttMessage),
    /// A timer this rule set has fired; the payload is its name.
    Timer(String),
    CommandResult(CommandResult),
}

/// What one call delivers: events in arrival order, and one flat list of the values their value
/// lists point into.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub events: Vec<Event>,
    pub values: Vec<Value>,
}

impl Batch {
    /// The values of one of this batch's value lists (empty if the host sent bad indexes).
    pub fn values_of(&self, list: &ValueList) -> &[Value] {
        crate::values::slice(&self.values, list)
    }

    /// Refill from the host's columns. Columns shorter than they should be (a host bug) shorten
    /// what is delivered instead of panicking inside the rule.
    pub(crate) fn fill_from(&mut self, wire: wire::Batch) {
        self.events.clear();
        self.values.clear();
        self.values.extend(
            wire.kinds
                .iter()
                .zip(&wire.raws)
                .zip(&wire.rates)
                .map(|((&kind, &raw), &rate)| value(kind, raw, rate)),
        );
        let lists = wire
            .series
            .len()
            .min(wire.times.len())
            .min(wire.intervals.len())
            .min(wire.value_counts.len());
        self.events.reserve(lists + wire.events.len());
        // Value lists between two other events (all of them, in most batches) are added by one
        // `extend`, which writes each event in place: pushing them one by one copied every
        // `Event` (the size of its largest variant) through a `memory.copy`, a call out of wasm.
        let mut first = 0u32;
        let mut done = 0;
        let mut others = wire.events.into_iter().peekable();
        while done < lists {
            while let Some(placed) = others.next_if(|p| p.after as usize <= done) {
                self.events.push(placed.event.into());
            }
            let until = others
                .peek()
                .map_or(lists, |p| (p.after as usize).min(lists));
            let columns = wire.series[done..until]
                .iter()
                .zip(&wire.times[done..until])
                .zip(&wire.intervals[done..until])
                .zip(&wire.value_counts[done..until]);
            self.events
                .extend(columns.map(|(((&series, &time), &interval), &count)| {
                    let list = ValueList {
                        series,
                        time,
                        interval,
                        first,
                        count,
                    };
                    first = first.saturating_add(count);
                    Event::Values(list)
                }));
            done = until;
        }
        self.events.extend(others.map(|p| p.event.into()));
    }
}

/// The `kinds` column's flag for "this value has a rate".
const HAS_RATE: u8 = 0x80;

fn value(kind: u8, raw: u64, rate: f64) -> Value {
    let sample = match kind & !HAS_RATE {
        0 => Sample::Gauge(f64::from_bits(raw)),
        1 => Sample::Derive(raw as i64),
        2 => Sample::Counter(raw),
        3 => Sample::Absolute(raw),
        // A kind this SDK does not know: collectd's "unknown" rather than a wrong number.
        _ => Sample::Gauge(f64::NAN),
    };
    Value {
        sample,
        rate: (kind & HAS_RATE != 0).then_some(rate),
    }
}

impl From<wire::Event> for Event {
    fn from(event: wire::Event) -> Self {
        match event {
            wire::Event::Notification(n) => Event::Notification(n),
            wire::Event::Mqtt(m) => Event::Mqtt(m),
            wire::Event::Timer(t) => Event::Timer(t),
            wire::Event::CommandResult(r) => Event::CommandResult(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire_batch() -> wire::Batch {
        wire::Batch {
            series: vec![7, 8],
            times: vec![10, 20],
            intervals: vec![1, 2],
            value_counts: vec![2, 1],
            kinds: vec![0, 2 | HAS_RATE, 1],
            raws: vec![1.5f64.to_bits(), 40, -3i64 as u64],
            rates: vec![f64::NAN, 4.0, f64::NAN],
            events: vec![
                wire::PlacedEvent {
                    after: 0,
                    event: wire::Event::Timer("first".into()),
                },
                wire::PlacedEvent {
                    after: 1,
                    event: wire::Event::Timer("between".into()),
                },
                wire::PlacedEvent {
                    after: 2,
                    event: wire::Event::Timer("last".into()),
                },
            ],
        }
    }

    #[test]
    fn columns_become_events_in_arrival_order() {
        let mut batch = Batch::default();
        batch.fill_from(wire_batch());
        let names: Vec<String> = batch
            .events
            .iter()
            .map(|e| match e {
                Event::Values(l) => format!("values {}", l.series),
                Event::Timer(t) => t.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(names, ["first", "values 7", "between", "values 8", "last"]);
        let Event::Values(second) = &batch.events[3] else {
            panic!()
        };
        assert_eq!((second.time, second.interval), (20, 2));
        assert_eq!(
            batch.values_of(second),
            [Value {
                sample: Sample::Derive(-3),
                rate: None
            }]
        );
        let Event::Values(first) = &batch.events[1] else {
            panic!()
        };
        let values = batch.values_of(first);
        assert_eq!(values[0].sample, Sample::Gauge(1.5));
        assert_eq!(values[0].rate, None);
        assert_eq!(values[1].sample, Sample::Counter(40));
        assert_eq!(values[1].rate, Some(4.0));
    }

    #[test]
    fn a_refill_replaces_the_previous_batch() {
        let mut batch = Batch::default();
        batch.fill_from(wire_batch());
        let mut one = wire_batch();
        one.series.truncate(1);
        one.events.clear();
        batch.fill_from(one);
        assert_eq!(batch.events.len(), 1);
        assert_eq!(batch.values.len(), 3);
    }

    #[test]
    fn short_columns_shorten_the_batch_instead_of_panicking() {
        let mut short = wire_batch();
        short.times.truncate(1);
        short.raws.truncate(2);
        let mut batch = Batch::default();
        batch.fill_from(short);
        let lists = batch
            .events
            .iter()
            .filter(|e| matches!(e, Event::Values(_)))
            .count();
        assert_eq!(lists, 1);
        assert_eq!(batch.values.len(), 2);
        // The events after the missing list still arrive.
        assert_eq!(batch.events.len(), 4);
    }

    #[test]
    fn an_unknown_kind_is_an_unknown_value() {
        let v = value(9, 1, 0.0);
        assert!(matches!(v.sample, Sample::Gauge(g) if g.is_nan()));
    }
}
