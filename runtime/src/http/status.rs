//! `GET /status`: what medic is doing now, as JSON (the page and `medic status` show the same).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::{Shared, rfc3339, since_epoch};
use crate::effects::view::{CommandView, SinkView};
use crate::engine::status::Health;
use crate::metrics::metrics;
use crate::shutdown::Shutdown;

/// How often values per second are sampled.
const RATES_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize)]
pub struct Status {
    pub version: &'static str,
    pub node: String,
    pub started: String,
    pub uptime_s: u64,
    pub rules: Vec<Rule>,
    pub sources: Vec<Source>,
    pub mqtt: Option<Mqtt>,
    pub commands: Vec<CommandView>,
    pub sinks: Vec<SinkView>,
    pub series: i64,
    pub history: HistoryHealth,
}

#[derive(Debug, Serialize)]
pub struct Rule {
    pub name: String,
    pub file: String,
    pub version: String,
    /// SHA-256 of the serving build.
    pub build: String,
    /// `serving` or `faulted`.
    pub state: &'static str,
    /// Why it faulted, and when it is tried again.
    pub error: Option<String>,
    pub retry_in_ms: Option<u64>,
    /// The last new build that was refused (the old one kept serving).
    pub last_load_error: Option<String>,
    pub loaded: String,
    pub batches: u64,
    pub events: u64,
    pub dropped: u64,
    pub last_call_us: u64,
}

#[derive(Debug, Serialize)]
pub struct Source {
    pub kind: &'static str,
    pub listener: String,
    pub values: u64,
    pub notifications: u64,
    /// Values and notifications per second over the last few seconds.
    pub per_second: f64,
    /// Lost because the engine queue was full.
    pub dropped: u64,
    pub refused: BTreeMap<&'static str, u64>,
    /// For the unixsock poller: connected to collectd.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct Mqtt {
    pub broker: String,
    pub connected: bool,
    /// Messages waiting in the persistent outbox (none when it cannot be read).
    pub outbox: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct HistoryHealth {
    /// Audit records lost (queue full, or a write that failed).
    pub dropped: u64,
    pub write_failures: u64,
}

/// Values per second per listener, from samples a few seconds apart.
#[derive(Default)]
pub struct Rates {
    last: HashMap<String, (Instant, u64)>,
    per_second: HashMap<String, f64>,
}

impl Rates {
    fn sample(&mut self, listener: &str, total: u64, now: Instant) {
        if let Some((at, before)) = self.last.get(listener) {
            let secs = now.saturating_duration_since(*at).as_secs_f64();
            if secs > 0.0 {
                let rate = total.saturating_sub(*before) as f64 / secs;
                self.per_second.insert(listener.to_string(), rate);
            }
        }
        self.last.insert(listener.to_string(), (now, total));
    }
}

/// Sample every source's totals until shutdown.
pub(super) async fn sample_rates(app: Shared, mut shutdown: Shutdown) {
    let mut every = tokio::time::interval(RATES_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.wait() => return,
        }
        let now = Instant::now();
        let mut rates = app.rates.lock().unwrap_or_else(|p| p.into_inner());
        for s in &app.parts.sources {
            let c = metrics().source(s.kind, s.listener.clone());
            rates.sample(&s.listener, c.values.get() + c.notifications.get(), now);
        }
    }
}

pub(super) async fn status(State(app): State<Shared>) -> Json<Status> {
    let store = app.parts.store.clone();
    let outbox = match app.parts.mqtt_broker {
        Some(_) => tokio::task::spawn_blocking(move || store.outbox_len().ok())
            .await
            .ok()
            .flatten(),
        None => None,
    };
    Json(build(&app, outbox))
}

/// The status now; `outbox` is read by the caller (it touches the database).
pub(super) fn build(app: &super::App, outbox: Option<usize>) -> Status {
    let parts = &app.parts;
    let m = metrics();
    let rules = parts
        .board
        .snapshot()
        .into_iter()
        .map(|(name, r)| {
            let (state, error, retry_in_ms) = match r.health {
                Health::Running => ("serving", None, None),
                Health::Faulted { reason, retry_in } => {
                    ("faulted", Some(reason), Some(retry_in.as_millis() as u64))
                }
            };
            Rule {
                name,
                file: r.file.display().to_string(),
                version: r.version,
                build: r.hash,
                state,
                error,
                retry_in_ms,
                last_load_error: r.last_load_error,
                loaded: rfc3339(since_epoch(r.loaded_at).as_nanos() as u64),
                batches: r.batches,
                events: r.events,
                dropped: r.dropped,
                last_call_us: r.last_call.as_micros() as u64,
            }
        })
        .collect();
    let rates = app.rates.lock().unwrap_or_else(|p| p.into_inner());
    let sources = parts
        .sources
        .iter()
        .map(|s| {
            let c = m.source(s.kind, s.listener.clone());
            Source {
                kind: s.kind,
                listener: s.listener.clone(),
                values: c.values.get(),
                notifications: c.notifications.get(),
                per_second: rates.per_second.get(&s.listener).copied().unwrap_or(0.0),
                dropped: c.dropped.get(),
                refused: c.refusals(s.reasons).into_iter().collect(),
                connected: (s.kind == "unixsock").then(|| m.unixsock_connected.get() == 1),
            }
        })
        .collect();
    drop(rates);
    let mqtt = parts.mqtt_broker.as_ref().map(|broker| Mqtt {
        broker: broker.clone(),
        connected: m.mqtt_connected.get() == 1,
        outbox,
    });
    Status {
        version: env!("CARGO_PKG_VERSION"),
        node: parts.node.clone(),
        started: rfc3339(since_epoch(app.started).as_nanos() as u64),
        uptime_s: app.since.elapsed().as_secs(),
        rules,
        sources,
        mqtt,
        commands: (parts.commands)(),
        sinks: (parts.sinks)(),
        series: m.series.get(),
        history: HistoryHealth {
            dropped: m.history_dropped.get(),
            write_failures: m.history_write_failures.get(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_two_samples() {
        let mut rates = Rates::default();
        let t0 = Instant::now();
        rates.sample("a", 100, t0);
        assert!(rates.per_second.is_empty());
        rates.sample("a", 600, t0 + Duration::from_secs(5));
        assert_eq!(rates.per_second["a"], 100.0);
    }
}
