//! The one event model every part of medic shares: what sources produce (value lists,
//! notifications, MQTT messages), what the engine consumes, and what comes back from an effect
//! (command results), with the clock they are stamped by.
//!
//! A crate of its own, so the compiler keeps its invariant: it imports nothing of medic
//! (collectd's model comes from `collectd_codec`, which knows nothing of medic either). It sits
//! at the bottom of the house, so any layer may use it and it can never be part of an import
//! circle. The runtime re-exports it as `medic::event`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use collectd_codec::text::LatestValues;
/// collectd's model (identifiers, value lists, notifications, limits), as its codecs give it.
pub use collectd_codec::{
    DsType, Identifier, MAX_MESSAGE_LEN, MAX_NAME_LEN, MAX_VALUES, Notification, Sample, Severity,
    ValueList, secs_to_ns,
};

/// Where a rule's notification says it comes from, when the rule names it (it stands in for a
/// collectd plugin); otherwise plugin `medic`, plugin instance the rule. The host is always
/// this node. Parts longer than collectd allows are cut where they are written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NotifySource {
    pub plugin: String,
    pub plugin_instance: String,
    pub type_: String,
    pub type_instance: String,
}

impl fmt::Display for NotifySource {
    /// `plugin[-instance]/type[-instance]`, collectd's identifier without the host.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let part = |f: &mut fmt::Formatter<'_>, name: &str, instance: &str| {
            f.write_str(name)?;
            if !instance.is_empty() {
                write!(f, "-{instance}")?;
            }
            Ok(())
        };
        part(f, &self.plugin, &self.plugin_instance)?;
        f.write_str("/")?;
        part(f, &self.type_, &self.type_instance)
    }
}

/// A message on an MQTT topic some rule subscribed to.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttMessage {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// What an ingest source hands to the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Ingested {
    Values(ValueList),
    Notification(Notification),
    Mqtt(MqttMessage),
}

impl From<collectd_codec::Record> for Ingested {
    fn from(record: collectd_codec::Record) -> Self {
        match record {
            collectd_codec::Record::Values(v) => Ingested::Values(v),
            collectd_codec::Record::Notification(n) => Ingested::Notification(n),
        }
    }
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Action ids: unique across restarts without persistence, by starting from the clock. Every
/// decision (a rule's `run`, a remote command) gets one; its result carries it back.
pub fn next_action_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let _ = NEXT.compare_exchange(0, now_ns() / 1_000, Ordering::Relaxed, Ordering::Relaxed);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Why the policy gate refused to run a command (it never started).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("no services are configured")]
    NoServices,
    #[error("unknown service `{0}`")]
    UnknownService(String),
    #[error("service `{service}` has no command `{command}`")]
    UnknownCommand { service: String, command: String },
    #[error("`{service}`/`{command}` is already running ({running} of {limit} allowed at once)")]
    AlreadyRunning {
        service: String,
        command: String,
        running: usize,
        limit: usize,
    },
    #[error("`{service}`/`{command}` is cooling down for another {remaining:?}")]
    CoolingDown {
        service: String,
        command: String,
        remaining: Duration,
    },
    #[error("rate limit: `{service}`/`{command}` started {count} times within {within:?}")]
    RateLimited {
        service: String,
        command: String,
        count: usize,
        within: Duration,
    },
    #[error(
        "circuit open: `{service}`/`{command}` failed too often; refused for another {remaining:?}"
    )]
    CircuitOpen {
        service: String,
        command: String,
        remaining: Duration,
    },
    #[error(
        "circuit open: a trial run of `{service}`/`{command}` is deciding whether it works again"
    )]
    CircuitTrial { service: String, command: String },
    #[error("{running} commands are running, policy.max_concurrent allows no more")]
    TooManyRunning { running: usize },
    #[error("medic is stopping")]
    Stopping,
}

impl Refusal {
    /// A short fixed label for `medic_policy_refusals_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NoServices => "no_services",
            Refusal::UnknownService(_) => "unknown_service",
            Refusal::UnknownCommand { .. } => "unknown_command",
            Refusal::AlreadyRunning { .. } => "already_running",
            Refusal::CoolingDown { .. } => "cooldown",
            Refusal::RateLimited { .. } => "rate_limit",
            Refusal::CircuitOpen { .. } | Refusal::CircuitTrial { .. } => "circuit_open",
            Refusal::TooManyRunning { .. } => "max_concurrent",
            Refusal::Stopping => "stopping",
        }
    }
}

/// What one run of a command produced (the executor's runner, or what a remote node answered).
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub output: String,
    /// Why it did not run or did not finish normally (refused, timed out, failed to start).
    pub error: Option<String>,
    /// It ran past its timeout and was killed.
    pub timed_out: bool,
    /// Killed because medic was stopping.
    pub interrupted: bool,
    pub duration: Duration,
}

