//! The daemon's one MQTT session, shared by the inbound side (remote commands, rule topics) and
//! the outbound side (results, rule publishes, `run-remote`) without either importing the other.
//!
//! It owns the connection: a retained status (`online`, and `offline` as the last will and at a
//! clean stop), the subscriptions every side asks for, and the persistent outbox. Everything
//! medic publishes that matters is first committed to the outbox (in `store`) and leaves it only
//! when the broker has acknowledged it; the session hands outbox messages to rumqttc in a window
//! and deletes them on PubAck/PubComp.
//!
//! Incoming messages go to the handlers registered with [`Session::on_message`], in order, and
//! are acknowledged to the broker only when every handler has recorded what it needs (a handler
//! that cannot, because medic is stopping, leaves it for the broker to redeliver).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::link::{Backoff, Link, LinkEvent, Message};
use super::options::Connect;
use super::tracker::Tracker;
use crate::logging::RateLimited;
use crate::store::{OutboxLimit, Store};

/// Outbox messages handed to rumqttc at once; the rest wait in the outbox.
const WINDOW: usize = 64;

/// What a handler did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Recorded (or not for this handler): the broker may forget it.
    Done,
    /// Not taken (medic is stopping): leave it unacknowledged so the broker delivers it again.
    Leave,
}

pub type Handler = Box<dyn FnMut(&Message) -> Handled + Send>;

/// How the session is set up.
pub struct Parts {
    pub connect: Connect,
    pub backoff: Backoff,
    pub store: Store,
    pub qos: u8,
    pub status_topic: String,
    pub outbox_limit: OutboxLimit,
}

enum Ctl {
    /// The outbox has something new.
    Pump,
    /// What one side wants subscribed (replaces what it wanted before).
    Want {
        owner: &'static str,
        filters: BTreeSet<String>,
    },
    /// Publish without the outbox (when writing to it failed).
    Direct { topic: String, payload: Vec<u8> },
    /// Send what the outbox holds (up to `flush`), say `offline`, disconnect.
    Close {
        flush: Duration,
        done: oneshot::Sender<usize>,
    },
}

/// A cloneable handle for the sides that publish and subscribe.
#[derive(Clone)]
pub struct SessionHandle {
    ctl: mpsc::UnboundedSender<Ctl>,
    store: Store,
    outbox_limit: OutboxLimit,
    dropped: Arc<AtomicU64>,
}

impl SessionHandle {
    /// Commit a message to the outbox and have it sent.
    pub fn queue(&self, topic: &str, payload: &[u8], retain: bool) {
        match self
            .store
            .outbox_push(topic, payload, retain, self.outbox_limit)
        {
            Ok((_, dropped)) => self.queued(dropped),
            Err(e) => self.store.report(
                &format!("an MQTT message for {topic} cannot be queued, it is lost"),
                &e,
            ),
        }
    }

    /// Something was committed to the outbox (by the caller, in its own transaction), which
    /// dropped `dropped` old messages to stay within the limit.
    pub fn queued(&self, dropped: usize) {
        if dropped > 0 {
            let total = self.dropped.fetch_add(dropped as u64, Ordering::Relaxed) + dropped as u64;
            tracing::warn!(
                dropped,
                total_dropped = total,
                limit_messages = self.outbox_limit.messages,
                limit_bytes = self.outbox_limit.bytes,
                "MQTT outbox full: dropped the oldest messages"
            );
        }
        let _ = self.ctl.send(Ctl::Pump);
    }

    /// Publish without the outbox: for when committing to it failed.
    pub fn publish_direct(&self, topic: &str, payload: Vec<u8>) {
        let topic = topic.to_string();
        let _ = self.ctl.send(Ctl::Direct { topic, payload });
    }

    /// Replace the topic filters `owner` wants subscribed.
    pub fn want(&self, owner: &'static str, filters: BTreeSet<String>) {
        let _ = self.ctl.send(Ctl::Want { owner, filters });
    }

    pub fn outbox_limit(&self) -> OutboxLimit {
        self.outbox_limit
    }

    /// Flush the outbox for at most `flush`, publish `offline`, disconnect. Returns how many
    /// messages were left in the outbox (they go out after the next start).
    pub async fn close(&self, flush: Duration) -> usize {
        let (done, wait) = oneshot::channel();
        if self.ctl.send(Ctl::Close { flush, done }).is_err() {
            return 0;
        }
        wait.await.unwrap_or(0)
    }
}

