//! The daemon's MQTT side. It answers remote commands on `command_topic` (through the same
//! policy gate and executor as rules), publishes results from the persistent outbox, keeps a
//! retained status with a last will, routes messages on rule topics to the dispatcher, and
//! carries out rules' `publish` and `run-remote`.
//!
//! Delivery: a result is committed to the outbox (with its dedupe record, in one transaction)
//! before it is published, and deleted only when the broker acknowledges it. Incoming commands
//! are acknowledged to the broker only after their task id is recorded, so a crash between the
//! two makes the broker deliver the command again, and the dedupe record answers it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use super::MqttRequest;
use super::lcm::{self, Reply, code};
use super::link::{Backoff, Link, LinkEvent, Message};
use super::options::{BrokerUrl, Connect, password};
use super::remote::{Asked, Remote};
use super::tracker::Tracker;
use crate::actions::{ActionSink, Outcome, Request};
use crate::config::{Config, Mqtt};
use crate::engine::routes::TopicFilters;
use crate::ingest::value::{Ingested, MqttMessage, now_ns};
use crate::store::{Store, TaskSeen};

/// Outbox messages handed to rumqttc at once; the rest wait in the outbox.
const WINDOW: usize = 64;
/// How often expired task ids are forgotten.
const EXPIRE_EVERY: Duration = Duration::from_secs(3600);

pub struct Parts {
    pub config: Arc<Config>,
    pub store: Store,
    pub actions: ActionSink,
    pub ingest: mpsc::Sender<Ingested>,
    pub rule_topics: watch::Receiver<TopicFilters>,
    pub requests: mpsc::UnboundedReceiver<MqttRequest>,
}

/// Stops the service: publishes `offline`, disconnects cleanly and waits (briefly) for it.
pub struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(3), self.task).await;
    }
}

/// What came back from the executor for a remote command.
struct Finished {
    key: String,
    task_id: Value,
    outcome: Outcome,
}

struct Service {
    cfg: Mqtt,
    store: Store,
    link: Link,
    tracker: Tracker,
    qos: u8,
    command_topic: String,
    result_topic: String,
    status_topic: String,
    actions: ActionSink,
    ingest: mpsc::Sender<Ingested>,
    finished: mpsc::UnboundedSender<Finished>,
    rule_topics: TopicFilters,
    subscribed: BTreeSet<String>,
    remote: Remote,
    up: bool,
    invalid: u64,
    dropped: u64,
}

/// Build the connection from the config.
pub fn connect_spec(config: &Config, m: &Mqtt) -> anyhow::Result<Connect> {
    let node = &config.daemon.node;
    let password = password(m.password.as_ref(), m.password_file.as_deref())?;
    Ok(Connect {
        url: BrokerUrl::parse(&m.broker).map_err(anyhow::Error::msg)?,
        protocol: m.protocol,
        client_id: m
            .client_id
            .clone()
            .unwrap_or_else(|| format!("medic-{node}")),
        credentials: m
            .username
            .clone()
            .map(|u| (u, password.unwrap_or_default())),
        ca_file: m.ca_file.clone(),
        insecure: m.insecure,
        keepalive: m.keepalive,
        clean_session: m.clean_session,
        last_will: Some((Mqtt::topic_for(&m.status_topic, node), b"offline".to_vec())),
    })
}

pub fn start(parts: Parts) -> anyhow::Result<Running> {
    let config = parts.config;
    let m = config
        .mqtt
        .clone()
        .expect("start is called with an [mqtt] section");
    let node = config.daemon.node.clone();
    let spec = connect_spec(&config, &m)?;
    let link = Link::start(
        &spec,
        Backoff {
            first: m.reconnect_interval,
            max: m.max_reconnect_interval,
        },
        "medic",
    )?;
    let (finished, finished_rx) = mpsc::unbounded_channel();
    let mut service = Service {
        qos: m.qos,
        command_topic: Mqtt::topic_for(&m.command_topic, &node),
        result_topic: Mqtt::topic_for(&m.result_topic, &node),
        status_topic: Mqtt::topic_for(&m.status_topic, &node),
        cfg: m,
        store: parts.store,
        link,
        tracker: Tracker::default(),
        actions: parts.actions,
        ingest: parts.ingest,
        finished,
        rule_topics: parts.rule_topics.borrow().clone(),
        subscribed: BTreeSet::new(),
        remote: Remote::default(),
        up: false,
        invalid: 0,
        dropped: 0,
    };
    service.recover();
    let (stop, stop_rx) = oneshot::channel();
    let task = tokio::spawn(service.run(parts.requests, finished_rx, parts.rule_topics, stop_rx));
    Ok(Running { stop, task })
}

