//! Every series the daemon has heard of recently: a number for it (so batches carry numbers, not
//! strings), its data sources, and its latest values, which rates are computed from and
//! `last-value` returns. Series that fall silent are forgotten, as collectd's cache forgets them
//! after `Timeout` intervals, so the table holds what is live, not all that ever was.
//!
//! Memory per series is what bounds medic under a flood of distinct names, so an entry is kept
//! lean: the identifier once as text (its parts are found again from five lengths), the values
//! in one allocation reused for every update, and index tables that hold slot numbers rather
//! than copies of the keys.

use std::fmt::Write as _;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use hashbrown::HashTable;

use super::batch::Observation;
use super::bindings as wit;
use crate::event::{self, Sample};
use crate::types_db::{DataSource, TypesDb};

struct Entry {
    /// `host/plugin[-inst]/type[-inst]`, what subscriptions match against (shared with each
    /// observation routed, so routing costs no copy of it).
    key: Arc<str>,
    /// Byte lengths of host, plugin, plugin instance, type and type instance in `key`: the parts
    /// cannot be split from the text alone when a part holds `-` or `/`.
    lens: [u8; 5],
    /// The number rules know the series by.
    number: u32,
    sources: Arc<[DataSource]>,
    /// False until the first value list is recorded.
    seen: bool,
    time: u64,
    interval: u64,
    /// The latest values with their rates; their raw samples are what the next rates start from.
    values: Values,
}

/// Most types have one data source: its value is kept inline, saving an allocation per series.
enum Values {
    One(wit::Value),
    Many(Box<[wit::Value]>),
}

impl Values {
    fn new(samples: &[Sample]) -> Self {
        let value = |&s: &Sample| wit::Value {
            sample: s.into(),
            rate: None,
        };
        match samples {
            [one] => Values::One(value(one)),
            many => Values::Many(many.iter().map(value).collect()),
        }
    }

    fn as_slice(&self) -> &[wit::Value] {
        match self {
            Values::One(v) => std::slice::from_ref(v),
            Values::Many(v) => v,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [wit::Value] {
        match self {
            Values::One(v) => std::slice::from_mut(v),
            Values::Many(v) => v,
        }
    }
}

impl Entry {
    fn identifier(&self) -> wit::Identifier {
        let mut rest = &*self.key;
        let mut take = |len: u8, sep: usize| {
            let (part, tail) = rest.split_at(len as usize);
            rest = tail.get(sep..).unwrap_or("");
            part.to_string()
        };
        let [h, p, pi, t, ti] = self.lens;
        let host = take(h, 1);
        let plugin = take(p, 1);
        let plugin_instance = take(pi, usize::from(pi > 0));
        let type_ = take(t, usize::from(ti > 0));
        let type_instance = take(ti, 0);
        wit::Identifier {
            host,
            plugin,
            plugin_instance,
            type_,
            type_instance,
        }
    }

    fn list(&self) -> wit::ValueList {
        wit::ValueList {
            series: self.number,
            time: self.time,
            interval: self.interval,
            first: 0,
            count: self.values.as_slice().len() as u32,
        }
    }
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
    #[error("an identifier part is longer than {} bytes", u8::MAX)]
    TooLong,
}

impl Rejected {
    /// A short fixed label for `medic_series_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejected::TooManySeries(_) => "too_many_series",
            Rejected::Future { .. } => "future",
            Rejected::UnknownType(_) => "unknown_type",
            Rejected::CountMismatch { .. } => "count_mismatch",
            Rejected::TooLong => "too_long",
        }
    }
}

/// Series expired in one pass past which freed memory is handed back to the kernel at once
/// (a few milliseconds of allocator work, worth it only after a sizeable drop).
const RELEASE_AFTER: usize = 1000;

/// Bounds on what peers can make the table hold.
#[derive(Debug, Clone, Copy)]
pub struct SeriesLimits {
    /// Series known at once; a value list of a new series beyond it is refused.
    pub max_series: usize,
    /// How many of its own intervals a value may lie in the future (clocks differ a little; a
    /// time far ahead would stay "fresh" for ever).
    pub max_future_intervals: u32,
    /// A series not heard from for this many of its intervals (at least a second each) is
    /// forgotten: collectd's `Timeout`.
    pub timeout_intervals: u32,
}

impl Default for SeriesLimits {
    fn default() -> Self {
        Self {
            max_series: 100_000,
            max_future_intervals: 3,
            timeout_intervals: 2,
        }
    }
}

/// The clock a batch of value lists is observed at: read once per batch, not once per list.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Wall clock, to compare value times with.
    wall_ns: u64,
    /// Whole seconds since the table was made, on the monotonic clock, for expiry.
    tick: u32,
}

