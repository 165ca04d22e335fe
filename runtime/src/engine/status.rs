//! What each rule is doing, for logs, `medic check`, `GET /status` and the page; each count
//! also moves the rule's Prometheus metrics, so the page and `/metrics` agree.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::metrics::{RuleLabels, metrics};

#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    Running,
    Faulted { reason: String, retry_in: Duration },
}

#[derive(Debug, Clone)]
pub struct RuleStatus {
    pub file: PathBuf,
    pub version: String,
    /// SHA-256 of the serving `.wasm`.
    pub hash: String,
    pub health: Health,
    pub loaded_at: SystemTime,
    /// Why the latest attempt to load a new version failed (the old one kept serving).
    pub last_load_error: Option<String>,
    pub batches: u64,
    pub events: u64,
    /// Events this rule never saw: queue full, or dropped while faulted.
    pub dropped: u64,
    /// Time spent inside the rule.
    pub busy: Duration,
    /// How long the last batch took inside the rule.
    pub last_call: Duration,
}

/// One rule's call counters, looked up once: counting a call (hundreds a second per rule under
/// load) then costs two atomic adds and one short hold of the board's lock.
pub struct RuleMeter {
    board: StatusBoard,
    name: String,
    events: prometheus_client::metrics::counter::Counter,
    call_duration: prometheus_client::metrics::histogram::Histogram,
}

impl RuleMeter {
    /// A call took `events` events in `busy`; it succeeded, so the rule is running (again).
    pub fn count_call(&self, events: u64, busy: Duration) {
        self.events.inc_by(events);
        self.call_duration.observe(busy.as_secs_f64());
        if let Some(s) = self.board.lock().get_mut(&self.name) {
            s.batches += 1;
            s.events += events;
            s.busy += busy;
            s.last_call = busy;
            if s.health != Health::Running {
                s.health = Health::Running;
            }
        }
    }
}

#[derive(Clone, Default)]
pub struct StatusBoard {
    rules: Arc<Mutex<BTreeMap<String, RuleStatus>>>,
}

impl StatusBoard {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, RuleStatus>> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn loaded(&self, name: &str, file: PathBuf, version: String, hash: String) {
        let mut rules = self.lock();
        let entry = rules.entry(name.to_string()).or_insert_with(|| RuleStatus {
            file: file.clone(),
            version: String::new(),
            hash: String::new(),
            health: Health::Running,
            loaded_at: SystemTime::now(),
            last_load_error: None,
            batches: 0,
            events: 0,
            dropped: 0,
            busy: Duration::ZERO,
            last_call: Duration::ZERO,
        });
        entry.file = file;
        entry.version = version;
        entry.hash = hash;
        entry.health = Health::Running;
        entry.loaded_at = SystemTime::now();
        entry.last_load_error = None;
    }

    pub fn load_failed(&self, name: &str, error: String) {
        if let Some(s) = self.lock().get_mut(name) {
            s.last_load_error = Some(error);
        }
    }

    pub fn set_health(&self, name: &str, health: Health) {
        if let Some(s) = self.lock().get_mut(name) {
            s.health = health;
        }
    }

    /// The counters of rule `name`'s calls, taken once (by its worker).
    pub fn meter(&self, name: &str) -> RuleMeter {
        let labels = RuleLabels { rule: name.into() };
        let m = metrics();
        RuleMeter {
            board: self.clone(),
            name: name.to_string(),
            events: m.rule_events.get_or_create(&labels).clone(),
            call_duration: m.rule_call_duration_seconds.get_or_create(&labels).clone(),
        }
    }

    pub fn count_dropped(&self, name: &str, events: u64) {
        metrics()
            .rule_events_dropped
            .get_or_create(&RuleLabels { rule: name.into() })
            .inc_by(events);
        if let Some(s) = self.lock().get_mut(name) {
            s.dropped += events;
        }
    }

    pub fn remove(&self, name: &str) {
        self.lock().remove(name);
    }

    pub fn snapshot(&self) -> BTreeMap<String, RuleStatus> {
        self.lock().clone()
    }
}
