//! `[mqtt]`: the broker, credentials, topics and delivery settings.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The MQTT client: remote commands in lua-collectd-monitor's format, their results, a status
/// topic, and topics for rules. Topics may contain `{node}`, replaced by `daemon.node` (and, for
/// `run-remote`, by the target node).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mqtt {
    /// `mqtt://host[:port]` (1883) or `mqtts://host[:port]` (8883, TLS).
    pub broker: BrokerUrl,
    #[serde(default)]
    pub protocol: MqttProtocol,
    /// Default `medic-<node>`. Fixed, so that a restart resumes the broker session.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// A file holding the password (trailing newline ignored); keeps secrets out of the config.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM CA bundle to verify the broker with, instead of the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Skip certificate verification (`mqtts://` only). Never the default.
    #[serde(default)]
    pub insecure: bool,
    #[serde(default = "default_keepalive", with = "humantime_serde")]
    pub keepalive: Duration,
    /// Off by default: a restart resumes the session, so commands sent meanwhile still arrive.
    #[serde(default)]
    pub clean_session: bool,
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// First wait before reconnecting; doubles up to `max_reconnect_interval`.
    #[serde(default = "default_reconnect", with = "humantime_serde")]
    pub reconnect_interval: Duration,
    #[serde(default = "default_max_reconnect", with = "humantime_serde")]
    pub max_reconnect_interval: Duration,
    #[serde(default = "default_command_topic")]
    pub command_topic: String,
    #[serde(default = "default_result_topic")]
    pub result_topic: String,
    /// Retained `online`, and `offline` as the last will.
    #[serde(default = "default_status_topic")]
    pub status_topic: String,
    /// Where rules' notifications are published (JSON), for people and other systems.
    #[serde(default = "default_notify_topic")]
    pub notify_topic: String,
    /// A task id seen within this window gets its recorded result again instead of a new run.
    #[serde(default = "default_dedupe_window", with = "humantime_serde")]
    pub dedupe_window: Duration,
    /// Refuse commands whose `timestamp` is older than this (code 0x1101); off when absent.
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// With `max_age`: how far in the future a command's `timestamp` may be (clocks differ);
    /// further is refused like a stale command.
    #[serde(default = "default_max_clock_skew", with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// Largest message payload medic takes or sends; a larger incoming one is acknowledged,
    /// dropped and counted (MQTT 5 tells the broker not to send it at all).
    #[serde(default = "default_max_message_size")]
    pub max_message_size: usize,
    /// Messages kept while the broker is away; past it the oldest is dropped (logged, counted).
    #[serde(default = "default_outbox_limit")]
    pub outbox_limit: usize,
    /// Bytes of payload the outbox keeps; past it the oldest messages are dropped too.
    #[serde(default = "default_outbox_max_bytes")]
    pub outbox_max_bytes: usize,
    /// Finished task ids kept for dedupe (the oldest go first; running ones stay).
    #[serde(default = "default_dedupe_limit")]
    pub dedupe_limit: usize,
    /// How long a rule's `run-remote` waits for the other node's result.
    #[serde(default = "default_remote_timeout", with = "humantime_serde")]
    pub remote_timeout: Duration,
    /// Topic filters each rule may publish on: `rule-name = ["alerts/#"]`. Nothing otherwise.
    #[serde(default)]
    pub grants: BTreeMap<String, Vec<String>>,
    /// Signed remote commands (Ed25519): who may send what.
    #[serde(default)]
    pub auth: Auth,
}

/// `[mqtt.auth]`: signed remote commands. Off by default, so lua-collectd-monitor's senders
/// keep working; a signed request is verified whenever one arrives.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// Refuse every remote command (and config replacement) that is not signed by a sender
    /// below.
    #[serde(default)]
    pub require_signed: bool,
    /// This node's own Ed25519 private key (PEM, `openssl genpkey -algorithm ed25519`): signs
    /// its `run-remote` requests, as sender `daemon.node`. Must not be readable by others.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Longest a signed request may be valid for (`expires` minus now): past it, refused.
    #[serde(default = "default_max_validity", with = "humantime_serde")]
    pub max_validity: Duration,
    /// Who may sign, by name (the envelope's `sender`).
    #[serde(default)]
    pub senders: BTreeMap<String, Sender>,
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            require_signed: false,
            key_file: None,
            max_validity: default_max_validity(),
            senders: BTreeMap::new(),
        }
    }
}

/// `[mqtt.auth.senders.NAME]`: a sender's public key and what it may ask for.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sender {
    /// Its Ed25519 public key (PEM, `openssl pkey -pubout`).
    pub public_key_file: PathBuf,
    /// `service/command` pairs it may run; `service/*` for every command of a service, `*` for
    /// every command. Nothing when empty.
    #[serde(default)]
    pub commands: Vec<String>,
    /// Whether it may replace collectd's config (still only with `[collectd] allow_remote`).
    #[serde(default)]
    pub replace_config: bool,
}

impl Sender {
    /// Whether `service`/`command` is within `commands`.
    pub fn may_run(&self, service: &str, command: &str) -> bool {
        self.commands
            .iter()
            .any(|scope| match scope.split_once('/') {
                _ if scope == "*" => true,
                Some((s, "*")) => s == service,
                Some((s, c)) => s == service && c == command,
                None => false,
            })
    }
}

