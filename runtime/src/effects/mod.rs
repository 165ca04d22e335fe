//! Effects: what decisions become, after the policy gate. `Effects` implements the engine's
//! port: `run` goes to the gate and executor, `publish` and `run-remote` to MQTT, `notify` to
//! the log. Remote commands from MQTT reach the same executor through [`Effects::run`].
//!
//! Invariant: effects import the engine only for its port; no source imports an effect.

pub mod collectd;
pub mod executor;
pub mod mqtt;
pub mod policy;
mod presence;
mod remote;
pub mod replace_config;
pub mod sinks;
pub mod view;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::RuleGrant;
use crate::engine::port::{Decision, EffectPort};
use crate::event::{CommandRequest, NotifySource, Severity};
use crate::logging::{Dropped, RateLimited};
use crate::metrics::{SeverityLabels, metrics};
use crate::store::history::{Entry, History};

/// Command requests waiting for the policy gate at most.
pub const COMMAND_QUEUE: usize = 1024;

/// Where every kind of decision goes. Cheap to clone.
#[derive(Clone)]
pub struct Effects {
    /// Bounded ([`COMMAND_QUEUE`]): a rule asking thousands of times a second is refused, never
    /// grows memory.
    commands: mpsc::Sender<CommandRequest>,
    /// `None` when this node has no `[mqtt]` section.
    mqtt: Option<mqtt::Outbound>,
    /// Where notifications are recorded (none in `medic check`).
    history: Option<History>,
    /// `[notify] collectd_socket`: notifications handed to a local collectd.
    collectd: Option<collectd::CollectdNotify>,
    /// Requests refused because too many were waiting.
    overflow: Arc<Dropped>,
    /// Where emitted records go (`[sinks]`); empty when there are none.
    sinks: sinks::Sinks,
    /// `[rules.grants]`: which rule may name which plugin as its notifications' source.
    grants: Arc<BTreeMap<String, RuleGrant>>,
    /// Notifications whose source was not granted, logged at most once a minute.
    ungranted_sources: Arc<std::sync::Mutex<RateLimited>>,
}

/// What [`Effects::new`] is made of; MQTT comes later ([`Effects::with_mqtt`]), once the
/// session, which needs the effects for remote commands, has started.
pub struct Parts {
    /// The executor's queue ([`COMMAND_QUEUE`] long).
    pub commands: mpsc::Sender<CommandRequest>,
    pub history: Option<History>,
    pub collectd: Option<collectd::CollectdNotify>,
    pub sinks: sinks::Sinks,
    /// `[rules.grants]`.
    pub grants: BTreeMap<String, RuleGrant>,
}

/// Why `rule` may not say its notification comes from `source`, if it may not.
pub fn notify_source_refusal(
    grants: &BTreeMap<String, RuleGrant>,
    rule: &str,
    source: &NotifySource,
) -> Option<String> {
    let granted = grants
        .get(rule)
        .is_some_and(|g| g.notify_as.contains(&source.plugin));
    (!granted).then(|| {
        format!(
            "plugin `{}` is not granted to this rule as a notification source \
             (rules.grants.{rule}.notify_as): sent as plugin medic",
            source.plugin
        )
    })
}

impl Effects {
    pub fn new(parts: Parts) -> Self {
        Self {
            commands: parts.commands,
            mqtt: None,
            history: parts.history,
            collectd: parts.collectd,
            overflow: Arc::new(Dropped::new(std::time::Duration::from_secs(10))),
            sinks: parts.sinks,
            grants: Arc::new(parts.grants),
            ungranted_sources: Arc::new(std::sync::Mutex::new(RateLimited::new(
                std::time::Duration::from_secs(60),
            ))),
        }
    }

    /// Publish, `run-remote` and notifications over MQTT through `outbound`.
    pub fn with_mqtt(&mut self, outbound: mqtt::Outbound) {
        self.mqtt = Some(outbound);
    }

