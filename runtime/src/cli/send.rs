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

#[derive(clap::Args)]
pub struct SendArgs {
    service: String,
    command: String,
    #[command(flatten)]
    to: BrokerArgs,
}

#[derive(clap::Args)]
pub struct SendConfigArgs {
    /// The collectd.conf to send.
    file: std::path::PathBuf,
    #[command(flatten)]
    to: BrokerArgs,
}

/// Where a request goes and how long to wait for its result.
#[derive(clap::Args)]
pub struct BrokerArgs {
    /// mqtt://host[:port] or mqtts://host[:port].
    #[arg(long)]
    broker: String,
    #[arg(long)]
    user: Option<String>,
    /// Visible to every local user in the process list: prefer --password-file or the
    /// MEDIC_MQTT_PASSWORD environment variable.
    #[arg(long, requires = "user", conflicts_with = "password_file")]
    password: Option<String>,
    /// A file whose first line is the password.
    #[arg(long, requires = "user")]
    password_file: Option<std::path::PathBuf>,
    /// Command topic; default `medic/<node>/command` with --node.
    #[arg(long, required_unless_present = "node")]
    topic: Option<String>,
    /// Result topic; default `medic/<node>/result` with --node.
    #[arg(long, required_unless_present = "node")]
    result_topic: Option<String>,
    /// The target medic's node name, for the default topics.
    #[arg(long)]
    node: Option<String>,
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// MQTT protocol version: 3.1.1 or 5.
    #[arg(long, value_enum, default_value_t = MqttProtocol::V311)]
    protocol: MqttProtocol,
    /// How long to wait for the result.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Task id to send (default: derived from the clock). Re-sending one gets its recorded result.
    #[arg(long)]
    task_id: Option<u64>,
    /// PEM CA bundle to verify an mqtts:// broker (default: the system roots).
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,
    /// Do not verify the broker's certificate.
    #[arg(long)]
    insecure: bool,
    /// Sign the request with this Ed25519 private key (PEM, `openssl genpkey -algorithm
    /// ed25519`), for a target with [mqtt.auth]; needs --node (the request names its target).
    #[arg(long, requires = "node")]
    key: Option<std::path::PathBuf>,
    /// The sender name the target knows the key by (`[mqtt.auth.senders.NAME]`); default: this
    /// machine's hostname.
    #[arg(long, requires = "key")]
    sender: Option<String>,
    /// How long a signed request stays valid (at most the target's mqtt.auth.max_validity).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, requires = "key")]
    valid_for: Duration,
}

/// Send the request `request` makes for a task id, signed when `--key` is given.
fn send_command(
    a: BrokerArgs,
    request: impl FnOnce(u64) -> serde_json::Map<String, serde_json::Value>,
) -> std::process::ExitCode {
    if a.password.is_some() {
        eprintln!(
            "medic: warning: --password is visible to other users in the process list; \
             use --password-file or MEDIC_MQTT_PASSWORD"
        );
    }
    let from_env = std::env::var("MEDIC_MQTT_PASSWORD").ok();
    let inline = a
        .password
        .as_ref()
        .or(from_env.as_ref().filter(|_| a.password_file.is_none()));
    let password = match crate::mqtt::options::password(inline, a.password_file.as_deref()) {
        Ok(p) => p,
        Err(e) => return super::fail(format!("{e:#}")),
    };
    let topic_for = |given: &Option<String>, kind: &str| {
        given
            .clone()
            .unwrap_or_else(|| format!("medic/{}/{kind}", a.node.as_deref().unwrap_or_default()))
    };
    let task_id = a.task_id.unwrap_or_else(fresh_task_id);
    let request = request(task_id);
    let payload = match &a.key {
        Some(key) => {
            let sender = a.sender.clone().unwrap_or_else(crate::config::hostname);
            match crate::mqtt::signed::Signer::load(&sender, key) {
                Ok(signer) => {
                    signer.sign(request, a.node.as_deref().unwrap_or_default(), a.valid_for)
                }
                Err(e) => return super::fail(format!("--key: {e:#}")),
            }
        }
        None => serde_json::to_vec(&request).expect("a request always serializes"),
    };
    let options = SendOptions {
        broker: a.broker.clone(),
        credentials: a.user.clone().map(|u| (u, password.unwrap_or_default())),
        ca_file: a.ca_file.clone(),
        insecure: a.insecure,
        topic: topic_for(&a.topic, "command"),
        result_topic: topic_for(&a.result_topic, "result"),
        qos: a.qos,
        protocol: a.protocol,
        timeout: a.timeout,
        task_id,
        payload,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return super::fail(format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(send(options)) {
        Ok(reply) => {
            print!("{}", reply.message);
            if !reply.message.is_empty() && !reply.message.ends_with('\n') {
                println!();
            }
            if reply.code != 0 {
                let meaning =
                    crate::mqtt::lcm::code::describe(reply.code).unwrap_or("command failed");
                eprintln!("medic: code {} ({meaning})", reply.code);
            }
            std::process::ExitCode::from(u8::try_from(reply.code).unwrap_or(1))
        }
        Err(e @ SendError::Timeout { .. }) => {
            eprintln!("medic: {e}");
            std::process::ExitCode::from(124)
        }
        Err(e) => super::fail(e),
    }
}

/// `medic send`: one remote command.
pub fn run_send(args: SendArgs) -> std::process::ExitCode {
    let (service, command) = (args.service, args.command);
    send_command(args.to, move |task_id| {
        crate::mqtt::lcm::command_request(task_id, &service, &command)
    })
}

/// `medic send-config`: one collectd.conf.
pub fn run_send_config(args: SendConfigArgs) -> std::process::ExitCode {
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => return super::fail(format!("cannot read {}: {e}", args.file.display())),
    };
    send_command(args.to, move |task_id| {
        crate::mqtt::lcm::config_request(task_id, &text)
    })
}