/// A value list as rules receive it, plus what routing needs.
pub struct Observed {
    /// What subscriptions match against.
    pub key: Arc<str>,
    /// Where the series lives in the table: dense and reused, unlike `obs.series`, so routing
    /// caches indexed by it stay as small as the table.
    pub slot: u32,
    pub obs: Observation,
}

/// What one expiry pass forgot.
#[derive(Debug, Default, PartialEq)]
pub struct Expired {
    /// Slots freed: a routing cache must forget what it knew of them.
    pub slots: Vec<u32>,
    /// Slots in use from now on are all below this.
    pub slot_bound: usize,
}

/// Slot per key and per number. Both hold slot numbers only and find the key or number in the
/// slot, so they cost 5 bytes a series each, not a copy of the key.
struct Indexes {
    by_key: HashTable<u32>,
    by_number: HashTable<u32>,
}

impl Indexes {
    /// Indexes of every live slot, with room for `capacity` series. Built while readers go on
    /// (under the read lock), so growing or shrinking them never stalls a rule: rehashing a
    /// million keys takes tens of milliseconds, more than a rule's whole call deadline.
    fn of(inner: &Inner, capacity: usize) -> Self {
        let mut by_key = HashTable::with_capacity(capacity);
        let mut by_number = HashTable::with_capacity(capacity);
        let no_growth = |_: &u32| unreachable!("built with room for every live slot");
        for (s, entry) in inner.slots.iter().enumerate() {
            if let Some(entry) = entry {
                let hash = inner.hasher.hash_one(&*entry.key);
                by_key.insert_unique(hash, s as u32, no_growth);
                by_number.insert_unique(inner.hasher.hash_one(entry.number), s as u32, no_growth);
            }
        }
        Self { by_key, by_number }
    }
}

struct Inner {
    hasher: RandomState,
    indexes: Indexes,
    slots: Vec<Option<Entry>>,
    /// Per slot, the tick after which it is forgotten; kept apart from the entries so an
    /// expiry pass reads 4 bytes per series, not a whole entry.
    deadlines: Vec<u32>,
    /// Free slots below `slots.len()`, the lowest last (reused first, keeping the table dense).
    free: Vec<u32>,
    live: usize,
    next_number: u32,
    wrapped: bool,
    /// Data sources for value lists of types without a types.db entry, by count (shared, so a
    /// series of an undeclared type costs no more than one of a declared type).
    fallback: Vec<Option<Arc<[DataSource]>>>,
}

/// Shared between the dispatcher (the writer) and rule workers (readers).
pub struct SeriesTable {
    types: Arc<TypesDb>,
    limits: SeriesLimits,
    started: Instant,
    /// Held by whoever changes the table, for the whole change: work done under the read lock
    /// (rebuilding indexes, finding expired series) relies on no one else writing meanwhile.
    /// It holds the writer's scratch buffer for a value list's key: building the key string
    /// allocates nothing once the buffer has grown.
    writer: Mutex<String>,
    inner: RwLock<Inner>,
}

/// Series removed under one hold of the write lock; readers get in between such batches.
const REMOVE_PER_LOCK: usize = 4096;

impl SeriesTable {
    pub fn new(types: Arc<TypesDb>) -> Self {
        Self::with_limits(types, SeriesLimits::default())
    }

    pub fn with_limits(types: Arc<TypesDb>, limits: SeriesLimits) -> Self {
        Self {
            types,
            limits,
            started: Instant::now(),
            writer: Mutex::new(String::new()),
            inner: RwLock::new(Inner {
                hasher: RandomState::new(),
                indexes: Indexes {
                    by_key: HashTable::new(),
                    by_number: HashTable::new(),
                },
                slots: Vec::new(),
                deadlines: Vec::new(),
                free: Vec::new(),
                live: 0,
                next_number: 0,
                wrapped: false,
                fallback: Vec::new(),
            }),
        }
    }

    pub fn now(&self) -> Now {
        Now {
            wall_ns: event::now_ns(),
            tick: u32::try_from(self.started.elapsed().as_secs()).unwrap_or(u32::MAX),
        }
    }

    /// A moment of a replayed feed (`medic replay`): `wall_ns` on the feed's clock, `elapsed`
    /// since the feed began.
    pub fn now_virtual(wall_ns: u64, elapsed: std::time::Duration) -> Now {
        Now {
            wall_ns,
            tick: u32::try_from(elapsed.as_secs()).unwrap_or(u32::MAX),
        }
    }

