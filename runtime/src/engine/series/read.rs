//! What readers ask of the table: a series' names and last value (rules' `series` and
//! `last-value`), and the unixsock answers (GETVAL, LISTVAL). Each holds the read lock only
//! while it copies what it returns.

use std::hash::BuildHasher;

use super::{SeriesTable, slot};
use crate::engine::bindings as wit;
use crate::event;

impl SeriesTable {
    pub fn info(&self, number: u32) -> Option<wit::SeriesInfo> {
        let inner = self.read();
        let entry = inner.by_number(number)?;
        Some(wit::SeriesInfo {
            identifier: entry.identifier(),
            ds_names: entry.sources.iter().map(|d| d.name.clone()).collect(),
        })
    }

    pub fn last_value(&self, identifier: &str) -> Option<wit::Snapshot> {
        let inner = self.read();
        let s = inner.find(inner.hasher.hash_one(identifier), identifier)?;
        let entry = slot(&inner.slots, s);
        entry.seen.then(|| wit::Snapshot {
            list: entry.list(),
            values: entry.values.as_slice().to_vec(),
        })
    }
}

impl event::LatestValues for SeriesTable {
    fn getval(&self, identifier: &str) -> Option<Vec<(String, f64)>> {
        let inner = self.read();
        let s = inner.find(inner.hasher.hash_one(identifier), identifier)?;
        let entry = slot(&inner.slots, s);
        let values = entry.values.as_slice().iter().zip(entry.sources.iter());
        Some(
            values
                .map(|(v, ds)| {
                    let value = match v.sample {
                        wit::Sample::Gauge(g) => g,
                        _ => v.rate.unwrap_or(f64::NAN),
                    };
                    (ds.name.clone(), value)
                })
                .collect(),
        )
    }

    fn listval(&self) -> Vec<(u64, String)> {
        let inner = self.read();
        let mut all: Vec<(u64, String)> = inner
            .slots
            .iter()
            .flatten()
            .map(|e| (e.time, e.key.to_string()))
            .collect();
        all.sort_unstable_by(|a, b| a.1.cmp(&b.1));
        all
    }
}
