//! MQTT in: remote commands on `command_topic` (lua-collectd-monitor's format) and messages on
//! the rules' topics.
//!
//! A remote command travels the same road as a rule's decision: it is handed to the policy gate
//! and executor (through the `run` closure the daemon gives), and its result is recorded with
//! its task id and queued in the outbox in one transaction. Task ids are recorded before the
//! command is acknowledged to the broker, so a crash between the two makes the broker deliver it
//! again and the dedupe record answers it.
//!
//! A signed request (`mqtt::signed`) is verified before anything else, its nonce used once, and
//! its sender's scope checked; with `mqtt.auth.require_signed` an unsigned one is refused.
//! Refusals are answered and recorded in the history with the sender's name.
//!
//! Messages for rules go to the ingest queue through a small buffer of their own: a full
//! dispatcher queue drops (and counts) rule messages, and never stalls remote commands.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::config::Mqtt;
use crate::event::{
    CommandRequest, CommandResult, ConfigRequest, Ingested, MqttMessage, ReplyTo, next_action_id,
    now_ns,
};
use crate::logging::RateLimited;
use crate::metrics::{CodeLabels, metrics};
use crate::mqtt::lcm::{self, Ask, Reply, code};
use crate::mqtt::link::Message;
use crate::mqtt::session::{Handled, Session, SessionHandle};
use crate::mqtt::signed::{self, Refused, Senders, Signed};
use crate::shutdown::Shutdown;
use crate::store::history::{Entry, History};
use crate::store::{Store, TaskSeen};

/// How often expired task ids are forgotten.
const EXPIRE_EVERY: Duration = Duration::from_secs(3600);
/// Rule messages waiting for room in the ingest queue.
const RULE_BUFFER: usize = 1024;

/// What the inbound side needs.
pub struct Parts {
    pub config: Mqtt,
    pub node: String,
    pub store: Store,
    pub session: SessionHandle,
    /// Hands a remote command to the policy gate and executor.
    pub run: Arc<dyn Fn(CommandRequest) + Send + Sync>,
    /// Hands a collectd config replacement (or the finishing of one) to its effect.
    pub replace: Arc<dyn Fn(ConfigRequest) + Send + Sync>,
    pub ingest: mpsc::Sender<Ingested>,
    pub shutdown: Shutdown,
    /// Who may sign commands (`[mqtt.auth]`).
    pub senders: Arc<Senders>,
    /// Where refused requests are recorded.
    pub history: Option<History>,
    /// Allow-listed services a remote command may not name (probes without `remote = true`).
    pub local_only: BTreeSet<String>,
}

/// Register the inbound handler on `session` and start the tasks behind it. They end when
/// `shutdown` fires (commands arriving after it stay with the broker for the next start).
pub fn start(parts: Parts, session: &mut Session) -> Vec<tokio::task::JoinHandle<()>> {
    let (ingest, shutdown) = (parts.ingest.clone(), parts.shutdown.clone());
    let (mut inbound, rules_rx) = Inbound::new(parts);
    inbound.recover();
    inbound.session.want(
        "remote commands",
        BTreeSet::from([inbound.command_topic.clone()]),
    );
    let maintenance = tokio::spawn(expire_tasks(
        inbound.store.clone(),
        inbound.cfg.dedupe_window,
        shutdown.clone(),
    ));
    let forward = tokio::spawn(forward_to_rules(rules_rx, ingest, shutdown));
    session.on_message(Box::new(move |m| inbound.on_message(m)));
    vec![maintenance, forward]
}

struct Inbound {
    cfg: Mqtt,
    node: String,
    local_only: BTreeSet<String>,
    senders: Arc<Senders>,
    history: Option<History>,
    command_topic: String,
    result_topic: String,
    store: Store,
    session: SessionHandle,
    run: Arc<dyn Fn(CommandRequest) + Send + Sync>,
    replace: Arc<dyn Fn(ConfigRequest) + Send + Sync>,
    rules: mpsc::Sender<MqttMessage>,
    shutdown: Shutdown,
    invalid: u64,
    refusal_log: crate::logging::RateLimitedByKind<i64>,
    rule_drops: u64,
    rule_drop_log: RateLimited,
}

