//! Drives one rumqttc event loop (MQTT 3.1.1 or 5) on its own task: reconnects with backoff
//! (rumqttc has none), logs each change of connection state once, and turns rumqttc's events
//! into the few medic acts on, the same for both protocol versions. The event loop is never
//! cancelled mid-poll, which it does not tolerate.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::{Outgoing, v5};
use tokio::sync::mpsc;

use super::options::Connect;
use crate::config::MqttProtocol;

/// A message received, with what is needed to acknowledge it.
#[derive(Debug)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    /// The broker is redelivering it (it may have been handled already).
    pub dup: bool,
    raw: Raw,
}

#[cfg(test)]
impl Message {
    /// A message as if received over MQTT 3.1.1 (for tests of the handlers).
    pub(crate) fn for_test(topic: &str, payload: &[u8]) -> Self {
        let raw = rumqttc::Publish::new(topic, rumqttc::QoS::AtLeastOnce, payload.to_vec());
        Self {
            topic: topic.to_string(),
            payload: payload.to_vec(),
            dup: false,
            raw: Raw::V4(raw),
        }
    }
}

#[derive(Debug)]
enum Raw {
    V4(rumqttc::Publish),
    V5(Box<p5::Publish>),
}

#[derive(Debug)]
pub enum LinkEvent {
    Connected {
        session_present: bool,
    },
    Disconnected(String),
    Message(Message),
    /// A publish went out with this packet id.
    Sent(u16),
    /// The broker acknowledged this packet id (PubAck for QoS 1, PubComp for QoS 2).
    Acked(u16),
    Subscribed,
}

/// A handle to make requests; they leave in the order they are made.
#[derive(Clone)]
pub enum Client {
    V4(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

fn qos4(level: u8) -> rumqttc::QoS {
    super::options::qos(level)
}

fn qos5(level: u8) -> v5::mqttbytes::QoS {
    match level {
        0 => v5::mqttbytes::QoS::AtMostOnce,
        1 => v5::mqttbytes::QoS::AtLeastOnce,
        _ => v5::mqttbytes::QoS::ExactlyOnce,
    }
}

/// The request channel is full (or the event loop is gone); the caller retries later.
#[derive(Debug, thiserror::Error)]
#[error("the MQTT request queue is full or closed")]
pub struct Busy;

impl Client {
    pub fn publish(
        &self,
        topic: &str,
        qos: u8,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), Busy> {
        match self {
            Client::V4(c) => c
                .try_publish(topic, qos4(qos), retain, payload)
                .map_err(|_| Busy),
            Client::V5(c) => c
                .try_publish(topic, qos5(qos), retain, payload)
                .map_err(|_| Busy),
        }
    }

    pub fn subscribe(&self, filters: &[String], qos: u8) -> Result<(), Busy> {
        match self {
            Client::V4(c) => c
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|f| rumqttc::SubscribeFilter::new(f.clone(), qos4(qos))),
                )
                .map_err(|_| Busy),
            Client::V5(c) => c
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|f| p5::Filter::new(f.clone(), qos5(qos))),
                )
                .map_err(|_| Busy),
        }
    }

    pub fn unsubscribe(&self, filter: &str) {
        let _ = match self {
            Client::V4(c) => c.try_unsubscribe(filter).map_err(drop),
            Client::V5(c) => c.try_unsubscribe(filter).map_err(drop),
        };
    }

    /// Acknowledge a message (acks are manual: medic acks once it has recorded what it needs).
    pub fn ack(&self, m: &Message) {
        let _ = match (self, &m.raw) {
            (Client::V4(c), Raw::V4(p)) => c.try_ack(p).map_err(drop),
            (Client::V5(c), Raw::V5(p)) => c.try_ack(p).map_err(drop),
            _ => Ok(()),
        };
    }

    pub fn disconnect(&self) {
        let _ = match self {
            Client::V4(c) => c.try_disconnect().map_err(drop),
            Client::V5(c) => c.try_disconnect().map_err(drop),
        };
    }
}

/// A client and the events of its connection.
pub struct Link {
    pub client: Client,
    pub events: mpsc::Receiver<LinkEvent>,
    /// False from the moment a connection fails until the next ConnAck: requests made while
    /// down are not sent until then, so the owner holds them back.
    pub connected: Arc<AtomicBool>,
}

/// Backoff between connection attempts.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

/// Topic of the placeholder publish that re-arms a QoS 2 packet id (see `log_pubrel_rearm`).
const PLACEHOLDER: &str = "$medic/placeholder";