pub struct Session {
    link: Link,
    store: Store,
    tracker: Tracker,
    qos: u8,
    status_topic: String,
    handlers: Vec<Handler>,
    wanted: BTreeMap<&'static str, BTreeSet<String>>,
    subscribed: BTreeSet<String>,
    up: bool,
    ctl: mpsc::UnboundedReceiver<Ctl>,
    max_message: usize,
    oversized: u64,
    oversized_log: RateLimited,
}

impl Session {
    /// Connect (in the background, with backoff) and return the session to register handlers
    /// on before it is started, and the handle the publishing sides use.
    pub fn new(parts: Parts) -> anyhow::Result<(Self, SessionHandle)> {
        let link = Link::start(&parts.connect, parts.backoff, "medic")?;
        let (tx, ctl) = mpsc::unbounded_channel();
        let handle = SessionHandle {
            ctl: tx,
            store: parts.store.clone(),
            outbox_limit: parts.outbox_limit,
            dropped: Arc::default(),
        };
        let session = Self {
            link,
            store: parts.store,
            tracker: Tracker::default(),
            qos: parts.qos,
            status_topic: parts.status_topic,
            handlers: Vec::new(),
            wanted: BTreeMap::new(),
            subscribed: BTreeSet::new(),
            up: false,
            ctl,
            max_message: parts.connect.max_message,
            oversized: 0,
            oversized_log: RateLimited::default(),
        };
        match session.store.outbox_len() {
            Ok(0) | Err(_) => {}
            Ok(n) => tracing::info!(
                messages = n,
                "MQTT outbox holds messages from before; they are sent once connected"
            ),
        }
        Ok((session, handle))
    }

    pub fn on_message(&mut self, handler: Handler) {
        self.handlers.push(handler);
    }

    /// Run until closed through a handle (or every handle is gone).
    pub async fn run(mut self) {
        loop {
            tokio::select! {
                event = self.link.events.recv() => match event {
                    Some(event) => self.on_link(event),
                    None => return,
                },
                ctl = self.ctl.recv() => match ctl {
                    Some(Ctl::Close { flush, done }) => {
                        let left = self.close(flush).await;
                        let _ = done.send(left);
                        return;
                    }
                    Some(ctl) => self.on_ctl(ctl),
                    None => return,
                },
            }
        }
    }

    fn on_ctl(&mut self, ctl: Ctl) {
        match ctl {
            Ctl::Pump => self.pump(),
            Ctl::Want { owner, filters } => {
                self.wanted.insert(owner, filters);
                self.subscribe();
            }
            Ctl::Direct { topic, payload } => {
                if self
                    .link
                    .client
                    .publish(&topic, self.qos, false, payload)
                    .is_ok()
                {
                    self.tracker.issue(None);
                }
            }
            Ctl::Close { .. } => unreachable!("handled in run"),
        }
    }

    async fn close(&mut self, flush: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + flush;
        while self.up && self.store.outbox_len().unwrap_or(0) > 0 {
            match tokio::time::timeout_at(deadline, self.link.events.recv()).await {
                Ok(Some(event)) => self.on_link(event),
                Ok(None) | Err(_) => break,
            }
        }
        let left = self.store.outbox_len().unwrap_or(0);
        if !self.up {
            return left;
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
        left
    }

    fn on_link(&mut self, event: LinkEvent) {
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
            LinkEvent::Message(m) => self.on_incoming(m),
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

    fn on_incoming(&mut self, m: Message) {
        if m.payload.len() > self.max_message {
            // Taken off the broker's hands, so it is not redelivered, and dropped.
            self.oversized += 1;
            let (total, bytes, limit) = (self.oversized, m.payload.len(), self.max_message);
            self.oversized_log.log(|suppressed| {
                tracing::warn!(
                    topic = ?m.topic,
                    bytes,
                    limit,
                    total_dropped = total,
                    suppressed,
                    "MQTT message larger than mqtt.max_message_size dropped"
                )
            });
            self.link.client.ack(&m);
            return;
        }
        let mut leave = false;
        for handler in &mut self.handlers {
            leave |= handler(&m) == Handled::Leave;
        }
        if !leave {
            self.link.client.ack(&m);
        }
    }

    fn delivered(&mut self, id: i64) {
        if let Err(e) = self.store.outbox_remove(id) {
            self.store
                .report("a delivered message cannot leave the outbox", &e);
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

    /// Subscribe to what is wanted and not yet subscribed; drop filters no longer wanted.
    fn subscribe(&mut self) {
        if !self.up {
            return;
        }
        let wanted: BTreeSet<String> = self.wanted.values().flatten().cloned().collect();
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
}
