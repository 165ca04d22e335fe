//! A rule's key/value state as its calls see it: written through to the store, except while
//! the store cannot take writes (another process holds the lock, the disk is full). Then
//! changes wait here, reads see them, and they are written once the store takes writes again:
//! a rule's call never spends its deadline waiting on the disk, and nothing it set is lost
//! while medic runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::Store;

/// After a failed write, how long calls use only the changes held here before trying again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

pub struct RuleState {
    rule: Arc<str>,
    store: Store,
    /// Changes not yet written: a value, or `None` for a deletion. Oldest write first per key
    /// does not matter: only the last change of a key is kept.
    unwritten: BTreeMap<String, Option<Vec<u8>>>,
    /// No write is tried before then.
    retry_at: Option<Instant>,
}

impl RuleState {
    pub fn new(rule: Arc<str>, store: Store) -> Self {
        Self {
            rule,
            store,
            unwritten: BTreeMap::new(),
            retry_at: None,
        }
    }

    pub fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.try_flush();
        if let Some(change) = self.unwritten.get(key) {
            return change.clone();
        }
        self.store.state_get(&self.rule, key).unwrap_or_else(|e| {
            self.store
                .report(&format!("rule {} cannot read its state", self.rule), &e);
            None
        })
    }

    pub fn set(&mut self, key: String, value: Option<Vec<u8>>) {
        self.unwritten.insert(key, value);
        self.try_flush();
    }

    /// Write what is held, unless a recent failure says to wait. Returns whether all is
    /// written.
    pub fn try_flush(&mut self) -> bool {
        if self.unwritten.is_empty() {
            return true;
        }
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return false;
        }
        while let Some((key, change)) = self.unwritten.pop_first() {
            let written = match &change {
                Some(value) => self.store.state_set(&self.rule, &key, value),
                None => self.store.state_delete(&self.rule, &key),
            };
            if let Err(e) = written {
                self.unwritten.insert(key, change);
                self.retry_at = Some(Instant::now() + RETRY_EVERY);
                self.store.report(
                    &format!("rule {} cannot write its state (kept, retried)", self.rule),
                    &e,
                );
                return false;
            }
        }
        self.retry_at = None;
        true
    }
}

impl Drop for RuleState {
    /// The instance goes (reload, fault, stop): a last try for what is still held.
    fn drop(&mut self) {
        self.retry_at = None;
        if !self.try_flush() {
            tracing::error!(
                rule = &*self.rule,
                keys = self.unwritten.len(),
                "rule state changes lost: the state database took no writes"
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
        let mut state = RuleState::new(Arc::from("r"), store.clone());
        state.set("a".into(), Some(b"1".to_vec()));
        assert_eq!(state.get("a"), Some(b"1".to_vec()));
        assert_eq!(store.state_get("r", "a").unwrap(), Some(b"1".to_vec()));
        state.set("a".into(), None);
        assert_eq!(state.get("a"), None);
        assert_eq!(store.state_get("r", "a").unwrap(), None);
    }
}
