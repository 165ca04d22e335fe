//! Every series the daemon has seen: a dense number for it (so batches carry numbers, not
//! strings), its data-source names, the previous raw values that rates are computed from, and
//! the latest value list for `last-value`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::batch::Observation;
use super::bindings as wit;
use crate::event::{self, Sample};
use crate::types_db::{DataSource, TypesDb};

struct Entry {
    /// `host/plugin[-inst]/type[-inst]`, what subscriptions match against.
    key: Arc<str>,
    info: wit::SeriesInfo,
    sources: Arc<[DataSource]>,
    last: Option<Arc<Observation>>,
    /// Raw values and time of the previous list, for counter and derive rates.
    previous: Option<(u64, Vec<Sample>)>,
}

/// Why a value list was not accepted.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum Rejected {
    #[error("a new series, and {0} series are known already (ingest.max_series)")]
    TooManySeries(usize),
    #[error(
        "its time is {ahead_s}s in the future (at most {max_intervals} intervals ahead are taken)"
    )]
    Future { ahead_s: u64, max_intervals: u32 },
    #[error("type `{0}` is not in types.db")]
    UnknownType(String),
    #[error("type `{type_}` has {expected} data sources, the value list has {got}")]
    CountMismatch {
        type_: String,
        expected: usize,
        got: usize,
    },
}

#[derive(Default)]
struct Inner {
    ids: HashMap<Arc<str>, u32>,
    entries: Vec<Entry>,
}

/// Shared between the dispatcher (the only writer) and rule workers (readers).
pub struct SeriesTable {
    types: Arc<TypesDb>,
    limits: SeriesLimits,
    inner: RwLock<Inner>,
}

/// Bounds on what peers can make the table hold.
#[derive(Debug, Clone, Copy)]
pub struct SeriesLimits {
    /// Series known at once; a value list of a new series beyond it is refused.
    pub max_series: usize,
    /// How many of its own intervals a value may lie in the future (clocks differ a little; a
    /// time far ahead would stay "fresh" for ever).
    pub max_future_intervals: u32,
}

impl Default for SeriesLimits {
    fn default() -> Self {
        Self {
            max_series: 100_000,
            max_future_intervals: 3,
        }
    }
}

/// A value list as rules receive it, plus the key their subscriptions match.
pub struct Observed {
    pub key: Arc<str>,
    pub obs: Arc<Observation>,
}

impl SeriesTable {
    pub fn new(types: Arc<TypesDb>) -> Self {
        Self::with_limits(types, SeriesLimits::default())
    }

    pub fn with_limits(types: Arc<TypesDb>, limits: SeriesLimits) -> Self {
        Self {
            types,
            limits,
            inner: RwLock::default(),
        }
    }