impl RunResult {
    /// A run that never started, and why.
    pub fn not_run(error: String) -> Self {
        Self {
            code: None,
            signal: None,
            output: String::new(),
            error: Some(error),
            timed_out: false,
            interrupted: false,
            duration: Duration::ZERO,
        }
    }
}

/// What happened to one request to run a command, wherever it ran (here or on another node):
/// the request's identity, the gate's refusal if any, and the run.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandResult {
    pub action_id: u64,
    pub service: String,
    pub command: String,
    /// Set when the policy gate refused it (it never ran).
    pub refusal: Option<Refusal>,
    pub run: RunResult,
}

impl CommandResult {
    /// A result for a command that never ran.
    pub fn error(action_id: u64, service: String, command: String, error: String) -> Self {
        Self {
            action_id,
            service,
            command,
            refusal: None,
            run: RunResult::not_run(error),
        }
    }
}

/// Where a command's result goes: back to whoever asked (a rule's worker, an MQTT sender).
/// Answered exactly once, by construction: [`ReplyTo::send`] consumes it, and one dropped
/// unanswered (a request lost with a queue or a task) answers with an error saying so, so an
/// asker never waits on a request that no longer exists.
pub struct ReplyTo {
    to: Option<Box<dyn FnOnce(CommandResult) + Send>>,
    action_id: u64,
    service: String,
    command: String,
}

/// What an asker hears when its request was dropped unanswered.
pub const DROPPED: &str = "the request was dropped before it was answered (medic stopping?)";

impl ReplyTo {
    /// The reply to request `action_id` for `service`/`command`, carried out by `to`.
    pub fn new(
        action_id: u64,
        service: &str,
        command: &str,
        to: impl FnOnce(CommandResult) + Send + 'static,
    ) -> Self {
        Self {
            to: Some(Box::new(to)),
            action_id,
            service: service.into(),
            command: command.into(),
        }
    }

    pub fn send(mut self, result: CommandResult) {
        if let Some(to) = self.to.take() {
            to(result);
        }
    }

    /// Leave the request unanswered on purpose: for a run that is only recorded, never carried
    /// out (`medic replay` without `--assume-exit`), so no result exists to give.
    pub fn withhold(mut self) {
        self.to = None;
    }
}

impl Drop for ReplyTo {
    fn drop(&mut self) {
        if let Some(to) = self.to.take() {
            to(CommandResult::error(
                self.action_id,
                std::mem::take(&mut self.service),
                std::mem::take(&mut self.command),
                DROPPED.into(),
            ));
        }
    }
}

impl fmt::Debug for ReplyTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyTo")
            .field("action_id", &self.action_id)
            .field("answered", &self.to.is_none())
            .finish()
    }
}

/// A request to replace the local collectd's config (lua-collectd-monitor's send-config), or to
/// finish one that a previous medic process left in progress.
pub struct ConfigRequest {
    /// `mqtt:<task id>`.
    pub origin: Arc<str>,
    pub action_id: u64,
    /// The task's dedupe key: the replacement's progress is kept under it.
    pub task: String,
    /// The new config; `None` to finish the replacement recorded under `task`.
    pub config: Option<String>,
    /// The reply: lua-collectd-monitor's code and message.
    pub reply: Box<dyn FnOnce(i64, String) + Send>,
}

/// A request to run one allow-listed command, from a rule or a remote sender alike.
pub struct CommandRequest {
    /// Who asked: a rule name, or `mqtt:<task id>` for a remote command.
    pub origin: Arc<str>,
    /// SHA-256 of the asking rule's build (none for a remote command): the audit history names
    /// exactly which code decided.
    pub build: Option<Arc<str>>,
    /// Number of this decision in logs and the audit trail.
    pub action_id: u64,
    pub service: String,
    pub command: String,
    pub reason: String,
    pub reply: ReplyTo,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_dropped_unanswered_answers_that_it_was_dropped_and_a_sent_one_only_once() {
        let (tx, rx) = std::sync::mpsc::channel();
        let answer = tx.clone();
        drop(ReplyTo::new(7, "web", "restart", move |r| {
            answer.send(r).unwrap()
        }));
        let dropped = rx.try_recv().unwrap();
        assert_eq!(
            (
                dropped.action_id,
                dropped.service.as_str(),
                dropped.command.as_str()
            ),
            (7, "web", "restart")
        );
        assert_eq!(dropped.run.error.as_deref(), Some(DROPPED));

        let answer = tx.clone();
        let reply = ReplyTo::new(8, "web", "restart", move |r| answer.send(r).unwrap());
        let mut ok = CommandResult::error(8, "web".into(), "restart".into(), String::new());
        ok.run.error = None;
        ok.run.code = Some(0);
        reply.send(ok);
        assert_eq!(rx.try_recv().unwrap().run.code, Some(0));
        assert!(rx.try_recv().is_err(), "answered once, not again on drop");
    }
}
