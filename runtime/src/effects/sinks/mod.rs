//! Sinks: where records that rules emit go (`[sinks.<name>]`), each with a bounded queue of its
//! own and a delivery task, so a slow or broken destination never holds up a rule or another
//! sink. A rule may emit only to the sinks `[rules.grants.<rule>] sinks` names; anything else
//! is refused here and counted.

mod file;
mod http;
mod retention;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::{Notify, mpsc, watch};

use crate::config::{Config, RuleGrant, Sink};
use crate::logging::RateLimited;
use crate::metrics::{SinkLabels, metrics};

/// Every sink of the config, with what each rule is granted. Cheap to clone.
#[derive(Clone)]
pub struct Sinks {
    grants: Arc<BTreeMap<String, RuleGrant>>,
    queues: Arc<HashMap<String, mpsc::Sender<Vec<u8>>>>,
    /// Told on SIGHUP: file sinks reopen their files (logrotate moved them).
    reopen: Arc<Notify>,
    /// Set once the rules have stopped: sinks deliver what is queued and end.
    stop: Arc<watch::Sender<bool>>,
    refused_log: Arc<std::sync::Mutex<RateLimited>>,
    dropped_log: Arc<std::sync::Mutex<RateLimited>>,
    /// Name, kind and last delivery error of each sink, for `/status`.
    views: Arc<Vec<(String, &'static str, LastError)>>,
}

/// A sink's last delivery error, cleared when a delivery succeeds.
pub type LastError = Arc<std::sync::Mutex<Option<String>>>;

/// Why `rule` may not emit to `sink`, if it may not.
pub fn emit_refusal(
    grants: &BTreeMap<String, RuleGrant>,
    sinks: &BTreeMap<String, Sink>,
    rule: &str,
    sink: &str,
) -> Option<String> {
    refusal(grants, sinks.contains_key(sink), rule, sink)
}

/// The `sink` label of emits to a name no `[sinks.*]` has.
pub const UNKNOWN_SINK: &str = "(unknown)";

/// The one wording of a refused emit, for the daemon and for replay.
fn refusal(
    grants: &BTreeMap<String, RuleGrant>,
    exists: bool,
    rule: &str,
    sink: &str,
) -> Option<String> {
    if !exists {
        return Some(format!("there is no [sinks.{sink}]"));
    }
    let granted = grants
        .get(rule)
        .is_some_and(|g| g.sinks.iter().any(|s| s == sink));
    (!granted)
        .then(|| format!("sink `{sink}` is not granted to this rule (rules.grants.{rule}.sinks)"))
}

impl Sinks {
    /// Start a delivery task per sink; they end after [`Sinks::stop`], once what is queued is
    /// delivered.
    pub fn start(config: &Config) -> anyhow::Result<(Self, Vec<tokio::task::JoinHandle<()>>)> {
        let reopen = Arc::new(Notify::new());
        let (stop, stopped) = watch::channel(false);
        let mut queues = HashMap::new();
        let mut tasks = Vec::new();
        let mut views = Vec::new();
        for (name, sink) in &config.sinks {
            match sink {
                Sink::File(f) => {
                    views.push((name.clone(), "file", LastError::default()));
                    let (tx, rx) = mpsc::channel(f.queue);
                    queues.insert(name.clone(), tx);
                    tasks.push(tokio::spawn(file::deliver(
                        name.clone(),
                        f.path.clone(),
                        rx,
                        reopen.clone(),
                        stopped.clone(),
                    )));
                }
                Sink::Http(h) => {
                    let (tx, rx) = mpsc::channel(h.queue);
                    let kept = retention::Retention::open(
                        retention::dir(&config.daemon.state_dir, name),
                        h.retention_max_bytes,
                    )
                    .map_err(|e| anyhow::anyhow!("sinks.{name}: cannot open its retention: {e}"))?;
                    let last_error = LastError::default();
                    views.push((name.clone(), "http", last_error.clone()));
                    let deliverer =
                        http::Deliverer::new(name.clone(), h.clone(), kept, last_error)?;
                    queues.insert(name.clone(), tx);
                    tasks.push(tokio::spawn(deliverer.run(rx, stopped.clone())));
                }
            }
        }
        let sinks = Self {
            grants: Arc::new(config.rules.grants.clone()),
            queues: Arc::new(queues),
            reopen,
            stop: Arc::new(stop),
            refused_log: Arc::default(),
            dropped_log: Arc::default(),
            views: Arc::new(views),
        };
        Ok((sinks, tasks))
    }