impl Link {
    pub fn start(connect: &Connect, backoff: Backoff, what: &'static str) -> anyhow::Result<Self> {
        let (tx, events) = mpsc::channel(1024);
        let connected = Arc::new(AtomicBool::new(false));
        let health = Health {
            connected: connected.clone(),
            backoff,
            wait: backoff.first,
            last_error: None,
            broker: format!("{}:{}", connect.url.host, connect.url.port),
            what,
            tx,
        };
        let client = match connect.protocol {
            MqttProtocol::V311 => {
                let (client, mut eventloop) =
                    rumqttc::AsyncClient::new(connect.options_v4()?, 1024);
                // Small request/response messages: Nagle's algorithm with delayed ACKs would
                // add ~40 ms to each round trip. (v5 sets it in its options.)
                let mut network = eventloop.network_options();
                network.set_tcp_nodelay(true);
                eventloop.set_network_options(network);
                tokio::spawn(drive(eventloop, health));
                Client::V4(client)
            }
            MqttProtocol::V5 => {
                let (client, eventloop) = v5::AsyncClient::new(connect.options_v5()?, 1024);
                tokio::spawn(drive(eventloop, health));
                Client::V5(client)
            }
        };
        Ok(Self {
            client,
            events,
            connected,
        })
    }
}

/// Connection state and its reporting, shared by both protocol drivers.
struct Health {
    connected: Arc<AtomicBool>,
    backoff: Backoff,
    wait: Duration,
    last_error: Option<String>,
    broker: String,
    what: &'static str,
    tx: mpsc::Sender<LinkEvent>,
}

impl Health {
    fn up(&mut self, session_present: bool) -> LinkEvent {
        self.connected.store(true, Ordering::SeqCst);
        crate::metrics::metrics().mqtt_connected.set(1);
        self.wait = self.backoff.first;
        self.last_error = None;
        tracing::info!(
            broker = self.broker,
            session_resumed = session_present,
            "{}: connected to the MQTT broker",
            self.what
        );
        LinkEvent::Connected { session_present }
    }

    fn lost(&self) {
        self.connected.store(false, Ordering::SeqCst);
        crate::metrics::metrics().mqtt_connected.set(0);
    }

    /// Report a failed connection and wait before the next try. False when the owner is gone.
    async fn down(&mut self, message: String) -> bool {
        self.lost();
        let (broker, what, wait) = (&self.broker, self.what, self.wait);
        if self.last_error.as_deref() != Some(&message) {
            tracing::warn!(
                broker,
                "{what}: MQTT connection down: {message}; retrying in {wait:?}"
            );
        } else {
            tracing::debug!(
                broker,
                "{what}: still down: {message}; retrying in {wait:?}"
            );
        }
        self.last_error = Some(message.clone());
        if self
            .tx
            .send(LinkEvent::Disconnected(message))
            .await
            .is_err()
        {
            return false;
        }
        tokio::time::sleep(wait).await;
        self.wait = (wait * 2).min(self.backoff.max);
        true
    }

    async fn send(&self, event: LinkEvent) -> bool {
        self.tx.send(event).await.is_ok()
    }
}

/// rumqttc forgets the packet ids of incoming QoS 2 messages on every disconnect, and treats
/// the PUBREL a broker resends for one after the session resumes as a fatal error: without this
/// it would reconnect forever. Re-arm the id with a placeholder publish (never acknowledged:
/// acks are manual), so the resent PUBREL is answered with the PUBCOMP the broker waits for.
/// The message itself was handled (and its task id recorded) before the disconnect.
fn log_pubrel_rearm(pkid: u16) {
    tracing::info!(
        pkid,
        "MQTT: completing a QoS 2 delivery from before the reconnect (PUBREL for packet {pkid})"
    );
}

/// What one poll of either protocol's event loop comes to.
enum Polled {
    Connected {
        session_present: bool,
    },
    Event(LinkEvent),
    /// Nothing medic acts on.
    Skip,
    /// Our own DISCONNECT went out: the owner is stopping.
    Closed,
    /// Every client handle is gone.
    Done,
    /// The broker resent PUBREL for a QoS 2 id rumqttc forgot (see `log_pubrel_rearm`).
    Unsolicited(u16),
    Failed(String),
}

/// The two rumqttc event loops (3.1.1 and 5), seen the same way, so one loop drives both.
trait EventLoop: Send + 'static {
    fn next(&mut self) -> impl Future<Output = Polled> + Send;
    /// Re-arm packet id `pkid` with a placeholder QoS 2 publish, never acknowledged.
    fn rearm(&mut self, pkid: u16);
}

