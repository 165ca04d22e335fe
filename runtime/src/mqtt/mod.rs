//! MQTT: remote commands in lua-collectd-monitor's format and their results, a retained
//! status topic, topics for rules, and `run-remote` to other nodes. Everything medic publishes
//! that matters (results, rule messages, remote commands) goes through a persistent outbox and
//! leaves it only when the broker has acknowledged it.

pub mod lcm;
pub mod link;
pub mod options;
mod remote;
pub mod send;
pub mod service;
mod tracker;

use std::sync::Arc;
use std::time::Duration;

use crate::actions::Outcome;

/// What a rule asks of the MQTT client.
pub enum MqttRequest {
    Publish {
        rule: Arc<str>,
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    },
    RunRemote {
        rule: Arc<str>,
        action_id: u64,
        node: String,
        service: String,
        command: String,
        reply: Box<dyn FnOnce(Outcome) + Send>,
    },
}

impl MqttRequest {
    /// Log the refusal; a `run-remote` also gets an error outcome, so the rule hears of it.
    pub fn refuse(self, rule: &str, why: &str) {
        match self {
            MqttRequest::Publish { topic, .. } => {
                tracing::warn!(rule, topic, "publish refused: {why}")
            }
            MqttRequest::RunRemote {
                action_id,
                node,
                service,
                command,
                reply,
                ..
            } => {
                tracing::warn!(
                    rule,
                    action_id,
                    node,
                    service,
                    command,
                    "run-remote refused: {why}"
                );
                reply(error_outcome(action_id, service, command, why.to_string()));
            }
        }
    }
}

/// An outcome for a command that never ran.
pub(crate) fn error_outcome(
    action_id: u64,
    service: String,
    command: String,
    error: String,
) -> Outcome {
    Outcome {
        action_id,
        service,
        command,
        code: None,
        signal: None,
        output: String::new(),
        error: Some(error),
        refusal: None,
        timed_out: false,
        duration: Duration::ZERO,
    }
}

/// Hands rule requests to the MQTT service; cloneable, callable from any thread.
pub type MqttSink = tokio::sync::mpsc::UnboundedSender<MqttRequest>;