    /// Record a value list at `now`: number its series, compute rates, remember it as the latest.
    pub fn observe(&self, vl: &event::ValueList, now: Now) -> Result<Observed, Rejected> {
        // At least a second's worth of slack, for lists that state no interval.
        let interval = vl.interval.max(1_000_000_000);
        let slack = interval * u64::from(self.limits.max_future_intervals);
        if vl.time > now.wall_ns.saturating_add(slack) {
            return Err(Rejected::Future {
                ahead_s: (vl.time - now.wall_ns) / 1_000_000_000,
                max_intervals: self.limits.max_future_intervals,
            });
        }
        let timeout_s = (interval.div_ceil(1_000_000_000))
            .saturating_mul(u64::from(self.limits.timeout_intervals));
        let deadline = u32::try_from(u64::from(now.tick) + timeout_s).unwrap_or(u32::MAX);
        let mut key = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        key.clear();
        write!(key, "{}", vl.identifier).expect("writing to a String cannot fail");
        let key = key.as_str();
        let mut guard = self.write();
        let hash = guard.hasher.hash_one(key);
        let found = guard.find(hash, key);
        let slot_no = match found {
            Some(s) => s,
            None => {
                if guard.indexes.by_key.len() == guard.indexes.by_key.capacity() {
                    drop(guard);
                    self.resize_indexes(|live| (live * 2).max(1024));
                    guard = self.write();
                }
                self.add(&mut guard, vl, key.to_owned(), hash)?
            }
        };
        let inner = &mut *guard;
        inner.deadlines[slot_no as usize] = deadline;
        let entry = inner.slots[slot_no as usize]
            .as_mut()
            .expect("indexed slots hold an entry");
        if entry.values.as_slice().len() != vl.samples.len() {
            return Err(Rejected::CountMismatch {
                type_: vl.identifier.type_.clone(),
                expected: entry.values.as_slice().len(),
                got: vl.samples.len(),
            });
        }
        let previous_time = entry.time;
        let seen = entry.seen;
        for (value, &sample) in entry.values.as_mut_slice().iter_mut().zip(&vl.samples) {
            let previous = seen.then(|| (previous_time, value.sample.into()));
            *value = wit::Value {
                sample: sample.into(),
                rate: rate(sample, previous, vl.time, vl.interval),
            };
        }
        entry.seen = true;
        entry.time = vl.time;
        entry.interval = vl.interval;
        let obs = Observation {
            series: entry.number,
            time: vl.time,
            interval: vl.interval,
            values: entry.values.as_slice().iter().cloned().collect(),
        };
        Ok(Observed {
            key: entry.key.clone(),
            slot: slot_no,
            obs,
        })
    }

