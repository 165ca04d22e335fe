//! A rule's key/value state as its calls see it: in memory, read from the store once (when the
//! rule's first instance is made, outside any call), and every change handed to the store's
//! writer thread (`History::keep_rule_state`), which writes it in its own transactions. So a
//! rule's call never makes a database call: it cannot spend its deadline waiting on a lock held
//! by another process or on a full disk, and what it set is read back from memory at once.
//!
//! The state belongs to the rule, not to one instance: the next instance (a new version, the
//! optimized build, a restart after a fault) sees it. Without a writer (`medic check`,
//! benchmarks, `medic replay` on its in-memory store) changes are written to the store directly.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::store::Store;
use crate::store::history::History;

/// One rule's state, shared by its instances.
type SharedHeld = Arc<Mutex<Held>>;

/// Every rule's state, by rule name (shared by the registry's instances).
#[derive(Clone, Default)]
pub struct HeldChanges(Arc<Mutex<HashMap<Arc<str>, SharedHeld>>>);

impl HeldChanges {
    fn of(&self, rule: &Arc<str>) -> SharedHeld {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(rule.clone()).or_default().clone()
    }
}

/// One rule's state, shared by its instances.
#[derive(Default)]
pub struct Held {
    /// The rule's state, once read from the store.
    values: Option<BTreeMap<String, Vec<u8>>>,
    /// While the state could not be read yet: the changes made since (`None`: deleted), which
    /// reads see before the store, and which go on top of what the store holds once it is read
    /// (the writer may not have written them yet).
    since_unread: BTreeMap<String, Option<Vec<u8>>>,
    /// Changes the writer's queue had no room for: handed to it again with the next change,
    /// or when the instance goes. Only the last change of a key is kept.
    unsent: BTreeMap<String, Option<Vec<u8>>>,
}

pub struct RuleState {
    rule: Arc<str>,
    store: Store,
    writer: Option<History>,
    held: SharedHeld,
}

impl RuleState {
    /// Called when an instance is made (outside any call): the first instance of a rule reads
    /// its state from the store.
    pub fn new(rule: Arc<str>, store: Store, held: &HeldChanges, writer: Option<History>) -> Self {
        let me = Self {
            held: held.of(&rule),
            rule,
            store,
            writer,
        };
        me.load();
        me
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn load(&self) {
        let mut held = self.held();
        if held.values.is_some() {
            return;
        }
        match self.store.state_all(&self.rule) {
            Ok(all) => {
                let mut values: BTreeMap<String, Vec<u8>> = all.into_iter().collect();
                for (key, change) in std::mem::take(&mut held.since_unread) {
                    match change {
                        Some(v) => values.insert(key, v),
                        None => values.remove(&key),
                    };
                }
                held.values = Some(values);
            }
            // Tried again by the next instance; meanwhile reads go to the store.
            Err(e) => self
                .store
                .report(&format!("rule {} cannot read its state", self.rule), &e),
        }
    }

    pub fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        {
            let held = self.held();
            if let Some(values) = &held.values {
                return values.get(key).cloned();
            }
            if let Some(change) = held.since_unread.get(key) {
                return change.clone();
            }
        }
        self.store.state_get(&self.rule, key).unwrap_or_else(|e| {
            self.store
                .report(&format!("rule {} cannot read its state", self.rule), &e);
            None
        })
    }

    pub fn set(&mut self, key: String, value: Option<Vec<u8>>) {
        let mut held = self.held();
        match &mut held.values {
            Some(values) => {
                match &value {
                    Some(v) => values.insert(key.clone(), v.clone()),
                    None => values.remove(&key),
                };
            }
            None => {
                held.since_unread.insert(key.clone(), value.clone());
            }
        }
        held.unsent.insert(key, value);
        self.send(&mut held);
    }

    /// Hand what is unsent to the writer (or, without one, write it). Returns whether all went.
    fn send(&self, held: &mut Held) -> bool {
        while let Some((key, value)) = held.unsent.pop_first() {
            let refused = match &self.writer {
                Some(writer) => writer.keep_rule_state(&self.rule, key, value).err(),
                None => self.write_now(key, value),
            };
            if let Some((key, value)) = refused {
                held.unsent.insert(key, value);
                return false;
            }
        }
        true
    }

