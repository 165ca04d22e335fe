use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::runner::SeriesCache;
use crate::{
    Action, Emit, Host, LogLevel, Notify, NotifySource, Publish, Run, RunRemote, SeriesInfo,
    SetTimer, Severity, Snapshot,
};

/// A rule's handle on the world during one call: actions it decides on, its log, state, clock.
/// Actions are collected and handed to the host when the call returns; the host's policy gate
/// decides what actually runs.
pub struct Ctx<'a> {
    host: &'a mut dyn Host,
    series: &'a mut SeriesCache,
    actions: Vec<Action>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(host: &'a mut dyn Host, series: &'a mut SeriesCache) -> Self {
        Self {
            host,
            series,
            actions: Vec::new(),
        }
    }

    pub(crate) fn into_actions(self) -> Vec<Action> {
        self.actions
    }

    /// Ask the host to run a predefined command (`[services.<service>.commands.<command>]`).
    pub fn run(&mut self, service: &str, command: &str, reason: impl Into<String>) {
        self.actions.push(Action::Run(Run {
            service: service.into(),
            command: command.into(),
            reason: reason.into(),
        }));
    }

    /// Ask another medic node to run one of its predefined commands.
    pub fn run_remote(
        &mut self,
        node: &str,
        service: &str,
        command: &str,
        reason: impl Into<String>,
    ) {
        self.actions.push(Action::RunRemote(RunRemote {
            node: node.into(),
            service: service.into(),
            command: command.into(),
            reason: reason.into(),
        }));
    }

    pub fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        self.actions.push(Action::Publish(Publish {
            topic: topic.into(),
            payload: payload.into(),
            retain,
        }));
    }

    /// Hand a record (a line of Influx line protocol, a JSON object, a text line) to the sink
    /// `[sinks.<sink>]`; the host batches and delivers it, and keeps it on disk while the
    /// destination is away. The config must grant the sink to this rule
    /// (`[rules.grants.<rule>] sinks`), or the record is refused and counted.
    pub fn emit(&mut self, sink: &str, record: impl Into<Vec<u8>>) {
        self.actions.push(Action::Emit(Emit {
            sink: sink.into(),
            record: record.into(),
        }));
    }

    /// A notification for people, from plugin `medic` with the rule's name as plugin instance.
    pub fn notify(&mut self, severity: Severity, message: impl Into<String>) {
        self.actions.push(Action::Notify(Notify {
            severity,
            message: message.into(),
            source: None,
        }));
    }

    /// A notification that names where it comes from, for a rule standing in for a collectd
    /// plugin whose receivers match on its plugin and type (the host is always this node).
    pub fn notify_as(
        &mut self,
        source: NotifySource,
        severity: Severity,
        message: impl Into<String>,
    ) {
        self.actions.push(Action::Notify(Notify {
            severity,
            message: message.into(),
            source: Some(source),
        }));
    }

    /// Arm (or re-arm) a one-shot timer; `on_timer(name)` is called `after` from now.
    pub fn set_timer(&mut self, name: &str, after: Duration) {
        self.actions.push(Action::SetTimer(SetTimer {
            name: name.into(),
            after: after.as_nanos().min(u64::MAX as u128) as u64,
        }));
    }

    pub fn cancel_timer(&mut self, name: &str) {
        self.actions.push(Action::CancelTimer(name.into()));
    }

    pub fn log(&mut self, level: LogLevel, message: &str) {
        self.host.log(level, message);
    }
    pub fn debug(&mut self, message: &str) {
        self.log(LogLevel::Debug, message)
    }
    pub fn info(&mut self, message: &str) {
        self.log(LogLevel::Info, message)
    }
    pub fn warn(&mut self, message: &str) {
        self.log(LogLevel::Warn, message)
    }
    pub fn error(&mut self, message: &str) {
        self.log(LogLevel::Error, message)
    }

    /// The host's clock.
    pub fn now(&mut self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.host.now())
    }

    /// Read a typed value from the rule's persistent state. A value that no longer decodes into
    /// `T` (the rule changed its format) is logged and treated as absent.
    pub fn state<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        let bytes = self.host.state_get(key)?;
        match serde_json::from_slice(&bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                self.warn(&format!(
                    "state key `{key}` does not decode, ignoring it: {e}"
                ));
                None
            }
        }
    }

    pub fn set_state<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) {
        match serde_json::to_vec(value) {
            Ok(bytes) => self.host.state_set(key, &bytes),
            Err(e) => self.error(&format!("state key `{key}` does not encode: {e}")),
        }
    }

    pub fn delete_state(&mut self, key: &str) {
        self.host.state_delete(key);
    }

    /// Raw bytes, for rules that keep their own encoding.
    pub fn state_bytes(&mut self, key: &str) -> Option<Vec<u8>> {
        self.host.state_get(key)
    }

    pub fn set_state_bytes(&mut self, key: &str, value: &[u8]) {
        self.host.state_set(key, value);
    }

    /// The latest value list of any series (subscribed or not), by identifier string; its
    /// values are `snapshot.values()`.
    pub fn last_value(&mut self, identifier: &str) -> Option<Snapshot> {
        self.host.last_value(identifier)
    }

    /// What a series number stands for; asked of the host, then cached while it is in use.
    pub fn series(&mut self, id: u32) -> Option<Rc<SeriesInfo>> {
        if let Some(info) = self.series.get(id) {
            return Some(info);
        }
        match self.host.series(id) {
            Some(info) => Some(self.series.insert(id, info)),
            None => {
                self.host.log(
                    LogLevel::Warn,
                    &format!("host does not know series {id}; value skipped"),
                );
                None
            }
        }
    }
}
