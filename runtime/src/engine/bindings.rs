//! Host side of the WIT contract, generated from the same file as the SDK, and the one place
//! where the event model (`crate::event`) is converted to and from the WIT types.

use crate::event;

wasmtime::component::bindgen!({
    path: "../rules-sdk/wit",
    world: "rule-v0",
});

pub use self::medic::rules::types::{
    Action, Batch, CommandResult, Event, Identifier, LogLevel, MqttMessage, Notification,
    NotifySource, PlacedEvent, RuleInfo, Sample, SeriesInfo, Severity, Snapshot, Value, ValueList,
};

impl From<&event::Identifier> for Identifier {
    fn from(id: &event::Identifier) -> Self {
        Identifier {
            host: id.host.clone(),
            plugin: id.plugin.clone(),
            plugin_instance: id.plugin_instance.clone(),
            type_: id.type_.clone(),
            type_instance: id.type_instance.clone(),
        }
    }
}

impl From<Sample> for event::Sample {
    fn from(s: Sample) -> Self {
        match s {
            Sample::Gauge(v) => event::Sample::Gauge(v),
            Sample::Derive(v) => event::Sample::Derive(v),
            Sample::Counter(v) => event::Sample::Counter(v),
            Sample::Absolute(v) => event::Sample::Absolute(v),
        }
    }
}

impl From<event::Sample> for Sample {
    fn from(s: event::Sample) -> Self {
        match s {
            event::Sample::Gauge(v) => Sample::Gauge(v),
            event::Sample::Derive(v) => Sample::Derive(v),
            event::Sample::Counter(v) => Sample::Counter(v),
            event::Sample::Absolute(v) => Sample::Absolute(v),
        }
    }
}

impl From<event::Severity> for Severity {
    fn from(s: event::Severity) -> Self {
        match s {
            event::Severity::Failure => Severity::Failure,
            event::Severity::Warning => Severity::Warning,
            event::Severity::Okay => Severity::Okay,
        }
    }
}

impl From<Severity> for event::Severity {
    fn from(s: Severity) -> Self {
        match s {
            Severity::Failure => event::Severity::Failure,
            Severity::Warning => event::Severity::Warning,
            Severity::Okay => event::Severity::Okay,
        }
    }
}

/// A source the rule named; one without a plugin says nothing, so the default stands.
pub fn notify_source(s: NotifySource) -> Option<event::NotifySource> {
    (!s.plugin.is_empty()).then_some(event::NotifySource {
        plugin: s.plugin,
        plugin_instance: s.plugin_instance,
        type_: s.type_,
        type_instance: s.type_instance,
    })
}

impl From<event::Notification> for Event {
    fn from(n: event::Notification) -> Self {
        Event::Notification(Notification {
            severity: n.severity.into(),
            time: n.time,
            identifier: (&n.identifier).into(),
            message: n.message,
        })
    }
}

impl From<event::MqttMessage> for Event {
    fn from(m: event::MqttMessage) -> Self {
        Event::Mqtt(MqttMessage {
            topic: m.topic,
            payload: m.payload,
        })
    }
}

impl From<event::CommandResult> for Event {
    fn from(r: event::CommandResult) -> Self {
        Event::CommandResult(CommandResult {
            action_id: r.action_id,
            service: r.service,
            command: r.command,
            code: r.run.code,
            signal: r.run.signal,
            output: r.run.output,
            error: r.run.error,
            duration: r.run.duration.as_nanos() as u64,
        })
    }
}