impl EventLoop for rumqttc::EventLoop {
    async fn next(&mut self) -> Polled {
        use rumqttc::{ConnectionError, Event, Packet, StateError};
        match self.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => Polled::Connected {
                session_present: ack.session_present,
            },
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == PLACEHOLDER => Polled::Skip,
            Ok(Event::Incoming(Packet::Publish(p))) => Polled::Event(LinkEvent::Message(Message {
                topic: p.topic.clone(),
                payload: p.payload.to_vec(),
                dup: p.dup,
                raw: Raw::V4(p),
            })),
            Ok(Event::Incoming(Packet::PubAck(a))) => Polled::Event(LinkEvent::Acked(a.pkid)),
            Ok(Event::Incoming(Packet::PubComp(c))) => Polled::Event(LinkEvent::Acked(c.pkid)),
            Ok(Event::Incoming(Packet::SubAck(_))) => Polled::Event(LinkEvent::Subscribed),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Polled::Event(LinkEvent::Sent(pkid)),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => Polled::Closed,
            Ok(_) => Polled::Skip,
            Err(ConnectionError::RequestsDone) => Polled::Done,
            Err(ConnectionError::MqttState(StateError::Unsolicited(pkid))) => {
                Polled::Unsolicited(pkid)
            }
            Err(e) => Polled::Failed(e.to_string()),
        }
    }

    fn rearm(&mut self, pkid: u16) {
        let mut placeholder =
            rumqttc::Publish::new(PLACEHOLDER, rumqttc::QoS::ExactlyOnce, Vec::new());
        placeholder.pkid = pkid;
        let _ = self
            .state
            .handle_incoming_packet(rumqttc::Packet::Publish(placeholder));
    }
}

impl EventLoop for v5::EventLoop {
    async fn next(&mut self) -> Polled {
        use v5::{ConnectionError, Event, StateError};
        match self.poll().await {
            Ok(Event::Incoming(p5::Packet::ConnAck(ack))) => Polled::Connected {
                session_present: ack.session_present,
            },
            Ok(Event::Incoming(p5::Packet::Publish(p))) if p.topic == PLACEHOLDER.as_bytes() => {
                Polled::Skip
            }
            Ok(Event::Incoming(p5::Packet::Publish(p))) => {
                Polled::Event(LinkEvent::Message(Message {
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    payload: p.payload.to_vec(),
                    dup: p.dup,
                    raw: Raw::V5(Box::new(p)),
                }))
            }
            Ok(Event::Incoming(p5::Packet::PubAck(a))) => Polled::Event(LinkEvent::Acked(a.pkid)),
            Ok(Event::Incoming(p5::Packet::PubComp(c))) => Polled::Event(LinkEvent::Acked(c.pkid)),
            Ok(Event::Incoming(p5::Packet::SubAck(_))) => Polled::Event(LinkEvent::Subscribed),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Polled::Event(LinkEvent::Sent(pkid)),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => Polled::Closed,
            Ok(_) => Polled::Skip,
            Err(ConnectionError::RequestsDone) => Polled::Done,
            Err(ConnectionError::MqttState(StateError::Unsolicited(pkid))) => {
                Polled::Unsolicited(pkid)
            }
            Err(e) => Polled::Failed(e.to_string()),
        }
    }

    fn rearm(&mut self, pkid: u16) {
        let mut placeholder = p5::Publish::new(
            PLACEHOLDER,
            v5::mqttbytes::QoS::ExactlyOnce,
            Vec::new(),
            None,
        );
        placeholder.pkid = pkid;
        let _ = self
            .state
            .handle_incoming_packet(p5::Packet::Publish(placeholder));
    }
}

/// The one client loop, for both protocol versions.
async fn drive(mut eventloop: impl EventLoop, mut health: Health) {
    loop {
        let event = match eventloop.next().await {
            Polled::Connected { session_present } => health.up(session_present),
            Polled::Event(event) => event,
            Polled::Skip => continue,
            Polled::Closed => return health.lost(),
            Polled::Done => return,
            Polled::Unsolicited(pkid) => {
                health.lost();
                log_pubrel_rearm(pkid);
                eventloop.rearm(pkid);
                continue;
            }
            Polled::Failed(message) => {
                if !health.down(message).await {
                    return;
                }
                continue;
            }
        };
        if !health.send(event).await {
            return;
        }
    }
}