impl Inbound {
    fn new(parts: Parts) -> (Self, mpsc::Receiver<MqttMessage>) {
        let (rules, rules_rx) = mpsc::channel(RULE_BUFFER);
        let inbound = Inbound {
            command_topic: Mqtt::topic_for(&parts.config.command_topic, &parts.node),
            result_topic: Mqtt::topic_for(&parts.config.result_topic, &parts.node),
            cfg: parts.config,
            node: parts.node,
            local_only: parts.local_only,
            senders: parts.senders,
            history: parts.history,
            store: parts.store,
            session: parts.session,
            run: parts.run,
            replace: parts.replace,
            rules,
            shutdown: parts.shutdown,
            invalid: 0,
            refusal_log: crate::logging::RateLimitedByKind::default(),
            rule_drops: 0,
            rule_drop_log: RateLimited::default(),
        };
        (inbound, rules_rx)
    }

    fn on_message(&mut self, m: &Message) -> Handled {
        if self.shutdown.is_triggered() {
            return Handled::Leave;
        }
        if m.topic == self.command_topic {
            self.on_command(m);
        }
        // Every message may be on some rule's topic: the dispatcher matches each rule's filters
        // (once, there), and subscriptions are the union of them plus medic's own topics.
        let message = MqttMessage {
            topic: m.topic.clone(),
            payload: m.payload.clone(),
        };
        if self.rules.try_send(message).is_ok() {
            metrics().mqtt_messages_received.inc();
        } else {
            metrics().mqtt_messages_dropped.inc();
            self.rule_drops += 1;
            let total = self.rule_drops;
            self.rule_drop_log.log(|suppressed| {
                tracing::warn!(
                    total_dropped = total,
                    suppressed,
                    "engine busy: MQTT message for rules dropped"
                )
            });
        }
        Handled::Done
    }

    /// After a restart: tasks recorded as running never finished here. Answer them, so their
    /// senders are not left waiting.
    fn recover(&mut self) {
        forget_expired(&self.store, self.cfg.dedupe_window);
        match self.store.tasks_running() {
            Ok(keys) => {
                for key in keys {
                    let task_id = serde_json::from_str(&key).unwrap_or(Value::String(key.clone()));
                    if let Ok(Some((_, action_id))) = self.store.replacement(&key) {
                        // A config replacement: finish it, then answer with how it ended.
                        let reply = self.replace_reply(key.clone(), task_id);
                        (self.replace)(ConfigRequest {
                            origin: format!("mqtt:{key}").into(),
                            action_id,
                            task: key,
                            config: None,
                            reply,
                        });
                        continue;
                    }
                    tracing::warn!(
                        task_id = key,
                        "remote command was running when medic stopped; answering `interrupted`"
                    );
                    let reply = Reply::new(
                        task_id,
                        code::INTERRUPTED,
                        "medic stopped while this command ran; it may or may not have completed",
                    );
                    finish_task(&self.store, &self.session, &self.result_topic, &key, &reply);
                }
            }
            Err(e) => tracing::error!("cannot read unfinished remote commands: {e}"),
        }
    }