    /// Record a value list: number its series, compute rates, remember it as the latest.
    pub fn observe(&self, vl: &event::ValueList) -> Result<Observed, Rejected> {
        // At least a second's worth of slack, for lists that state no interval.
        let slack = vl.interval.max(1_000_000_000) * u64::from(self.limits.max_future_intervals);
        let now = event::now_ns();
        if vl.time > now.saturating_add(slack) {
            return Err(Rejected::Future {
                ahead_s: (vl.time - now) / 1_000_000_000,
                max_intervals: self.limits.max_future_intervals,
            });
        }
        let key = vl.identifier.to_string();
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let id = match inner.ids.get(key.as_str()) {
            Some(&id) => id,
            None => {
                if inner.entries.len() >= self.limits.max_series {
                    return Err(Rejected::TooManySeries(inner.entries.len()));
                }
                let sources = self
                    .types
                    .sources_or_fallback(&vl.identifier.type_, vl.samples.len())
                    .ok_or_else(|| Rejected::UnknownType(vl.identifier.type_.clone()))?;
                let id = inner.entries.len() as u32;
                let key: Arc<str> = key.into();
                inner.entries.push(Entry {
                    key: key.clone(),
                    info: wit::SeriesInfo {
                        identifier: (&vl.identifier).into(),
                        ds_names: sources.iter().map(|d| d.name.clone()).collect(),
                    },
                    sources,
                    last: None,
                    previous: None,
                });
                inner.ids.insert(key, id);
                id
            }
        };
        let entry = &mut inner.entries[id as usize];
        if entry.sources.len() != vl.samples.len() {
            return Err(Rejected::CountMismatch {
                type_: vl.identifier.type_.clone(),
                expected: entry.sources.len(),
                got: vl.samples.len(),
            });
        }
        let previous = entry.previous.as_ref();
        let values = vl
            .samples
            .iter()
            .enumerate()
            .map(|(i, s)| wit::Value {
                sample: (*s).into(),
                rate: rate(
                    *s,
                    previous.and_then(|(t, p)| Some((*t, *p.get(i)?))),
                    vl.time,
                    vl.interval,
                ),
            })
            .collect();
        let obs = Arc::new(Observation {
            series: id,
            time: vl.time,
            interval: vl.interval,
            values,
        });
        entry.previous = Some((vl.time, vl.samples.clone()));
        entry.last = Some(obs.clone());
        Ok(Observed {
            key: entry.key.clone(),
            obs,
        })
    }

    pub fn info(&self, id: u32) -> Option<wit::SeriesInfo> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner.entries.get(id as usize).map(|e| e.info.clone())
    }

    pub fn last_value(&self, identifier: &str) -> Option<wit::Snapshot> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let id = *inner.ids.get(identifier)?;
        inner.entries[id as usize]
            .last
            .as_ref()
            .map(|o| o.snapshot())
    }

    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Per-second rate as collectd computes it. Counters that went backwards wrapped: at 32 bits if
