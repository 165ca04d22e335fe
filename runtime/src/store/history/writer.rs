//! The store's one writer thread: audit entries, and the latest policy and rule state of each
//! key, written in transactions of its own, never on a caller's path. [`History`] is its
//! handle: nothing it does waits on the database. A full queue drops an entry (counted and
//! logged); a transaction that fails (another process holds the lock, the disk is full) is
//! retried every second with what came meanwhile, so a passing problem loses nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use super::{Entry, Forward, Retention};
use crate::logging::Dropped;
use crate::metrics::metrics;
use crate::store::Store;

/// Entries waiting for the writer; past it new ones are dropped and counted.
const QUEUE: usize = 10_000;
/// Entries written in one transaction at most.
const PER_TRANSACTION: usize = 512;
/// How often a failed write is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How often retention runs.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

enum Msg {
    Entry(Entry),
    /// A command's policy state (the gate's serialization): only the latest of each command
    /// is written.
    Policy(PolicyState),
    /// A rule's state under one key (`None`: deleted): only the latest of each key is written.
    RuleState {
        rule: Arc<str>,
        key: String,
        value: Option<Vec<u8>>,
    },
    /// Answered once everything queued before it is written.
    Flush(SyncSender<()>),
}

/// One command's cooldown, rate-limit and breaker state, to keep across restarts.
struct PolicyState {
    service: String,
    command: String,
    state: Vec<u8>,
}

/// Keyed state waiting to be written, only the latest of each key: the commands' policy states,
/// and the rules' state (a value, or `None` for a deletion).
#[derive(Default)]
pub(super) struct Coalesced {
    pub(super) policy: BTreeMap<(String, String), Vec<u8>>,
    pub(super) rule_state: BTreeMap<(Arc<str>, String), Option<Vec<u8>>>,
}

impl Coalesced {
    fn is_empty(&self) -> bool {
        self.policy.is_empty() && self.rule_state.is_empty()
    }

    fn clear(&mut self) {
        self.policy.clear();
        self.rule_state.clear();
    }
}

/// Records entries without waiting. Cheap to clone.
#[derive(Clone)]
pub struct History {
    tx: SyncSender<Msg>,
    dropped: Arc<Dropped>,
    forward: Option<Forward>,
}

impl History {
    /// Start the writer thread on `store`. It ends when every `History` is gone, after writing
    /// what was queued.
    pub fn start(store: Store, retention: Retention) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("history".into())
            .spawn(move || write_all(&store, rx, retention))?;
        Ok(Self {
            tx,
            dropped: Arc::new(Dropped::new(Duration::from_secs(60))),
            forward: None,
        })
    }

    /// Also hand every entry to `forward` as it is recorded.
    pub fn forwarding(mut self, forward: Forward) -> Self {
        self.forward = Some(forward);
        self
    }

    pub fn record(&self, entry: Entry) {
        if let Some(forward) = &self.forward {
            forward(&entry);
        }
        match self.tx.try_send(Msg::Entry(entry)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                metrics().history_dropped.inc();
                self.dropped.count(|total, suppressed| {
                    tracing::warn!(
                        total_dropped = total,
                        suppressed,
                        "history queue full: an audit entry was dropped (the database is \
                         slower than the decisions)"
                    )
                })
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Keep a command's policy state, written by this writer thread (never on the caller's
    /// path: the executor admits a run without a database call). States queued for the same
    /// command are coalesced: only the latest is written.
    pub fn keep_policy(&self, service: &str, command: &str, state: Vec<u8>) {
        let msg = Msg::Policy(PolicyState {
            service: service.into(),
            command: command.into(),
            state,
        });
        if let Err(TrySendError::Full(_)) = self.tx.try_send(msg) {
            metrics().history_dropped.inc();
            self.dropped.count(|total, suppressed| {
                tracing::warn!(
                    total_dropped = total,
                    suppressed,
                    "history queue full: a command's policy state was not kept (the database \
                     is slower than the decisions; the next run's state will be)"
                )
            })
        }
    }

    /// Keep a rule's state under `key` (`None`: delete it), written by this writer thread, so
    /// a rule's call never waits on the database. Changes to one key are coalesced. Returns the
    /// change when the queue is full: the caller keeps it and hands it again later.
    pub fn keep_rule_state(
        &self,
        rule: &Arc<str>,
        key: String,
        value: Option<Vec<u8>>,
    ) -> Result<(), (String, Option<Vec<u8>>)> {
        let msg = Msg::RuleState {
            rule: rule.clone(),
            key,
            value,
        };
        match self.tx.try_send(msg) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => Ok(()),
            Err(TrySendError::Full(Msg::RuleState { key, value, .. })) => Err((key, value)),
            Err(TrySendError::Full(_)) => unreachable!("the message sent is a rule state"),
        }
    }

    /// Entries dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.total()
    }

    /// Wait (up to `timeout`) until what was recorded so far is written: at shutdown, the
    /// outcomes of the last commands must not be lost with the process.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        let deadline = Instant::now() + timeout;
        let mut msg = Msg::Flush(done);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    msg = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return false,
            }
        }
        wait.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

fn write_all(store: &Store, rx: Receiver<Msg>, retention: Retention) {
    let mut last_prune = Instant::now();
    store.history_prune(retention);
    // Entries a failed transaction left behind (database locked, disk full): retried, in order,
    // before anything newer; flushes wait for them.
    let mut pending: Vec<Entry> = Vec::new();
    let mut policy = Coalesced::default();
    let mut flushed: Vec<SyncSender<()>> = Vec::new();
    loop {
        let first = if pending.is_empty() && policy.is_empty() {
            match rx.recv() {
                Ok(msg) => Some(msg),
                Err(_) => return,
            }
        } else {
            match rx.recv_timeout(RETRY_EVERY) {
                Ok(msg) => Some(msg),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    // Everyone is gone: one last try, then what is left is lost (and said).
                    if let Err(e) = store.history_write(&pending, &policy) {
                        lost(store, pending.len(), &e);
                    }
                    return;
                }
            }
        };
        for msg in first
            .into_iter()
            .chain(rx.try_iter().take(PER_TRANSACTION - 1))
        {
            match msg {
                Msg::Entry(e) => pending.push(e),
                Msg::Policy(p) => {
                    policy.policy.insert((p.service, p.command), p.state);
                }
                Msg::RuleState { rule, key, value } => {
                    policy.rule_state.insert((rule, key), value);
                }
                Msg::Flush(done) => flushed.push(done),
            }
        }
        if !pending.is_empty() || !policy.is_empty() {
            match store.history_write(&pending, &policy) {
                Ok(()) => {
                    pending.clear();
                    policy.clear();
                }
                Err(e) => {
                    metrics().history_write_failures.inc();
                    store.report(
                        "audit history cannot be written, nor rule and policy state (kept, \
                         retried every second)",
                        &e,
                    );
                    if pending.len() > QUEUE {
                        let excess = pending.len() - QUEUE;
                        pending.drain(..excess);
                        lost(store, excess, &e);
                    }
                }
            }
        }
        if pending.is_empty() && policy.is_empty() {
            for done in flushed.drain(..) {
                let _ = done.send(());
            }
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            store.history_prune(retention);
        }
    }
}

/// `n` entries could not be kept: counted as dropped.
fn lost(store: &Store, n: usize, e: &rusqlite::Error) {
    metrics().history_dropped.inc_by(n as u64);
    store.report(
        &format!("{n} audit entries are lost (the history could not be written)"),
        e,
    );
}
