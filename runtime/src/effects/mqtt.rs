//! MQTT out: rules' `publish` (only on topics granted to the rule), `run-remote` (a command in
//! lua-collectd-monitor's format to another node, whose result comes back to the rule), and
//! rules' notifications as JSON on `notify_topic`. Everything goes through the session's
//! persistent outbox.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::presence::Presence;
use super::remote::{Asked, Remote};
use crate::config::Mqtt;
use crate::engine::port::Decision;
use crate::mqtt::lcm;
use crate::mqtt::session::{Handled, Session, SessionHandle};
use crate::mqtt::signed::Signer;

enum Msg {
    Decision(Decision),
    /// A reloaded config's `[mqtt.grants]`.
    Grants(std::collections::BTreeMap<String, Vec<String>>),
    /// Answer every `run-remote` still waiting; reply with how many there were.
    Abandon(oneshot::Sender<usize>),
}

/// Hands `publish` and `run-remote` decisions to the outbound task. Cloneable.
#[derive(Clone)]
pub struct Outbound {
    tx: mpsc::UnboundedSender<Msg>,
}

impl Outbound {
    /// Start the outbound task for `node`; results of `run-remote` are read from `session`'s
    /// messages.
    /// `signer`: this node's own key (`mqtt.auth.key_file`), to sign its `run-remote`s.
    pub fn start(
        cfg: Mqtt,
        node: &str,
        signer: Option<Arc<Signer>>,
        handle: SessionHandle,
        session: &mut Session,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (results_tx, results) = mpsc::unbounded_channel();
        let result_topics: Arc<RwLock<BTreeSet<String>>> = Arc::default();
        let topics = result_topics.clone();
        let presence = Arc::new(Mutex::new(Presence::new(&cfg.status_topic)));
        if let Some(filter) = presence.lock().unwrap_or_else(|p| p.into_inner()).filter() {
            handle.want("node presence", BTreeSet::from([filter.to_string()]));
        }
        let statuses = presence.clone();
        session.on_message(Box::new(move |m| {
            let mut statuses = statuses.lock().unwrap_or_else(|p| p.into_inner());
            if statuses.on_message(&m.topic, &m.payload) {
                return Handled::Done;
            }
            drop(statuses);
            let ours = topics
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&m.topic);
            if ours {
                let _ = results_tx.send(m.payload.clone());
            }
            Handled::Done
        }));
        let task = Task {
            notify_topic: Mqtt::topic_for(&cfg.notify_topic, node),
            node: node.to_string(),
            cfg,
            session: handle,
            remote: Remote::default(),
            result_topics,
            presence,
            signer,
        };
        tokio::spawn(task.run(rx, results));
        Self { tx }
    }

    /// Hand over a `publish` or `run-remote`; refused (with its result) when the task is gone.
    pub fn send(&self, decision: Decision) {
        if let Err(mpsc::error::SendError(Msg::Decision(d))) = self.tx.send(Msg::Decision(decision))
        {
            d.refuse("the MQTT client has stopped");
        }
    }

    /// Take a reloaded config's publish grants.
    pub fn set_grants(&self, grants: std::collections::BTreeMap<String, Vec<String>>) {
        let _ = self.tx.send(Msg::Grants(grants));
    }

    /// Answer every `run-remote` still waiting for its node (medic is stopping).
    pub async fn abandon_waiting(&self) -> usize {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Abandon(done)).is_err() {
            return 0;
        }
        wait.await.unwrap_or(0)
    }
}

struct Task {
    cfg: Mqtt,
    node: String,
    notify_topic: String,
    session: SessionHandle,
    remote: Remote,
    result_topics: Arc<RwLock<BTreeSet<String>>>,
    presence: Arc<Mutex<Presence>>,
    signer: Option<Arc<Signer>>,
}