/// the old value fit in 32 bits, else at 64 (collectd's `counter_diff`). Derives may go down.
fn rate(now: Sample, previous: Option<(u64, Sample)>, time: u64, interval: u64) -> Option<f64> {
    if let Sample::Absolute(v) = now {
        return (interval > 0).then(|| v as f64 / (interval as f64 / 1e9));
    }
    let (then, old) = previous?;
    let dt = time.checked_sub(then).filter(|&d| d > 0)? as f64 / 1e9;
    let diff = match (now, old) {
        (Sample::Counter(new), Sample::Counter(old)) if new >= old => (new - old) as f64,
        (Sample::Counter(new), Sample::Counter(old)) if old <= u32::MAX as u64 => {
            ((u32::MAX as u64 - old) + new + 1) as f64
        }
        (Sample::Counter(new), Sample::Counter(old)) => {
            (u64::MAX - old).wrapping_add(new).wrapping_add(1) as f64
        }
        (Sample::Derive(new), Sample::Derive(old)) => new.wrapping_sub(old) as f64,
        _ => return None,
    };
    Some(diff / dt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Identifier, ValueList};

    const S: u64 = 1_000_000_000;

    fn table() -> SeriesTable {
        let mut db = TypesDb::default();
        db.add(
            "if_octets rx:DERIVE:0:U, tx:DERIVE:0:U\ncounter value:COUNTER:U:U\n\
                absolute value:ABSOLUTE:0:U\ngauge value:GAUGE:U:U\n",
        );
        SeriesTable::new(Arc::new(db))
    }

    fn vl(id: &str, time: u64, samples: Vec<Sample>) -> ValueList {
        ValueList {
            identifier: Identifier::parse(id).unwrap(),
            time,
            interval: 10 * S,
            samples,
        }
    }

    fn rates(o: &Observed) -> Vec<Option<f64>> {
        o.obs.values.iter().map(|v| v.rate).collect()
    }

    #[test]
    fn numbers_series_and_computes_rates() {
        let t = table();
        let a = t
            .observe(&vl(
                "h/interface-lo/if_octets",
                10 * S,
                vec![Sample::Derive(100), Sample::Derive(5)],
            ))
            .unwrap();
        assert_eq!(a.obs.series, 0);
        assert_eq!(&*a.key, "h/interface-lo/if_octets");
        assert_eq!(rates(&a), vec![None, None]);
        let b = t
            .observe(&vl(
                "h/interface-lo/if_octets",
                20 * S,
                vec![Sample::Derive(200), Sample::Derive(0)],
            ))
            .unwrap();
        assert_eq!(b.obs.series, 0);
        assert_eq!(rates(&b), vec![Some(10.0), Some(-0.5)]);
        assert_eq!(t.info(0).unwrap().ds_names, vec!["rx", "tx"]);
        assert_eq!(
            t.last_value("h/interface-lo/if_octets").unwrap().list.time,
            20 * S
        );
        let g = t
            .observe(&vl("h/x/gauge", S, vec![Sample::Gauge(1.0)]))
            .unwrap();
        assert_eq!((g.obs.series, rates(&g)), (1, vec![None]));
        let abs = t
            .observe(&vl("h/x/absolute", S, vec![Sample::Absolute(50)]))
            .unwrap();
        assert_eq!(rates(&abs), vec![Some(5.0)]);
    }

    #[test]
    fn counter_wraps_like_collectd() {
        let t = table();
        t.observe(&vl(
            "h/c/counter",
            10 * S,
            vec![Sample::Counter(u32::MAX as u64 - 9)],
        ))
        .unwrap();
        let o = t
            .observe(&vl("h/c/counter", 20 * S, vec![Sample::Counter(10)]))
            .unwrap();
        assert_eq!(rates(&o), vec![Some(2.0)]);
        t.observe(&vl(
            "h/c2/counter",
            10 * S,
            vec![Sample::Counter(u64::MAX - 9)],
        ))
        .unwrap();
        let o = t
            .observe(&vl("h/c2/counter", 20 * S, vec![Sample::Counter(10)]))
            .unwrap();
        assert_eq!(rates(&o), vec![Some(2.0)]);
        let o = t
            .observe(&vl("h/c2/counter", 20 * S, vec![Sample::Counter(30)]))
            .unwrap();
        assert_eq!(rates(&o), vec![None], "no time passed, no rate");
    }

    #[test]
    fn rejects_unknown_types_and_wrong_counts() {
        let t = table();
        assert_eq!(
            t.observe(&vl("h/x/nosuch", S, vec![Sample::Gauge(1.0)]))
                .err(),
            Some(Rejected::UnknownType("nosuch".into()))
        );
        assert!(matches!(
            t.observe(&vl("h/x/if_octets", S, vec![Sample::Derive(1)])),
            Err(Rejected::CountMismatch {
                expected: 2,
                got: 1,
                ..
            })
        ));
        assert!(t.is_empty() || t.len() == 1);
    }

    #[test]
    fn the_table_is_bounded_and_refuses_the_far_future() {
        let mut db = TypesDb::default();
        db.add("gauge value:GAUGE:U:U\n");
        let limits = SeriesLimits {
            max_series: 2,
            max_future_intervals: 3,
        };
        let t = SeriesTable::with_limits(Arc::new(db), limits);
        let now = crate::event::now_ns();
        let g = |id: &str, time| vl(id, time, vec![Sample::Gauge(1.0)]);
        t.observe(&g("a/p/gauge", now)).unwrap();
        t.observe(&g("b/p/gauge", now)).unwrap();
        assert_eq!(
            t.observe(&g("c/p/gauge", now)).err(),
            Some(Rejected::TooManySeries(2))
        );
        // Known series still flow; a little ahead is fine, far ahead is not.
        t.observe(&g("a/p/gauge", now + 15 * S)).unwrap();
        assert!(matches!(
            t.observe(&g("a/p/gauge", now + 3600 * S)),
            Err(Rejected::Future {
                max_intervals: 3,
                ..
            })
        ));
        assert_eq!(t.len(), 2);
    }
}