    /// The executor's queue, for the sources that ask for commands themselves (probes).
    pub fn commands(&self) -> &mpsc::Sender<CommandRequest> {
        &self.commands
    }

    pub fn mqtt(&self) -> Option<&mqtt::Outbound> {
        self.mqtt.as_ref()
    }

    pub fn history(&self) -> Option<&History> {
        self.history.as_ref()
    }

    pub fn sinks(&self) -> &sinks::Sinks {
        &self.sinks
    }

    /// The engine's port, backed by these effects.
    pub fn port(self) -> EffectPort {
        Arc::new(move |decision| self.carry_out(decision))
    }

    /// Hand a run request to the policy gate and executor; refused at once when too many wait.
    pub fn run(&self, request: CommandRequest) {
        let (request, why) = match self.commands.try_send(request) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(request)) => {
                let why = format!(
                    "too many command requests waiting ({COMMAND_QUEUE}): refused, not queued"
                );
                metrics().command_queue_dropped.inc();
                self.overflow.count(|total, suppressed| {
                    tracing::warn!(
                        origin = &*request.origin,
                        service = request.service,
                        command = request.command,
                        total_refused = total,
                        suppressed,
                        "{why}"
                    )
                });
                (request, why)
            }
            Err(mpsc::error::TrySendError::Closed(request)) => {
                tracing::error!(
                    origin = &*request.origin,
                    action_id = request.action_id,
                    "executor is gone; command not run"
                );
                (request, "medic is stopping".to_string())
            }
        };
        request.reply.send(crate::event::CommandResult::error(
            request.action_id,
            request.service,
            request.command,
            why,
        ));
    }

    fn carry_out(&self, decision: Decision) {
        match decision {
            Decision::Run(request) => self.run(request),
            d @ (Decision::Publish { .. } | Decision::RunRemote { .. }) => match &self.mqtt {
                Some(mqtt) => mqtt.send(d),
                None => d.refuse("MQTT is not configured on this node"),
            },
            Decision::Emit { rule, sink, record } => self.sinks.emit(&rule, &sink, record),
            Decision::Notify {
                rule,
                severity,
                message,
                source,
            } => {
                let source = source.filter(|s| {
                    let why = notify_source_refusal(&self.grants, &rule, s);
                    if let (Some(why), Ok(mut log)) = (&why, self.ungranted_sources.lock()) {
                        log.log(|suppressed| tracing::warn!(rule = &*rule, suppressed, "{why}"));
                    }
                    why.is_none()
                });
                metrics()
                    .rule_notifications
                    .get_or_create(&SeverityLabels {
                        rule: rule.to_string(),
                        severity: severity.as_str(),
                    })
                    .inc();
                let from = source.as_ref().map(|s| s.to_string());
                {
                    let rule = &*rule;
                    let message = crate::logging::Untrusted(&message);
                    let from = crate::logging::Untrusted(from.as_deref().unwrap_or("medic"));
                    match severity {
                        Severity::Failure => {
                            tracing::error!(rule, %from, "notification: {message}")
                        }
                        Severity::Warning => tracing::warn!(rule, %from, "notification: {message}"),
                        Severity::Okay => tracing::info!(rule, %from, "notification: {message}"),
                    }
                }
                if let Some(history) = &self.history {
                    history.record(Entry::Notified {
                        action_id: crate::event::next_action_id(),
                        at_ns: crate::event::now_ns(),
                        rule: rule.clone(),
                        severity: severity.as_str(),
                        message: message.clone(),
                        source: from,
                    });
                }
                if let Some(collectd) = &self.collectd {
                    collectd.send(&rule, severity, &message, source.as_ref());
                }
                if let Some(mqtt) = &self.mqtt {
                    mqtt.send(Decision::Notify {
                        rule,
                        severity,
                        message,
                        source,
                    });
                }
            }
        }
    }
}