impl Service {
    async fn run(
        mut self,
        mut requests: mpsc::UnboundedReceiver<MqttRequest>,
        mut finished: mpsc::UnboundedReceiver<Finished>,
        mut rule_topics: watch::Receiver<TopicFilters>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_expire = Instant::now();
        loop {
            tokio::select! {
                event = self.link.events.recv() => match event {
                    Some(event) => self.on_link(event).await,
                    None => return,
                },
                Some(request) = requests.recv() => self.on_request(request),
                Some(done) = finished.recv() => self.on_finished(done),
                Ok(()) = rule_topics.changed() => {
                    self.rule_topics = rule_topics.borrow_and_update().clone();
                    self.subscribe();
                }
                _ = tick.tick() => {
                    self.remote.expire(Instant::now());
                    if last_expire.elapsed() >= EXPIRE_EVERY {
                        last_expire = Instant::now();
                        self.expire_tasks();
                    }
                }
                _ = &mut stop => return self.shut_down().await,
            }
        }
    }

    async fn shut_down(mut self) {
        if !self.up {
            return;
        }
        let _ = self
            .link
            .client
            .publish(&self.status_topic, 1, true, b"offline".to_vec());
        self.link.client.disconnect();
        // Let the event loop send both before the process exits.
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_secs(2), self.link.events.recv()).await
        {
            if let LinkEvent::Disconnected(_) = event {
                break;
            }
        }
        tracing::info!("MQTT: disconnected, status `offline`");
        self.up = false;
    }

    /// After a restart: tasks recorded as running never finished here. Answer them, so their
    /// senders are not left waiting; and forget expired task ids.
    fn recover(&mut self) {
        self.expire_tasks();
        match self.store.tasks_running() {
            Ok(keys) => {
                for key in keys {
                    let task_id = serde_json::from_str(&key).unwrap_or(Value::String(key.clone()));
                    tracing::warn!(
                        task_id = key,
                        "remote command was running when medic stopped; answering `interrupted`"
                    );
                    let reply = Reply::new(
                        task_id,
                        code::INTERRUPTED,
                        "medic stopped while this command ran; it may or may not have completed",
                    );
                    self.finish_task(&key, &reply);
                }
            }
            Err(e) => tracing::error!("cannot read unfinished remote commands: {e}"),
        }
        match self.store.outbox_len() {
            Ok(0) | Err(_) => {}
            Ok(n) => tracing::info!(
                messages = n,
                "MQTT outbox holds messages from before; they are sent once connected"
            ),
        }
    }

    fn expire_tasks(&self) {
        let before = now_ns().saturating_sub(self.cfg.dedupe_window.as_nanos() as u64);
        match self.store.tasks_expire(before) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(forgotten = n, "expired remote task ids"),
            Err(e) => tracing::error!("cannot expire remote task ids: {e}"),
        }
    }

    async fn on_link(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Connected { session_present } => {
                self.up = true;
                if !session_present {
                    // Nothing in flight survives a new session: send the outbox again.
                    self.tracker.reset();
                    self.subscribed.clear();
                }
                let online = b"online".to_vec();
                if self
                    .link
                    .client
                    .publish(&self.status_topic, 1, true, online)
                    .is_ok()
                {
                    self.tracker.issue(None);
                }
                self.subscribe();
                self.pump();
            }
            LinkEvent::Disconnected(_) => self.up = false,
            LinkEvent::Message(p) => self.on_message(p).await,
            LinkEvent::Sent(pkid) => {
                if let Some(id) = self.tracker.sent(pkid) {
                    self.delivered(id);
                }
            }
            LinkEvent::Acked(pkid) => {
                if let Some(id) = self.tracker.acked(pkid) {
                    self.delivered(id);
                }
            }
            LinkEvent::Subscribed => {}
        }
    }

    fn delivered(&mut self, id: i64) {
        if let Err(e) = self.store.outbox_remove(id) {
            tracing::error!(id, "cannot remove a delivered message from the outbox: {e}");
        }
        self.pump();
    }

    /// Hand waiting outbox messages to rumqttc, up to the window.
    fn pump(&mut self) {
        if !self.up || !self.link.connected.load(Ordering::SeqCst) {
            return;
        }
        let free = WINDOW.saturating_sub(self.tracker.outstanding());
        if free == 0 {
            return;
        }
        let waiting = match self.store.outbox_after(self.tracker.cursor, free) {
            Ok(w) => w,
            Err(e) => return tracing::error!("cannot read the MQTT outbox: {e}"),
        };
        for m in waiting {
            match self
                .link
                .client
                .publish(&m.topic, self.qos, m.retain, m.payload)
            {
                Ok(()) => self.tracker.issue(Some(m.id)),
                // The request channel is full: the rest goes on the next pump.
                Err(_) => break,
            }
        }
    }

    /// Subscribe to what is wanted and not yet subscribed; drop rule topics no longer wanted.
    fn subscribe(&mut self) {
        if !self.up {
            return;
        }
        let mut wanted: BTreeSet<String> = self.rule_topics.clone();
        wanted.insert(self.command_topic.clone());
        wanted.extend(self.remote.result_topics.iter().cloned());
        let new: Vec<_> = wanted.difference(&self.subscribed).cloned().collect();
        let gone: Vec<_> = self.subscribed.difference(&wanted).cloned().collect();
        if !new.is_empty() {
            if let Err(e) = self.link.client.subscribe(&new, self.qos) {
                return tracing::error!("MQTT: cannot subscribe: {e}");
            }
            tracing::info!(topics = ?new, "MQTT: subscribed");
        }
        for topic in &gone {
            self.link.client.unsubscribe(topic);
        }
        self.subscribed = wanted;
    }

    async fn on_message(&mut self, p: Message) {
        let topic = p.topic.as_str();
        if topic == self.command_topic {
            self.on_command(&p);
        } else if self.remote.is_result_topic(topic) {
            self.remote.on_result(&p.payload);
        }
        if self.rule_topics.iter().any(|f| rumqttc::matches(topic, f)) {
            let message = Ingested::Mqtt(MqttMessage {
                topic: p.topic.clone(),
                payload: p.payload.clone(),
            });
            // Fails only when the dispatcher has stopped: the daemon is shutting down.
            let _ = self.ingest.send(message).await;
        }
        // Acknowledged only now: a command's task id is recorded, a rule message queued.
        self.link.client.ack(&p);
    }

    fn on_command(&mut self, p: &Message) {
        let request = match lcm::parse_request(&p.payload) {
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
                        payload = %String::from_utf8_lossy(&p.payload[..p.payload.len().min(200)]),
                        "invalid remote command dropped (no task id to answer): {}",
                        invalid.message
                    ),
                }
                return;
            }
        };
        let key = request.key();
        let now = now_ns();
        let since = now.saturating_sub(self.cfg.dedupe_window.as_nanos() as u64);
        match self.store.task_begin(&key, now, since) {
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
                self.queue(&self.result_topic.clone(), &reply, false);
            }
            Ok(TaskSeen::Running) => {
                tracing::warn!(task_id = key, "duplicate task id while it is still running");
                let reply = Reply::new(
                    request.task_id,
                    code::DUPLICATE_RUNNING,
                    format!("task {key} is still running"),
                );
                self.reply(&reply);
            }
            Ok(TaskSeen::New) => self.run_command(key, request),
        }
    }

    fn run_command(&mut self, key: String, request: lcm::Request) {
        if let Some(max_age) = self.cfg.max_age {
            let stale = match &request.timestamp {
                None => Some("the request has no timestamp and mqtt.max_age is set".to_string()),
                Some(ts) => match lcm::age(ts, jiff::Timestamp::now()) {
                    Err(e) => Some(e),
                    Ok(age) if age > max_age => Some(format!(
                        "the request is {}s old; mqtt.max_age is {}s",
                        age.as_secs(),
                        max_age.as_secs()
                    )),
                    Ok(_) => None,
                },
            };
            if let Some(why) = stale {
                tracing::warn!(task_id = key, "stale remote command refused: {why}");
                let reply = Reply::new(request.task_id, code::STALE, why);
                return self.finish_task(&key, &reply);
            }
        }
        let action_id = crate::actions::next_action_id();
        tracing::info!(
            task_id = key,
            action_id,
            service = request.service,
            command = request.command,
            "remote command received"
        );
        let finished = self.finished.clone();
        let task_id = request.task_id;
        let reply_key = key.clone();
        let sent = self.actions.send(Request {
            origin: format!("mqtt:{key}").into(),
            action_id,
            service: request.service,
            command: request.command,
            reason: "remote command".into(),
            reply: Box::new(move |outcome| {
                let _ = finished.send(Finished {
                    key: reply_key,
                    task_id,
                    outcome,
                });
            }),
        });
        if sent.is_err() {
            tracing::error!(task_id = key, "executor is gone; remote command not run");
        }
    }

    fn on_finished(&mut self, done: Finished) {
        let (code, message) = lcm::outcome_reply(&done.outcome);
        self.finish_task(&done.key, &Reply::new(done.task_id, code, message));
        // Logged once the result is committed: after this line it survives a crash.
        tracing::info!(task_id = done.key, code, "remote command answered");
    }

    /// Record a task's reply and queue it, atomically.
    fn finish_task(&mut self, key: &str, reply: &Reply) {
        match self.store.task_finish(
            key,
            &self.result_topic,
            &reply.to_json(),
            self.cfg.outbox_limit,
        ) {
            Ok((_, dropped)) => self.after_queue(dropped),
            Err(e) => {
                tracing::error!(
                    task_id = key,
                    "cannot record the result: {e}; publishing it directly"
                );
                let (topic, json) = (&self.result_topic, reply.to_json());
                if self
                    .link
                    .client
                    .publish(topic, self.qos, false, json)
                    .is_ok()
                {
                    self.tracker.issue(None);
                }
            }
        }
    }

    /// A reply that is not a task's result (errors about the request itself).
    fn reply(&mut self, reply: &Reply) {
        let topic = self.result_topic.clone();
        self.queue(&topic, &reply.to_json(), false);
    }

    fn queue(&mut self, topic: &str, payload: &[u8], retain: bool) {
        match self
            .store
            .outbox_push(topic, payload, retain, self.cfg.outbox_limit)
        {
            Ok((_, dropped)) => self.after_queue(dropped),
            Err(e) => tracing::error!(topic, "cannot queue an MQTT message: {e}; it is lost"),
        }
    }

    fn after_queue(&mut self, dropped: usize) {
        if dropped > 0 {
            self.dropped += dropped as u64;
            tracing::warn!(
                dropped,
                total_dropped = self.dropped,
                limit = self.cfg.outbox_limit,
                "MQTT outbox full: dropped the oldest messages"
            );
        }
        self.pump();
    }

    fn on_request(&mut self, request: MqttRequest) {
        match request {
            MqttRequest::Publish {
                rule,
                topic,
                payload,
                retain,
            } => {
                let granted = || {
                    let filters = self.cfg.grants.get(&*rule);
                    filters.is_some_and(|f| f.iter().any(|f| rumqttc::matches(&topic, f)))
                };
                let refusal = if topic.is_empty() || !rumqttc::valid_topic(&topic) {
                    Some("not a valid topic name".to_string())
                } else if !granted() {
                    Some(format!(
                        "topic not granted to this rule (mqtt.grants.{rule})"
                    ))
                } else {
                    None
                };
                if let Some(why) = refusal {
                    return tracing::warn!(rule = &*rule, topic, "publish refused: {why}");
                }
                tracing::debug!(
                    rule = &*rule,
                    topic,
                    bytes = payload.len(),
                    "rule publishes"
                );
                self.queue(&topic, &payload, retain);
            }
            MqttRequest::RunRemote {
                rule,
                action_id,
                node,
                service,
                command,
                reply,
            } => {
                let command_topic = Mqtt::topic_for(&self.cfg.command_topic, &node);
                let result_topic = Mqtt::topic_for(&self.cfg.result_topic, &node);
                let payload = lcm::command_payload(action_id, &service, &command);
                let asked = Asked {
                    rule,
                    node,
                    service,
                    command,
                    reply,
                };
                let timeout = self.cfg.remote_timeout;
                let new_topic = self.remote.ask(action_id, asked, result_topic, timeout);
                if new_topic {
                    // Subscribed before the command goes out: requests leave in order.
                    self.subscribe();
                }
                self.queue(&command_topic, &payload, false);
            }
        }
    }
}
