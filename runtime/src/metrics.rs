//! The counters medic keeps about itself, in one process-wide registry: `GET /metrics` encodes
//! it for Prometheus and `GET /status` reads the same numbers, so the two never disagree.
//!
//! One registry for the process (rather than one threaded through every constructor) because
//! every layer counts something and none of them should depend on who reads it. Hot paths
//! (a datagram, a value list) take a [`SourceCounters`] once and then only add to atomics.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Which input a count is about: `source` is `network`, `putval`, `unixsock` or `mqtt`;
/// `listener` the address or socket path it came in on.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: &'static str,
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub source: &'static str,
    pub listener: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub listener: String,
    /// `kernel` or `handoff`.
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleKindLabels {
    pub rule: String,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    pub service: String,
    pub command: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandOutcomeLabels {
    pub service: String,
    pub command: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: String,
    /// `queued`, `written` (file), `sent` (http), `retained` (kept on disk), `retried`,
    /// `dropped` (queue full, write failed, refused for good by the destination, or over the
    /// retention bound), `refused` (not granted, or no such sink).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkNameLabels {
    pub sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SeverityLabels {
    pub rule: String,
    pub severity: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn rule_call_histogram() -> Histogram {
    // 10 µs … 2.6 s: a rule's batch takes microseconds; the deadline cuts it at seconds.
    Histogram::new(exponential_buckets(0.000_01, 4.0, 10))
}

/// Every metric medic exports. Field names follow the exported names without `medic_`.
pub struct Metrics {
    registry: Registry,
    pub values_received: Family<SourceLabels, Counter>,
    pub notifications_received: Family<SourceLabels, Counter>,
    pub ingest_refused: Family<RefusedLabels, Counter>,
    pub ingest_dropped: Family<SourceLabels, Counter>,
    pub network_datagrams: Family<ListenerLabels, Counter>,
    pub network_datagrams_dropped: Family<StageLabels, Counter>,
    pub unixsock_connected: Gauge,
    pub series: Gauge,
    pub series_refused: Family<ReasonLabels, Counter>,
    pub series_expired: Counter,
    pub rule_events: Family<RuleLabels, Counter>,
    pub rule_events_dropped: Family<RuleLabels, Counter>,
    pub rule_call_duration_seconds: HistogramFamily<RuleLabels>,
    pub rule_faults: Family<RuleKindLabels, Counter>,
    pub rule_reloads: Family<OutcomeLabels, Counter>,
    pub rule_notifications: Family<SeverityLabels, Counter>,
    pub commands: Family<CommandOutcomeLabels, Counter>,
    pub policy_refusals: Family<ReasonLabels, Counter>,
    pub breaker_open: Family<CommandLabels, Gauge>,
    pub command_queue_dropped: Counter,
    pub mqtt_connected: Gauge,
    pub mqtt_outbox_messages: Gauge,
    pub mqtt_messages_received: Counter,
    pub mqtt_messages_dropped: Counter,
    pub remote_commands: Family<CodeLabels, Counter>,
    pub history_dropped: Counter,
    pub history_write_failures: Counter,
    pub sink_records: Family<SinkLabels, Counter>,
    pub sink_retained_bytes: Family<SinkNameLabels, Gauge>,
    pub http_connections: Gauge,
    pub http_connections_refused: Counter,
    pub http_connections_closed: Family<ReasonLabels, Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("medic"),
            values_received: Family::default(),
            notifications_received: Family::default(),
            ingest_refused: Family::default(),
            ingest_dropped: Family::default(),
            network_datagrams: Family::default(),
            network_datagrams_dropped: Family::default(),
            unixsock_connected: Gauge::default(),
            series: Gauge::default(),
            series_refused: Family::default(),
            series_expired: Counter::default(),
            rule_events: Family::default(),
            rule_events_dropped: Family::default(),
            rule_call_duration_seconds: Family::new_with_constructor(rule_call_histogram),
            rule_faults: Family::default(),
            rule_reloads: Family::default(),
            rule_notifications: Family::default(),
            sink_records: Family::default(),
            sink_retained_bytes: Family::default(),
            commands: Family::default(),
            policy_refusals: Family::default(),
            breaker_open: Family::default(),
            command_queue_dropped: Counter::default(),
            mqtt_connected: Gauge::default(),
            mqtt_outbox_messages: Gauge::default(),
            mqtt_messages_received: Counter::default(),
            mqtt_messages_dropped: Counter::default(),
            remote_commands: Family::default(),
            history_dropped: Counter::default(),
            history_write_failures: Counter::default(),
            http_connections: Gauge::default(),
            http_connections_refused: Counter::default(),
            http_connections_closed: Family::default(),
        };
        let r = &mut m.registry;
        let build = Family::<Vec<(String, String)>, Gauge>::default();
        build
            .get_or_create(&vec![(
                "version".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            )])
            .set(1);
        r.register("build_info", "medic's version (always 1)", build);
        r.register(
            "values_received",
            "Value lists accepted, by source and listener",
            m.values_received.clone(),
        );
        r.register(
            "notifications_received",
            "collectd notifications accepted, by source and listener",
            m.notifications_received.clone(),
        );
        r.register(
            "ingest_refused",
            "Datagrams, lines or parts refused while decoding, by reason",
            m.ingest_refused.clone(),
        );
        r.register(
            "ingest_dropped",
            "Items lost because the engine queue was full",
            m.ingest_dropped.clone(),
        );
        r.register(
            "network_datagrams",
            "UDP datagrams read from each network listener",
            m.network_datagrams.clone(),
        );
        r.register(
            "network_datagrams_dropped",
            "UDP datagrams lost before decoding: in the kernel (the socket's receive buffer was \
             full) or at the handoff to the decoder (decoding fell behind)",
            m.network_datagrams_dropped.clone(),
        );
        r.register(
            "unixsock_connected",
            "1 while the unixsock poller is connected to collectd",
            m.unixsock_connected.clone(),
        );
        r.register("series", "Series in the table", m.series.clone());
        r.register(
            "series_refused",
            "Value lists refused by the series table, by reason",
            m.series_refused.clone(),
        );
        r.register(
            "series_expired",
            "Series forgotten after ingest.series_timeout intervals of silence",
            m.series_expired.clone(),
        );
        r.register(
            "rule_events",
            "Events handed to each rule",
            m.rule_events.clone(),
        );
        r.register(
            "rule_events_dropped",
            "Events a rule never saw (its queue full, or it was faulted)",
            m.rule_events_dropped.clone(),
        );
        r.register(
            "rule_call_duration_seconds",
            "Time inside a rule per batch",
            m.rule_call_duration_seconds.clone(),
        );
        r.register(
            "rule_faults",
            "Rule faults by kind (trap, deadline, memory, init, reload)",
            m.rule_faults.clone(),
        );
        r.register(
            "rule_reloads",
            "New rule builds taken (ok) or refused",
            m.rule_reloads.clone(),
        );
        r.register(
            "rule_notifications",
            "Notifications rules emitted, by severity",
            m.rule_notifications.clone(),
        );
        r.register(
            "sink_records",
            "Records rules emitted, by sink and outcome (queued, written, sent, retained, \
             retried, dropped, refused)",
            m.sink_records.clone(),
        );
        r.register(
            "sink_retained_bytes",
            "Bytes of batches an http sink keeps on disk while its destination is away",
            m.sink_retained_bytes.clone(),
        );
        r.register(
            "commands",
            "Command runs by outcome (succeeded, failed, timed_out, killed, error)",
            m.commands.clone(),
        );
        r.register(
            "policy_refusals",
            "Run requests the policy gate refused, by reason",
            m.policy_refusals.clone(),
        );
        r.register(
            "breaker_open",
            "1 while a command's circuit breaker is open",
            m.breaker_open.clone(),
        );
        r.register(
            "command_queue_dropped",
            "Run requests lost because the command queue was full",
            m.command_queue_dropped.clone(),
        );
        r.register(
            "mqtt_connected",
            "1 while connected to the MQTT broker",
            m.mqtt_connected.clone(),
        );
        r.register(
            "mqtt_outbox_messages",
            "Messages waiting in the persistent MQTT outbox",
            m.mqtt_outbox_messages.clone(),
        );
        r.register(
            "mqtt_messages_received",
            "MQTT messages handed to the rules",
            m.mqtt_messages_received.clone(),
        );
        r.register(
            "mqtt_messages_dropped",
            "MQTT messages for rules lost because the engine was busy",
            m.mqtt_messages_dropped.clone(),
        );
        r.register(
            "http_connections",
            "HTTP connections open now",
            m.http_connections.clone(),
        );
        r.register(
            "http_connections_refused",
            "HTTP connections closed at once because http.max_connections were open",
            m.http_connections_refused.clone(),
        );
        r.register(
            "http_connections_closed",
            "HTTP connections medic closed, by reason (header_timeout: the request head took \
             longer than http.header_timeout; idle: nothing sent or read for http.idle_timeout)",
            m.http_connections_closed.clone(),
        );
        r.register(
            "remote_commands",
            "Remote (MQTT) commands answered, by result code",
            m.remote_commands.clone(),
        );
        r.register(
            "history_dropped",
            "Audit records lost because the history queue was full",
            m.history_dropped.clone(),
        );
        r.register(
            "history_write_failures",
            "Audit history transactions that failed (database locked, disk full)",
            m.history_write_failures.clone(),
        );
        m
    }

    /// The Prometheus text exposition (OpenMetrics flavour, which Prometheus reads).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// The classic Prometheus text format (0.0.4), for scrapers and tools that do not ask for
    /// OpenMetrics (`promtool check metrics`, older Prometheus, curl): the same samples, with a
    /// counter's HELP and TYPE under its sample name (`…_total`) and no `# EOF`.
    pub fn encode_text(&self) -> String {
        let open = self.encode();
        let mut out = String::with_capacity(open.len());
        let mut help: Option<&str> = None;
        for line in open.lines() {
            if line == "# EOF" || line.starts_with("# UNIT ") {
                continue;
            }
            if line.starts_with("# HELP ") {
                // Held until its TYPE says whether the name takes `_total`.
                help = Some(line);
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
                let name = if kind == "counter" {
                    format!("{name}_total")
                } else {
                    name.to_string()
                };
                if let Some(h) = help.take() {
                    let text = h
                        .strip_prefix("# HELP ")
                        .and_then(|r| r.split_once(' '))
                        .map_or("", |(_, t)| t);
                    out.push_str(&format!("# HELP {name} {text}\n"));
                }
                out.push_str(&format!("# TYPE {name} {kind}\n"));
                continue;
            }
            if let Some(h) = help.take() {
                out.push_str(h);
                out.push('\n');
            }
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// Datagrams read on one network listener.
    pub fn network_datagrams(&self, listener: &str) -> Counter {
        let labels = ListenerLabels {
            listener: listener.into(),
        };
        self.network_datagrams.get_or_create(&labels).clone()
    }

    /// Datagrams of one network listener lost at `stage` (`kernel` or `handoff`).
    pub fn network_dropped(&self, listener: &str, stage: &'static str) -> Counter {
        let labels = StageLabels {
            listener: listener.into(),
            stage,
        };
        self.network_datagrams_dropped
            .get_or_create(&labels)
            .clone()
    }

    /// The counters of one input, taken once so every datagram or line only adds to atomics.
    pub fn source(&self, source: &'static str, listener: impl Into<String>) -> SourceCounters {
        let labels = SourceLabels {
            source,
            listener: listener.into(),
        };
        SourceCounters {
            values: self.values_received.get_or_create(&labels).clone(),
            notifications: self.notifications_received.get_or_create(&labels).clone(),
            dropped: self.ingest_dropped.get_or_create(&labels).clone(),
            labels,
        }
    }
}

/// One input's counters (cheap clones of the registered ones).
#[derive(Clone, Debug)]
pub struct SourceCounters {
    labels: SourceLabels,
    pub values: Counter,
    pub notifications: Counter,
    pub dropped: Counter,
}

impl SourceCounters {
    /// Count one refusal; `reason` is a short fixed label such as `malformed`.
    pub fn refused(&self, reason: &'static str) {
        metrics()
            .ingest_refused
            .get_or_create(&RefusedLabels {
                source: self.labels.source,
                listener: self.labels.listener.clone(),
                reason,
            })
            .inc();
    }

    /// Refusals so far, all reasons together and by reason (for `/status`).
    pub fn refusals(&self, reasons: &[&'static str]) -> Vec<(&'static str, u64)> {
        reasons
            .iter()
            .map(|&reason| {
                let n = metrics()
                    .ingest_refused
                    .get_or_create(&RefusedLabels {
                        source: self.labels.source,
                        listener: self.labels.listener.clone(),
                        reason,
                    })
                    .get();
                (reason, n)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    pub fn source(&self) -> &'static str {
        self.labels.source
    }

    pub fn listener(&self) -> &str {
        &self.labels.listener
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_appear_in_the_exposition_with_their_labels() {
        let c = metrics().source("network", "127.0.0.1:1");
        c.values.inc_by(3);
        c.refused("malformed");
        let text = metrics().encode();
        assert!(
            text.contains(
                "medic_values_received_total{source=\"network\",listener=\"127.0.0.1:1\"} 3"
            ),
            "{text}"
        );
        assert!(text.contains("reason=\"malformed\""), "{text}");
        assert!(text.contains("medic_build_info{version="), "{text}");
        assert_eq!(c.refusals(&["malformed", "other"]), vec![("malformed", 1)]);
        let classic = metrics().encode_text();
        assert!(
            classic.contains("# TYPE medic_values_received_total counter\n"),
            "{classic}"
        );
        assert!(classic.contains("# HELP medic_values_received_total Value lists"));
        assert!(classic.contains("# TYPE medic_series gauge\n"));
        assert!(!classic.contains("# EOF"));
    }
}
