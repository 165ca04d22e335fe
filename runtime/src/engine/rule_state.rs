//! A rule's key/value state as its calls see it: written through to the store, except while
//! the store cannot take writes (another process holds the lock, the disk is full). Then
//! changes wait here, reads see them, and they are written once the store takes writes again:
//! a rule's call never spends its deadline waiting on the disk, and nothing it set is lost
//! while medic runs. Held changes belong to the rule, not to one instance: the next instance
//! (a new version, the optimized build, a restart after a fault) reads and writes them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::store::Store;

/// After a failed write, how long calls use only the changes held here before trying again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Every rule's held changes, by rule name (shared by the registry's instances).
#[derive(Clone, Default)]
pub struct HeldChanges(Arc<Mutex<HashMap<Arc<str>, SharedHeld>>>);

/// One rule's held changes, shared by its instances.
type SharedHeld = Arc<Mutex<Held>>;

impl HeldChanges {
    fn of(&self, rule: &Arc<str>) -> Arc<Mutex<Held>> {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(rule.clone()).or_default().clone()
    }
}

#[derive(Default)]
pub struct Held {
    /// Changes not yet written: a value, or `None` for a deletion. Only the last change of a
    /// key is kept.
    unwritten: BTreeMap<String, Option<Vec<u8>>>,
    /// No write is tried before then.
    retry_at: Option<Instant>,
}

pub struct RuleState {
    rule: Arc<str>,
    store: Store,
    held: Arc<Mutex<Held>>,
}

impl RuleState {
    pub fn new(rule: Arc<str>, store: Store, held: &HeldChanges) -> Self {
        Self {
            held: held.of(&rule),
            rule,
            store,
        }
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.try_flush();
        if let Some(change) = self.held().unwritten.get(key) {
            return change.clone();
        }
        self.store.state_get(&self.rule, key).unwrap_or_else(|e| {
            self.store
                .report(&format!("rule {} cannot read its state", self.rule), &e);
            None
        })
    }

    pub fn set(&mut self, key: String, value: Option<Vec<u8>>) {
        self.held().unwritten.insert(key, value);
        self.try_flush();
    }

    /// Write what is held, unless a recent failure says to wait. Returns whether all is
    /// written.
    pub fn try_flush(&mut self) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.unwritten.is_empty() {
            return true;
        }
        if held.retry_at.is_some_and(|at| Instant::now() < at) {
            return false;
        }
        while let Some((key, change)) = held.unwritten.pop_first() {
            let written = match &change {
                Some(value) => self.store.state_set(&self.rule, &key, value),
                None => self.store.state_delete(&self.rule, &key),
            };
            if let Err(e) = written {
                held.unwritten.insert(key, change);
                held.retry_at = Some(Instant::now() + RETRY_EVERY);
                self.store.report(
                    &format!("rule {} cannot write its state (kept, retried)", self.rule),
                    &e,
                );
                return false;
            }
        }
        held.retry_at = None;
        true
    }
}

impl Drop for RuleState {
    /// The instance goes (reload, fault, stop): a last try for what is still held. What stays
    /// held waits for the rule's next instance; it is lost only if medic stops first.
    fn drop(&mut self) {
        self.held().retry_at = None;
        if !self.try_flush() {
            tracing::warn!(
                rule = &*self.rule,
                keys = self.held().unwritten.len(),
                "rule state changes not written yet: the state database takes no writes; \
                 kept for the rule's next instance, lost if medic stops before it can write"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_read_back_and_written() {
        let store = Store::in_memory().unwrap();
        let mut state = RuleState::new(Arc::from("r"), store.clone(), &HeldChanges::default());
        state.set("a".into(), Some(b"1".to_vec()));
        assert_eq!(state.get("a"), Some(b"1".to_vec()));
        assert_eq!(store.state_get("r", "a").unwrap(), Some(b"1".to_vec()));
        state.set("a".into(), None);
        assert_eq!(state.get("a"), None);
        assert_eq!(store.state_get("r", "a").unwrap(), None);
    }

    /// What one instance could not write (the database is locked), the next instance of the
    /// same rule reads, and writes once the database takes writes.
    #[test]
    fn held_changes_pass_to_the_rules_next_instance() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("medic.db");
        let store = Store::open(&path).unwrap();
        let held = HeldChanges::default();
        let rule: Arc<str> = Arc::from("r");
        let mut first = RuleState::new(rule.clone(), store.clone(), &held);
        let locker = rusqlite::Connection::open(&path).unwrap();
        locker.execute_batch("BEGIN IMMEDIATE").unwrap();
        first.set("seen".into(), Some(b"7".to_vec()));
        drop(first);
        let mut other = RuleState::new(Arc::from("other"), store.clone(), &held);
        assert_eq!(other.get("seen"), None, "held changes are per rule");
        let mut second = RuleState::new(rule, store.clone(), &held);
        assert_eq!(second.get("seen"), Some(b"7".to_vec()));
        locker.execute_batch("ROLLBACK").unwrap();
        drop(second);
        assert_eq!(store.state_get("r", "seen").unwrap(), Some(b"7".to_vec()));
    }
}