    fn on_command(&mut self, p: &Message) {
        let signed = match self.authenticate(p) {
            Ok(signed) => signed,
            Err(refused) => return self.refuse(refused, None),
        };
        let payload = signed.as_ref().map_or(&p.payload[..], |s| &s.request[..]);
        let request = match lcm::parse_request(payload) {
            Ok(r) => r,
            Err(invalid) => {
                self.invalid += 1;
                match invalid.task_id {
                    Some(task_id) => {
                        tracing::warn!(
                            task_id = %task_id, total_invalid = self.invalid,
                            "invalid remote command: {}; answered with code {}",
                            invalid.message, code::INVALID_REQUEST
                        );
                        self.reply(&Reply::new(task_id, code::INVALID_REQUEST, invalid.message));
                    }
                    None => tracing::warn!(
                        total_invalid = self.invalid,
                        payload = ?String::from_utf8_lossy(&p.payload[..p.payload.len().min(200)]),
                        "invalid remote command dropped (no task id to answer): {}",
                        invalid.message
                    ),
                }
                return;
            }
        };
        let sender = signed.map(|s| s.sender);
        if let Some(name) = &sender
            && let Some(why) = self.out_of_scope(name, &request.ask)
        {
            let refused = Refused {
                code: code::OUT_OF_SCOPE,
                message: why,
                task_id: Some(request.task_id),
                sender: Some(name.clone()),
            };
            return self.refuse(refused, Some(&request.ask));
        }
        if let Ask::Run { service, .. } = &request.ask
            && self.local_only.contains(service)
        {
            let refused = Refused {
                code: code::REFUSED,
                message: format!(
                    "{service} is a probe run on its schedule; remote commands may run it only \
                     with [probes.{}] remote = true",
                    service.trim_start_matches("probe-")
                ),
                task_id: Some(request.task_id.clone()),
                sender,
            };
            return self.refuse(refused, Some(&request.ask));
        }
        let key = request.key();
        let now = now_ns();
        let since = now.saturating_sub(self.cfg.dedupe_window.as_nanos() as u64);
        match self
            .store
            .task_begin(&key, now, since, self.cfg.dedupe_limit)
        {
            Err(e) => {
                tracing::error!(task_id = key, "cannot record the remote task id: {e}");
                let reply = Reply::new(
                    request.task_id,
                    code::REFUSED,
                    format!("medic cannot record the task id, so it does not run it: {e}"),
                );
                self.reply(&reply);
            }
            // The broker redelivers what it is not sure we got (DUP): not a new request.
            Ok(TaskSeen::Done(_) | TaskSeen::Running) if p.dup => {
                tracing::info!(
                    task_id = key,
                    "broker redelivered a remote command already handled"
                );
            }
            Ok(TaskSeen::Done(reply)) => {
                tracing::info!(
                    task_id = key,
                    "remote command seen before: sending its recorded result again"
                );
                self.session.queue(&self.result_topic, &reply, false);
            }
            Ok(TaskSeen::Running) => {
                tracing::warn!(task_id = key, "duplicate task id while it is still running");
                // lua-collectd-monitor's words (`tostring(task_id)`).
                let shown = match &request.task_id {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let reply = Reply::new(
                    request.task_id,
                    code::DUPLICATE_RUNNING,
                    format!("Received duplicate task_id: {shown}"),
                );
                self.reply(&reply);
            }
            Ok(TaskSeen::New) => self.run_command(key, request, sender),
        }
    }

    /// A signed request opened and its nonce used, `None` for an unsigned one this node takes,
    /// or why it is refused.
    fn authenticate(&self, p: &Message) -> Result<Option<Signed>, Refused> {
        if !signed::is_envelope(&p.payload) {
            if self.senders.require_signed {
                return Err(Refused {
                    code: code::UNSIGNED,
                    message: "this node takes only signed commands (mqtt.auth.require_signed)"
                        .into(),
                    task_id: lcm::task_id_of(&p.payload),
                    sender: None,
                });
            }
            return Ok(None);
        }
        let now = now_ns();
        let signed = signed::open(&p.payload, &self.senders, &self.node, now)?;
        let refuse = |code, message: String| Refused {
            code,
            message,
            task_id: signed.task_id.clone(),
            sender: Some(signed.sender.clone()),
        };
        match self
            .store
            .nonce_use(&signed.sender, &signed.nonce, signed.expires_ns, now)
        {
            Ok(true) => Ok(Some(signed)),
            // The broker's redelivery of a message already taken: handled as any other.
            Ok(false) if p.dup => Ok(Some(signed)),
            Ok(false) => Err(refuse(
                code::REPLAYED,
                format!(
                    "nonce {} was used before by sender `{}`: a replayed request",
                    signed.nonce, signed.sender
                ),
            )),
            Err(e) => Err(refuse(
                code::REFUSED,
                format!("medic cannot record the nonce, so it does not run the request: {e}"),
            )),
        }
    }

    /// Why `sender` may not ask for `ask`, if it may not.
    fn out_of_scope(&self, sender: &str, ask: &Ask) -> Option<String> {
        let scope = self.senders.scope(sender)?;
        match ask {
            Ask::Run { service, command } if !scope.may_run(service, command) => Some(format!(
                "sender `{sender}` may not run {service}/{command} \
                 (mqtt.auth.senders.{sender}.commands)"
            )),
            Ask::ReplaceConfig(_) if !scope.replace_config => Some(format!(
                "sender `{sender}` may not replace collectd's config \
                 (mqtt.auth.senders.{sender}.replace_config)"
            )),
            _ => None,
        }
    }

    /// Answer a request refused before it ran (when it has a task id to answer), log it, and
    /// record it in the history, naming the sender and, once the request could be read, what it
    /// asked for.
    fn refuse(&mut self, refused: Refused, ask: Option<&Ask>) {
        let Refused {
            code,
            message,
            task_id,
            sender,
        } = refused;
        let shown_sender = sender.as_deref().unwrap_or("(unsigned)");
        // Whoever reaches the topic chooses how many: one line per kind of refusal per period.
        self.refusal_log.log(code, |suppressed| {
            tracing::warn!(
                task_id = task_id.as_ref().map(|t| t.to_string()),
                sender = shown_sender,
                code = format!("0x{code:04x}"),
                suppressed,
                "remote command refused: {message}"
            )
        });
        if let Some(history) = &self.history {
            let task = task_id.as_ref().map_or("?".into(), |t| t.to_string());
            history.record(Entry::Asked {
                action_id: next_action_id(),
                at_ns: now_ns(),
                origin: match &sender {
                    Some(name) => format!("mqtt:{name}:{task}").into(),
                    None => format!("mqtt:{task}").into(),
                },
                build: None,
                reason: format!("remote command from {shown_sender}"),
                service: match ask {
                    Some(Ask::Run { service, .. }) => service.clone(),
                    Some(Ask::ReplaceConfig(_)) => "collectd".into(),
                    None => "?".into(),
                },
                command: match ask {
                    Some(Ask::Run { command, .. }) => command.clone(),
                    Some(Ask::ReplaceConfig(_)) => "replace-config".into(),
                    None => "?".into(),
                },
                refusal: Some(message.clone()),
            });
        }
        if let Some(task_id) = task_id {
            self.reply(&Reply::new(task_id, code, message));
        }
    }

    fn run_command(&mut self, key: String, request: lcm::Request, sender: Option<String>) {
        let origin: Arc<str> = match &sender {
            Some(name) => format!("mqtt:{name}:{key}").into(),
            None => format!("mqtt:{key}").into(),
        };
        if let Some(why) = self.stale(&request) {
            tracing::warn!(task_id = key, "stale remote command refused: {why}");
            let reply = Reply::new(request.task_id, code::STALE, why);
            return finish_task(&self.store, &self.session, &self.result_topic, &key, &reply);
        }
        let action_id = next_action_id();
        let (service, command) = match request.ask {
            Ask::Run { service, command } => (service, command),
            Ask::ReplaceConfig(text) => {
                tracing::info!(
                    task_id = key,
                    action_id,
                    bytes = text.len(),
                    "collectd config replacement received"
                );
                let reply = self.replace_reply(key.clone(), request.task_id);
                return (self.replace)(ConfigRequest {
                    origin,
                    action_id,
                    task: key,
                    config: Some(text),
                    reply,
                });
            }
        };
        tracing::info!(
            task_id = key,
            action_id,
            service,
            command,
            "remote command received"
        );
        let (store, session) = (self.store.clone(), self.session.clone());
        let (result_topic, task_id) = (self.result_topic.clone(), request.task_id);
        (self.run)(CommandRequest {
            origin,
            build: None,
            action_id,
            reason: "remote command".into(),
            reply: ReplyTo::new(
                action_id,
                &service,
                &command,
                move |result: CommandResult| {
                    let (code, message) = lcm::outcome_reply(&result);
                    let reply = Reply::new(task_id, code, message);
                    finish_task(&store, &session, &result_topic, &key, &reply);
                    // Logged once the result is committed: after this line it survives a crash.
                    tracing::info!(task_id = key, code, "remote command answered");
                },
            ),
            service,
            command,
        });
    }

    /// Where a config replacement's code and message go: recorded with the task and queued.
    fn replace_reply(&self, key: String, task_id: Value) -> Box<dyn FnOnce(i64, String) + Send> {
        let (store, session, topic) = (
            self.store.clone(),
            self.session.clone(),
            self.result_topic.clone(),
        );
        Box::new(move |code, message| {
            let reply = Reply::new(task_id, code, message);
            finish_task(&store, &session, &topic, &key, &reply);
        })
    }

    /// Why a request is too old to run (`mqtt.max_age`), if it is.
    fn stale(&self, request: &lcm::Request) -> Option<String> {
        let max_age = self.cfg.max_age?;
        match &request.timestamp {
            None => Some("the request has no timestamp and mqtt.max_age is set".to_string()),
            Some(ts) => match lcm::age(ts, jiff::Timestamp::now(), self.cfg.max_clock_skew) {
                Err(e) => Some(e),
                Ok(age) if age > max_age => Some(format!(
                    "the request is {}s old; mqtt.max_age is {}s",
                    age.as_secs(),
                    max_age.as_secs()
                )),
                Ok(_) => None,
            },
        }
    }

    /// A reply that is not a task's result (errors about the request itself).
    fn reply(&self, reply: &Reply) {
        count_reply(reply);
        self.session
            .queue(&self.result_topic, &reply.to_json(), false);
    }
}

/// Record a task's reply and queue it, atomically.
fn finish_task(store: &Store, session: &SessionHandle, topic: &str, key: &str, reply: &Reply) {
    count_reply(reply);
    let json = reply.to_json();
    match store.task_finish(key, topic, &json, session.outbox_limit()) {
        Ok((_, dropped)) => session.queued(dropped),
        Err(e) => {
            tracing::error!(
                task_id = key,
                "cannot record the result: {e}; publishing it directly"
            );
            session.publish_direct(topic, json);
        }
    }
}

/// Remote commands answered, by lua-collectd-monitor's result code (`0x2002` style, as its
/// users know them).
fn count_reply(reply: &Reply) {
    let code = format!("0x{:04x}", reply.code);
    metrics()
        .remote_commands
        .get_or_create(&CodeLabels { code })
        .inc();
}

fn forget_expired(store: &Store, window: Duration) {
    let before = now_ns().saturating_sub(window.as_nanos() as u64);
    match store.tasks_expire(before) {
        Ok(0) => {}
        Ok(n) => tracing::debug!(forgotten = n, "expired remote task ids"),
        Err(e) => tracing::error!("cannot expire remote task ids: {e}"),
    }
}

async fn expire_tasks(store: Store, window: Duration, mut shutdown: Shutdown) {
    let mut every = tokio::time::interval(EXPIRE_EVERY);
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => forget_expired(&store, window),
            _ = shutdown.wait() => return,
        }
    }
}

/// Hand rule messages to the ingest queue, waiting for room there (and only here). At
/// shutdown, what is buffered still goes in before the ingest sender is dropped.
async fn forward_to_rules(
    mut rx: mpsc::Receiver<MqttMessage>,
    ingest: mpsc::Sender<Ingested>,
    mut shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => if ingest.send(Ingested::Mqtt(m)).await.is_err() { return },
                None => return,
            },
            _ = shutdown.wait() => break,
        }
    }
    while let Ok(m) = rx.try_recv() {
        if ingest.send(Ingested::Mqtt(m)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