    /// Queue `record` from `rule` for `sink`, or refuse it (not granted, no such sink) or drop
    /// it (the sink's queue is full); never waits.
    pub fn emit(&self, rule: &str, sink: &str, record: Vec<u8>) {
        let queue = self.queues.get(sink);
        if let Some(why) = refusal(&self.grants, queue.is_some(), rule, sink) {
            // A name no sink has is the rule's to choose: one label for all of them, or each
            // new name would be a new metric series.
            count(if queue.is_some() { sink } else { UNKNOWN_SINK }, "refused");
            if let Ok(mut log) = self.refused_log.lock() {
                log.log(|suppressed| tracing::warn!(rule, sink, suppressed, "emit refused: {why}"));
            }
            return;
        }
        let Some(queue) = queue else { return };
        match queue.try_send(record) {
            Ok(()) => count(sink, "queued"),
            Err(_) => {
                count(sink, "dropped");
                if let Ok(mut log) = self.dropped_log.lock() {
                    log.log(|suppressed| {
                        tracing::warn!(
                            rule,
                            sink,
                            suppressed,
                            "sink queue full: record dropped (the destination is slower than the rules)"
                        )
                    });
                }
            }
        }
    }

    /// Queue a record medic itself produces (`[history] forward`): no grant needed.
    pub fn forward(&self, sink: &str, record: Vec<u8>) {
        match self.queues.get(sink).map(|q| q.try_send(record)) {
            Some(Ok(())) => count(sink, "queued"),
            _ => count(sink, "dropped"),
        }
    }

    /// SIGHUP: file sinks reopen their files.
    pub fn reopen(&self) {
        self.reopen.notify_waiters();
    }

    /// Each sink's counts since medic started, for `/status`.
    pub fn view(&self) -> Vec<crate::effects::view::SinkView> {
        let m = metrics();
        let n = |sink: &str, outcome| {
            m.sink_records
                .get_or_create(&SinkLabels {
                    sink: sink.to_string(),
                    outcome,
                })
                .get()
        };
        self.views
            .iter()
            .map(|(name, kind, last_error)| crate::effects::view::SinkView {
                name: name.clone(),
                kind,
                queued: n(name, "queued"),
                delivered: n(name, "written") + n(name, "sent"),
                retained: n(name, "retained"),
                retried: n(name, "retried"),
                dropped: n(name, "dropped"),
                refused: n(name, "refused"),
                retained_bytes: m
                    .sink_retained_bytes
                    .get_or_create(&crate::metrics::SinkNameLabels { sink: name.clone() })
                    .get()
                    .max(0) as u64,
                last_error: last_error.lock().ok().and_then(|e| e.clone()),
            })
            .collect()
    }

    /// Shutdown, once no rule can emit any more: deliver what is queued, then end.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

fn count(sink: &str, outcome: &'static str) {
    count_n(sink, outcome, 1);
}

/// Bytes a sink keeps on disk, for `medic_sink_retained_bytes`.
fn set_retained(sink: &str, bytes: u64) {
    metrics()
        .sink_retained_bytes
        .get_or_create(&crate::metrics::SinkNameLabels {
            sink: sink.to_string(),
        })
        .set(bytes as i64);
}

fn count_n(sink: &str, outcome: &'static str, n: usize) {
    metrics()
        .sink_records
        .get_or_create(&SinkLabels {
            sink: sink.to_string(),
            outcome,
        })
        .inc_by(n as u64);
}