fn default_max_validity() -> Duration {
    Duration::from_secs(600)
}

/// The MQTT protocol version, spelled the same in medic.toml and on the command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
pub enum MqttProtocol {
    #[default]
    #[serde(rename = "3.1.1")]
    #[value(name = "3.1.1")]
    V311,
    #[serde(rename = "5")]
    #[value(name = "5")]
    V5,
}

fn default_keepalive() -> Duration {
    Duration::from_secs(30)
}
fn default_qos() -> u8 {
    2
}
fn default_reconnect() -> Duration {
    Duration::from_secs(1)
}
fn default_max_reconnect() -> Duration {
    Duration::from_secs(60)
}
fn default_command_topic() -> String {
    "medic/{node}/command".into()
}
fn default_result_topic() -> String {
    "medic/{node}/result".into()
}
fn default_status_topic() -> String {
    "medic/{node}/status".into()
}
fn default_notify_topic() -> String {
    "medic/{node}/notify".into()
}
fn default_dedupe_window() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_max_message_size() -> usize {
    1 << 20
}
fn default_max_clock_skew() -> Duration {
    Duration::from_secs(30)
}
fn default_outbox_max_bytes() -> usize {
    64 << 20
}
fn default_dedupe_limit() -> usize {
    100_000
}
fn default_outbox_limit() -> usize {
    10_000
}
fn default_remote_timeout() -> Duration {
    Duration::from_secs(60)
}

impl Mqtt {
    /// `template` with `{node}` replaced.
    pub fn topic_for(template: &str, node: &str) -> String {
        template.replace("{node}", node)
    }
}

impl Mqtt {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.qos > 2 {
            return Err(format!("mqtt.qos must be 0, 1 or 2, not {}", self.qos));
        }
        if self.password.is_some() && self.password_file.is_some() {
            return Err("mqtt: set either password or password_file, not both".into());
        }
        if (self.password.is_some() || self.password_file.is_some()) && self.username.is_none() {
            return Err("mqtt: a password needs a username".into());
        }
        if self.keepalive < Duration::from_secs(5) && !self.keepalive.is_zero() {
            return Err("mqtt.keepalive must be 0 (off) or at least 5s".into());
        }
        if self.reconnect_interval.is_zero() {
            return Err("mqtt.reconnect_interval must be more than 0".into());
        }
        if self.max_message_size == 0 || self.max_message_size > 256 << 20 {
            return Err("mqtt.max_message_size must be between 1 and 268435456 bytes".into());
        }
        if self.outbox_limit == 0 || self.outbox_max_bytes == 0 || self.dedupe_limit == 0 {
            return Err(
                "mqtt.outbox_limit, mqtt.outbox_max_bytes and mqtt.dedupe_limit must be more than 0"
                    .into(),
            );
        }
        for (key, topic) in [
            ("command_topic", &self.command_topic),
            ("result_topic", &self.result_topic),
            ("status_topic", &self.status_topic),
            ("notify_topic", &self.notify_topic),
        ] {
            let t = Self::topic_for(topic, "node");
            if t.is_empty() || !rumqttc::valid_topic(&t) {
                return Err(format!(
                    "mqtt.{key} `{topic}` is not a topic (no wildcards, not empty)"
                ));
            }
        }
        for (rule, filters) in &self.grants {
            for f in filters {
                if f.is_empty() || !rumqttc::valid_filter(f) {
                    return Err(format!("mqtt.grants.{rule}: `{f}` is not a topic filter"));
                }
            }
        }
        if self.auth.max_validity.is_zero() {
            return Err("mqtt.auth.max_validity must be more than 0".into());
        }
        if self.auth.require_signed && self.auth.senders.is_empty() {
            return Err(
                "mqtt.auth.require_signed needs at least one [mqtt.auth.senders.NAME]".into(),
            );
        }
        for (name, sender) in &self.auth.senders {
            for scope in &sender.commands {
                let valid = scope == "*"
                    || scope
                        .split_once('/')
                        .is_some_and(|(s, c)| !s.is_empty() && !c.is_empty() && !s.contains('*'));
                if !valid {
                    return Err(format!(
                        "mqtt.auth.senders.{name}.commands: `{scope}` is not `service/command`, \
                         `service/*` or `*`"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `mqtt://host[:port]` or `mqtts://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl BrokerUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("`{url}` is not a URL like mqtt://host:1883"))?;
        let tls = match scheme {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            other => {
                return Err(format!(
                    "unsupported scheme `{other}` in `{url}` (use mqtt:// or mqtts://)"
                ));
            }
        };
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') || authority.contains('@') {
            return Err(format!(
                "`{url}`: only host and port belong in the URL (credentials go in username/password)"
            ));
        }
        let (host, port) = match authority.rsplit_once(':') {
            // `[::1]:1883`, `host:1883`; a bare IPv6 address needs brackets.
            Some((h, p)) if !h.is_empty() && (!h.contains(':') || h.starts_with('[')) => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| format!("`{url}`: port `{p}` is not a number"))?;
                (h, port)
            }
            _ => (authority, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("`{url}` has no host"));
        }
        Ok(Self {
            host: host.to_string(),
            port,
            tls,
        })
    }
}

impl<'de> Deserialize<'de> for BrokerUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}