    /// Without a writer thread: write one change now; it is given back when the store refuses
    /// it (kept, tried with the next change).
    fn write_now(&self, key: String, value: Option<Vec<u8>>) -> Option<(String, Option<Vec<u8>>)> {
        let written = match &value {
            Some(v) => self.store.state_set(&self.rule, &key, v),
            None => self.store.state_delete(&self.rule, &key),
        };
        match written {
            Ok(()) => None,
            Err(e) => {
                self.store.report(
                    &format!("rule {} cannot write its state (kept, retried)", self.rule),
                    &e,
                );
                Some((key, value))
            }
        }
    }
}

impl Drop for RuleState {
    /// The instance goes (reload, fault, stop): a last try for what is unsent. What stays
    /// waits for the rule's next instance; it is lost only if medic stops first.
    fn drop(&mut self) {
        let held = self.held.clone();
        let mut held = held.lock().unwrap_or_else(|p| p.into_inner());
        if !self.send(&mut held) {
            tracing::warn!(
                rule = &*self.rule,
                keys = held.unsent.len(),
                "rule state changes not handed to the store's writer yet (its queue is full); \
                 kept for the rule's next instance, lost if medic stops before"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::history::Retention;

    #[test]
    fn without_a_writer_changes_are_read_back_and_written_at_once() {
        let store = Store::in_memory().unwrap();
        let held = HeldChanges::default();
        let mut state = RuleState::new(Arc::from("r"), store.clone(), &held, None);
        state.set("a".into(), Some(b"1".to_vec()));
        assert_eq!(state.get("a"), Some(b"1".to_vec()));
        assert_eq!(store.state_get("r", "a").unwrap(), Some(b"1".to_vec()));
        state.set("a".into(), None);
        assert_eq!(state.get("a"), None);
        assert_eq!(store.state_get("r", "a").unwrap(), None);
    }

    /// With the database locked by another process, a change returns at once and is read back;
    /// the rule's next instance sees it, another rule does not; the writer thread writes it
    /// once the lock is gone.
    #[test]
    fn a_change_never_waits_on_the_database_and_the_writer_writes_it_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("medic.db");
        let store = Store::open(&path).unwrap();
        store.state_set("r", "kept", b"0").unwrap();
        let writer = History::start(
            store.clone(),
            Retention {
                max_age: Duration::from_secs(3600),
                max_rows: 1000,
            },
        )
        .unwrap();
        let held = HeldChanges::default();
        let rule: Arc<str> = Arc::from("r");
        let mut first = RuleState::new(rule.clone(), store.clone(), &held, Some(writer.clone()));
        assert_eq!(
            first.get("kept"),
            Some(b"0".to_vec()),
            "read from the store once"
        );
        let locker = rusqlite::Connection::open(&path).unwrap();
        locker.execute_batch("BEGIN IMMEDIATE").unwrap();
        first.set("seen".into(), Some(b"7".to_vec()));
        assert_eq!(first.get("seen"), Some(b"7".to_vec()));
        assert_eq!(
            store.state_get("r", "seen").unwrap(),
            None,
            "handed to the writer, not written on the caller's thread"
        );
        drop(first);
        let mut other = RuleState::new(Arc::from("other"), store.clone(), &held, None);
        assert_eq!(other.get("seen"), None, "state is per rule");
        let mut second = RuleState::new(rule, store.clone(), &held, Some(writer.clone()));
        assert_eq!(second.get("seen"), Some(b"7".to_vec()));
        assert!(
            !writer.flush(Duration::from_millis(200)),
            "not written while locked"
        );
        locker.execute_batch("ROLLBACK").unwrap();
        assert!(writer.flush(Duration::from_secs(10)));
        assert_eq!(store.state_get("r", "seen").unwrap(), Some(b"7".to_vec()));
    }
}
