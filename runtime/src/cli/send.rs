//! `medic send` and `medic send-config`: publish one request and wait for its result, ignoring
//! results for other task ids. Its own session is clean: it is a one-shot client.

use std::time::{Duration, Instant};

use crate::config::{BrokerUrl, MqttProtocol};
use crate::mqtt::lcm::Reply;
use crate::mqtt::link::{Backoff, Link, LinkEvent};
use crate::mqtt::options::Connect;

pub struct SendOptions {
    pub broker: String,
    pub credentials: Option<(String, String)>,
    pub ca_file: Option<std::path::PathBuf>,
    pub insecure: bool,
    pub topic: String,
    pub result_topic: String,
    pub qos: u8,
    pub protocol: MqttProtocol,
    pub timeout: Duration,
    pub task_id: u64,
    /// The request, as `lcm::command_payload` or `lcm::config_payload` make it.
    pub payload: Vec<u8>,
}

/// Why no result came.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("no result for task {task_id} within {timeout:?}{}", last_error.as_ref().map(|e| format!(" (broker: {e})")).unwrap_or_default())]
    Timeout {
        task_id: u64,
        timeout: Duration,
        last_error: Option<String>,
    },
    #[error("{0:#}")]
    Setup(anyhow::Error),
}

/// A task id unlikely to collide with another sender's: microseconds since the epoch.
pub fn fresh_task_id() -> u64 {
    crate::event::now_ns() / 1_000
}

pub async fn send(o: SendOptions) -> Result<Reply, SendError> {
    let deadline = Instant::now() + o.timeout;
    let connect = Connect {
        url: BrokerUrl::parse(&o.broker)
            .map_err(|e| SendError::Setup(anyhow::anyhow!("--broker: {e}")))?,
        protocol: o.protocol,
        client_id: format!("medic-send-{}-{}", std::process::id(), o.task_id),
        credentials: o.credentials.clone(),
        ca_file: o.ca_file.clone(),
        insecure: o.insecure,
        keepalive: Duration::from_secs(30),
        clean_session: true,
        last_will: None,
        max_message: 1 << 20,
    };
    let backoff = Backoff {
        first: Duration::from_millis(200),
        max: Duration::from_secs(2),
    };
    let mut link = Link::start(&connect, backoff, "medic send").map_err(SendError::Setup)?;
    let payload = o.payload.clone();
    let mut last_error = None;
    let mut sent = false;
    loop {
        let event = match tokio::time::timeout_at(deadline.into(), link.events.recv()).await {
            Ok(Some(e)) => e,
            Ok(None) | Err(_) => {
                return Err(SendError::Timeout {
                    task_id: o.task_id,
                    timeout: o.timeout,
                    last_error,
                });
            }
        };
        match event {
            LinkEvent::Connected { .. } => {
                let _ = link
                    .client
                    .subscribe(std::slice::from_ref(&o.result_topic), o.qos);
            }
            // Subscribed before publishing, so the result cannot slip past.
            LinkEvent::Subscribed if !sent => {
                sent = true;
                let _ = link.client.publish(&o.topic, o.qos, false, payload.clone());
            }
            LinkEvent::Message(p) => {
                link.client.ack(&p);
                if p.topic != o.result_topic {
                    continue;
                }
                let Ok(reply) = serde_json::from_slice::<Reply>(&p.payload) else {
                    continue;
                };
                if reply.task_id.as_u64() == Some(o.task_id) {
                    link.client.disconnect();
                    return Ok(reply);
                }
            }
            LinkEvent::Disconnected(e) => {
                last_error = Some(e);
                // A new clean session: subscribe and send again once back.
                sent = false;
            }
            _ => {}
        }
    }
}