    /// A new series: checked against the cap and types.db, given a slot and a number.
    fn add(
        &self,
        inner: &mut Inner,
        vl: &event::ValueList,
        key: String,
        hash: u64,
    ) -> Result<u32, Rejected> {
        if inner.live >= self.limits.max_series {
            return Err(Rejected::TooManySeries(inner.live));
        }
        let id = &vl.identifier;
        let mut lens = [0u8; 5];
        let parts = [
            &id.host,
            &id.plugin,
            &id.plugin_instance,
            &id.type_,
            &id.type_instance,
        ];
        for (len, part) in lens.iter_mut().zip(parts) {
            *len = u8::try_from(part.len()).map_err(|_| Rejected::TooLong)?;
        }
        let sources = match self.types.get(&id.type_) {
            Some(sources) => sources.clone(),
            None => inner
                .fallback_sources(&self.types, vl.samples.len())
                .ok_or_else(|| Rejected::UnknownType(id.type_.clone()))?,
        };
        if sources.len() != vl.samples.len() {
            return Err(Rejected::CountMismatch {
                type_: id.type_.clone(),
                expected: sources.len(),
                got: vl.samples.len(),
            });
        }
        let number = inner.next_free_number();
        let entry = Entry {
            key: key.into(),
            lens,
            number,
            sources,
            seen: false,
            time: 0,
            interval: 0,
            values: Values::new(&vl.samples),
        };
        let slot_no = match inner.free.pop() {
            Some(s) => {
                inner.slots[s as usize] = Some(entry);
                s
            }
            None => {
                inner.slots.push(Some(entry));
                inner.deadlines.push(0);
                (inner.slots.len() - 1) as u32
            }
        };
        let Inner {
            hasher,
            indexes,
            slots,
            ..
        } = inner;
        indexes
            .by_key
            .insert_unique(hash, slot_no, |&s| hasher.hash_one(&*slot(slots, s).key));
        indexes
            .by_number
            .insert_unique(hasher.hash_one(number), slot_no, |&s| {
                hasher.hash_one(slot(slots, s).number)
            });
        inner.live += 1;
        Ok(slot_no)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// New indexes with room for `capacity(live series)`, built under the read lock and swapped
    /// in under the write lock. The caller holds `writer`.
    fn resize_indexes(&self, capacity: impl FnOnce(usize) -> usize) {
        let indexes = {
            let inner = self.read();
            Indexes::of(&inner, capacity(inner.live))
        };
        self.write().indexes = indexes;
    }

    /// Forget the series whose deadline passed before `now`, and give their memory back.
    pub fn expire(&self, now: Now) -> Expired {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let expired: Vec<u32> = {
            let inner = self.read();
            let slots = inner.deadlines.iter().zip(&inner.slots);
            (slots.enumerate())
                .filter(|(_, (deadline, entry))| entry.is_some() && **deadline < now.tick)
                .map(|(i, _)| i as u32)
                .collect()
        };
        if expired.is_empty() {
            return Expired {
                slots: expired,
                slot_bound: self.read().slots.len(),
            };
        }
        for chunk in expired.chunks(REMOVE_PER_LOCK) {
            self.write().remove(chunk);
        }
        let slot_bound = self.write().compact();
        let oversized = {
            let by_key = &self.read().indexes.by_key;
            by_key.capacity() > 4 * by_key.len() + 1024
        };
        if oversized {
            self.resize_indexes(|live| live * 2);
        }
        if expired.len() >= RELEASE_AFTER {
            crate::os::release_free_memory();
        }
        Expired {
            slots: expired,
            slot_bound,
        }
    }

    /// Series known now.
    pub fn len(&self) -> usize {
        self.read().live
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn slot(slots: &[Option<Entry>], s: u32) -> &Entry {
    slots[s as usize]
        .as_ref()
        .expect("indexed slots hold an entry")
}

impl Inner {
    fn find(&self, hash: u64, key: &str) -> Option<u32> {
        let slots = &self.slots;
        let found = self
            .indexes
            .by_key
            .find(hash, |&s| &*slot(slots, s).key == key);
        found.copied()
    }

    fn by_number(&self, number: u32) -> Option<&Entry> {
        let hash = self.hasher.hash_one(number);
        let s = *self
            .indexes
            .by_number
            .find(hash, |&s| slot(&self.slots, s).number == number)?;
        Some(slot(&self.slots, s))
    }

    /// Numbers are not reused while they can be helped: rules key their state by them, and the
    /// WIT contract says a number names one series for the life of an instance. After 2^32 new
    /// series they wrap, skipping numbers still in use.
    fn next_free_number(&mut self) -> u32 {
        loop {
            let number = self.next_number;
            self.next_number = number.wrapping_add(1);
            if self.next_number == 0 && !self.wrapped {
                self.wrapped = true;
                tracing::warn!(
                    "series numbers wrapped after 2^32 series: a rule that still holds state \
                     for a long-expired series may see its number again"
                );
            }
            if self.by_number(number).is_none() {
                return number;
            }
        }
    }

    fn fallback_sources(&mut self, types: &TypesDb, count: usize) -> Option<Arc<[DataSource]>> {
        if count >= self.fallback.len() {
            self.fallback.resize(count + 1, None);
        }
        if self.fallback[count].is_none() {
            self.fallback[count] = types.sources_or_fallback("", count);
        }
        self.fallback[count].clone()
    }

    fn remove(&mut self, expired: &[u32]) {
        for &s in expired {
            let entry = self.slots[s as usize]
                .take()
                .expect("expired slots are live");
            let hash = self.hasher.hash_one(&*entry.key);
            if let Ok(found) = self.indexes.by_key.find_entry(hash, |&x| x == s) {
                found.remove();
            }
            let hash = self.hasher.hash_one(entry.number);
            if let Ok(found) = self.indexes.by_number.find_entry(hash, |&x| x == s) {
                found.remove();
            }
            self.live -= 1;
        }
    }

    /// After removals: trailing free slots go, the free list is rebuilt below the new end, and
    /// spare room is given back. Returns the new end.
    fn compact(&mut self) -> usize {
        while matches!(self.slots.last(), Some(None)) {
            self.slots.pop();
        }
        self.deadlines.truncate(self.slots.len());
        self.free = (0..self.slots.len() as u32)
            .rev()
            .filter(|&s| self.slots[s as usize].is_none())
            .collect();
        // A flood of names that expired must not leave medic at its high-water mark.
        if self.slots.capacity() > 2 * self.slots.len() + 64 {
            self.slots.shrink_to_fit();
            self.deadlines.shrink_to_fit();
            self.free.shrink_to_fit();
        }
        self.slots.len()
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

mod read;

#[cfg(test)]
mod tests;