impl Task {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Msg>,
        mut results: mpsc::UnboundedReceiver<Vec<u8>>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Msg::Decision(d)) => self.on_decision(d),
                    Some(Msg::Grants(grants)) => self.cfg.grants = grants,
                    Some(Msg::Abandon(done)) => {
                        let _ = done.send(self.remote.abandon("medic is stopping"));
                    }
                    None => {
                        self.remote.abandon("medic is stopping");
                        return;
                    }
                },
                Some(payload) = results.recv() => self.remote.on_result(&payload),
                _ = tick.tick() => self.remote.expire(Instant::now()),
            }
        }
    }

    fn on_decision(&mut self, decision: Decision) {
        match decision {
            Decision::Publish {
                rule,
                topic,
                payload,
                retain,
            } => {
                if let Some(why) = publish_refusal(&self.cfg.grants, &rule, &topic) {
                    return tracing::warn!(rule = &*rule, topic, "publish refused: {why}");
                }
                tracing::debug!(
                    rule = &*rule,
                    topic,
                    bytes = payload.len(),
                    "rule publishes"
                );
                self.session.queue(&topic, &payload, retain);
            }
            Decision::RunRemote { ref node, .. } if !valid_node(node) => {
                let why = format!(
                    "`{}` is not a node name (empty, too long, or with `/`, `+` or `#`)",
                    crate::logging::Untrusted(node)
                );
                decision.refuse(&why);
            }
            Decision::RunRemote { ref node, .. } if self.node_is_offline(node) => {
                let why = format!(
                    "node `{node}` is offline (its status on {} says so)",
                    Mqtt::topic_for(&self.cfg.status_topic, node)
                );
                decision.refuse(&why);
            }
            Decision::RunRemote {
                rule,
                action_id,
                node,
                service,
                command,
                reason,
                reply,
            } => {
                tracing::debug!(
                    rule = &*rule,
                    action_id,
                    node,
                    reason,
                    "remote command queued for its node"
                );
                let command_topic = Mqtt::topic_for(&self.cfg.command_topic, &node);
                let result_topic = Mqtt::topic_for(&self.cfg.result_topic, &node);
                let payload = match &self.signer {
                    // Valid while the rule waits for it: after that nobody wants the result.
                    Some(signer) => signer.sign(
                        lcm::command_request(action_id, &service, &command),
                        &node,
                        self.cfg.remote_timeout.min(self.cfg.auth.max_validity),
                    ),
                    None => lcm::command_payload(action_id, &service, &command),
                };
                let asked = Asked {
                    rule,
                    node,
                    service,
                    command,
                    reply,
                };
                let timeout = self.cfg.remote_timeout;
                if self.remote.ask(action_id, asked, result_topic, timeout) {
                    let topics = self.remote.result_topics.clone();
                    *self
                        .result_topics
                        .write()
                        .unwrap_or_else(|p| p.into_inner()) = topics.clone();
                    // Subscribed before the command goes out: requests leave in order.
                    self.session.want("run-remote results", topics);
                }
                self.session.queue(&command_topic, &payload, false);
            }
            Decision::Notify {
                rule,
                severity,
                message,
                source,
            } => {
                let mut payload = serde_json::json!({
                    "node": self.node,
                    "rule": &*rule,
                    "severity": severity.as_str(),
                    "message": message,
                    "timestamp": crate::event::now_ns() / 1_000_000_000,
                });
                if let Some(s) = source {
                    payload["plugin"] = s.plugin.into();
                    payload["plugin_instance"] = s.plugin_instance.into();
                    payload["type"] = s.type_.into();
                    payload["type_instance"] = s.type_instance.into();
                }
                self.session
                    .queue(&self.notify_topic, payload.to_string().as_bytes(), false);
            }
            other => other.refuse("not an MQTT decision"),
        }
    }

    fn node_is_offline(&self, node: &str) -> bool {
        let presence = self.presence.lock().unwrap_or_else(|p| p.into_inner());
        presence.is_offline(node)
    }
}

/// A node name goes into topics: it must be one topic level, without wildcards.
/// Why a rule may not publish on `topic`, if it may not: the topic must be a valid name and
/// match one of the rule's `[mqtt.grants]` filters.
pub fn publish_refusal(
    grants: &std::collections::BTreeMap<String, Vec<String>>,
    rule: &str,
    topic: &str,
) -> Option<String> {
    let granted = || {
        let filters = grants.get(rule);
        filters.is_some_and(|f| f.iter().any(|f| medic_rules::topic_matches(f, topic)))
    };
    if topic.is_empty() || !rumqttc::valid_topic(topic) {
        Some("not a valid topic name".to_string())
    } else if !granted() {
        Some(format!(
            "topic not granted to this rule (mqtt.grants.{rule})"
        ))
    } else {
        None
    }
}

fn valid_node(node: &str) -> bool {
    !node.is_empty() && node.len() <= lcm::MAX_FIELD_LEN && !node.contains(['/', '+', '#', '\0'])
}

#[cfg(test)]
mod tests {
    #[test]
    fn node_names_are_one_topic_level() {
        assert!(super::valid_node("web-1.example"));
        for bad in ["", "a/b", "+", "#", "x#", &"n".repeat(200)] {
            assert!(!super::valid_node(bad), "{bad}");
        }
    }
}
