//! Drives one rumqttc event loop on its own task: reconnects with backoff (rumqttc has none),
//! logs each change of connection state once, and turns rumqttc's events into the few that
//! medic acts on. The event loop is never cancelled mid-poll, which it does not tolerate.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Outgoing, Packet, Publish, QoS, StateError,
};
use tokio::sync::mpsc;

#[derive(Debug)]
pub enum LinkEvent {
    Connected {
        session_present: bool,
    },
    Disconnected(String),
    Message(Publish),
    /// A publish went out with this packet id.
    Sent(u16),
    /// The broker acknowledged this packet id (PubAck for QoS 1, PubComp for QoS 2).
    Acked(u16),
    Subscribed,
}

/// Topic of the placeholder publish that re-arms a QoS 2 packet id (see `complete_pubrel`).
const PLACEHOLDER: &str = "$medic/placeholder";

/// A client and the events of its connection.
pub struct Link {
    pub client: AsyncClient,
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

impl Link {
    pub fn start(options: rumqttc::MqttOptions, backoff: Backoff, what: &'static str) -> Self {
        let broker = format!(
            "{}:{}",
            options.broker_address().0,
            options.broker_address().1
        );
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        // Small request/response messages: Nagle's algorithm with delayed ACKs would add
        // ~40 ms to each round trip.
        let mut network = eventloop.network_options();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        let (tx, events) = mpsc::channel(1024);
        let connected = Arc::new(AtomicBool::new(false));
        tokio::spawn(drive(
            eventloop,
            tx,
            connected.clone(),
            backoff,
            broker,
            what,
        ));
        Self {
            client,
            events,
            connected,
        }
    }
}

async fn drive(
    mut eventloop: EventLoop,
    tx: mpsc::Sender<LinkEvent>,
    connected: Arc<AtomicBool>,
    backoff: Backoff,
    broker: String,
    what: &'static str,
) {
    let mut wait = backoff.first;
    let mut last_error: Option<String> = None;
    loop {
        let event = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                connected.store(true, Ordering::SeqCst);
                wait = backoff.first;
                tracing::info!(
                    broker,
                    session_resumed = ack.session_present,
                    "{what}: connected to the MQTT broker"
                );
                last_error = None;
                LinkEvent::Connected {
                    session_present: ack.session_present,
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == PLACEHOLDER => continue,
            Ok(Event::Incoming(Packet::Publish(p))) => LinkEvent::Message(p),
            Ok(Event::Incoming(Packet::PubAck(a))) => LinkEvent::Acked(a.pkid),
            Ok(Event::Incoming(Packet::PubComp(c))) => LinkEvent::Acked(c.pkid),
            Ok(Event::Incoming(Packet::SubAck(_))) => LinkEvent::Subscribed,
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => LinkEvent::Sent(pkid),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                connected.store(false, Ordering::SeqCst);
                return;
            }
            Ok(_) => continue,
            // Every client handle is gone: the owner has stopped.
            Err(ConnectionError::RequestsDone) => return,
            Err(ConnectionError::MqttState(StateError::Unsolicited(pkid))) => {
                connected.store(false, Ordering::SeqCst);
                complete_pubrel(&mut eventloop, pkid);
                continue;
            }
            Err(e) => {
                connected.store(false, Ordering::SeqCst);
                let message = e.to_string();
                if last_error.as_deref() != Some(&message) {
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
                last_error = Some(message.clone());
                if tx.send(LinkEvent::Disconnected(message)).await.is_err() {
                    return;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(backoff.max);
                continue;
            }
        };
        if tx.send(event).await.is_err() {
            return;
        }
    }
}

/// rumqttc forgets the packet ids of incoming QoS 2 messages on every disconnect, and treats
/// the PUBREL a broker resends for one after the session resumes as a fatal error: without this
/// it would reconnect forever. Re-arm the id with a placeholder publish (never acknowledged:
/// acks are manual), so the resent PUBREL is answered with the PUBCOMP the broker waits for.
/// The message itself was already handled (and its task id recorded) before the disconnect.
fn complete_pubrel(eventloop: &mut EventLoop, pkid: u16) {
    tracing::info!(
        pkid,
        "MQTT: completing a QoS 2 delivery from before the reconnect (PUBREL for packet {pkid})"
    );
    let mut placeholder = Publish::new(PLACEHOLDER, QoS::ExactlyOnce, Vec::new());
    placeholder.pkid = pkid;
    let _ = eventloop
        .state
        .handle_incoming_packet(rumqttc::Incoming::Publish(placeholder));
}
