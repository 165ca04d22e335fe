//! The engine's one way out: what a rule's decision becomes outside the sandbox. The engine
//! defines this port and hands every decision to it; `daemon` plugs in the effects (policy
//! gate and executor, MQTT), and tests plug in a closure that records.
//!
//! Invariant: the engine imports no effect module. Whatever lies behind the port, a `run` or
//! `run-remote` always gets exactly one result back through its `reply`.

use std::sync::Arc;

use crate::event::{CommandRequest, CommandResult, NotifySource, ReplyTo, Severity};

/// One decision of one rule, as the host acts on it.
pub enum Decision {
    /// Run an allow-listed command on this node: the same request a remote sender's command
    /// becomes (`origin` is the rule, `build` its build's SHA-256).
    Run(CommandRequest),
    /// Ask another node (over MQTT) to run one of its commands.
    RunRemote {
        rule: Arc<str>,
        action_id: u64,
        node: String,
        service: String,
        command: String,
        reason: String,
        reply: ReplyTo,
    },
    /// Publish on an MQTT topic (only topics granted to the rule leave the host).
    Publish {
        rule: Arc<str>,
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    },
    /// A record for a sink (only sinks granted to the rule take it).
    Emit {
        rule: Arc<str>,
        sink: String,
        record: Vec<u8>,
    },
    /// A notification the rule raises for people.
    Notify {
        rule: Arc<str>,
        severity: Severity,
        message: String,
        source: Option<NotifySource>,
    },
}

impl Decision {
    /// Answer a decision that cannot be carried out: logged, and a `run`/`run-remote` still
    /// gets its result (as an error), so the rule always hears back.
    pub fn refuse(self, why: &str) {
        match self {
            Decision::Run(CommandRequest {
                origin: rule,
                action_id,
                service,
                command,
                reply,
                ..
            })
            | Decision::RunRemote {
                rule,
                action_id,
                service,
                command,
                reply,
                ..
            } => {
                tracing::warn!(rule = &*rule, action_id, service, command, "refused: {why}");
                reply.send(CommandResult::error(
                    action_id,
                    service,
                    command,
                    why.to_string(),
                ));
            }
            Decision::Publish { rule, topic, .. } => {
                tracing::warn!(rule = &*rule, topic, "publish refused: {why}")
            }
            Decision::Emit { rule, sink, .. } => {
                tracing::warn!(rule = &*rule, sink, "emit refused: {why}")
            }
            Decision::Notify { rule, message, .. } => {
                tracing::warn!(
                    rule = &*rule,
                    "notification not delivered ({why}): {message}"
                )
            }
        }
    }
}

/// Where decisions go. Cheap to clone; callable from any rule's thread.
pub type EffectPort = Arc<dyn Fn(Decision) + Send + Sync>;
