//! The one TOML file an operator writes. Parse errors carry `file:line:col`; relative paths are
//! resolved against the config file's directory so a config works from any working directory.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub daemon: Daemon,
    #[serde(default)]
    pub rules: Rules,
    #[serde(default)]
    pub ingest: Ingest,
    /// Remote commands, results and rule topics over MQTT; off when absent.
    #[serde(default)]
    pub mqtt: Option<Mqtt>,
    /// The allow-list: `[services.<service>.commands]`. Nothing outside it can ever run.
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Daemon {
    /// This machine's name for remote commands and logs; default: the hostname.
    pub node: String,
    /// Rule state, compiled-rule cache, and (later) history and MQTT outbox live here.
    pub state_dir: PathBuf,
}

impl Default for Daemon {
    fn default() -> Self {
        Self {
            node: hostname(),
            state_dir: PathBuf::from("/var/lib/medic"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    /// Directory watched for `*.wasm` rules; a rule's name is its file stem.
    pub dir: PathBuf,
    /// Wall-clock budget of one call into a rule; past it the rule is marked faulted.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// Linear-memory cap of one rule instance.
    pub memory_limit_mib: u64,
    /// Events waiting for one rule; past it new events for that rule are dropped and counted.
    pub queue_capacity: usize,
    /// Most events handed to a rule in one call.
    pub max_batch: usize,
    /// First wait before re-instantiating a faulted rule; doubles up to `max_backoff`.
    #[serde(with = "humantime_serde")]
    pub fault_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Per-rule config tables, `[rules.config.<file stem>]`, handed to the rule's `init`.
    pub config: BTreeMap<String, toml::Table>,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/etc/medic/rules"),
            call_timeout: Duration::from_millis(50),
            memory_limit_mib: 64,
            queue_capacity: 16_384,
            max_batch: 256,
            fault_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            config: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ingest {
    /// collectd types.db files, as collectd's `TypesDB`; later files override earlier ones.
    pub types_db: Vec<PathBuf>,
    /// Interval assumed for values that do not state one (collectd's default `Interval`).
    #[serde(with = "humantime_serde")]
    pub default_interval: Duration,
    pub putval: Option<Putval>,
    pub network: Option<Network>,
    pub unixsock: Option<Unixsock>,
}

impl Default for Ingest {
    fn default() -> Self {
        Self {
            types_db: vec![PathBuf::from("/usr/share/collectd/types.db")],
            default_interval: Duration::from_secs(10),
            putval: None,
            network: None,
            unixsock: None,
        }
    }
}

/// Polling collectd's unixsock plugin (LISTVAL, then GETVAL).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unixsock {
    pub socket: PathBuf,
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Identifier globs to fetch (`*` does not cross `/`); default: everything.
    #[serde(default = "default_unixsock_patterns")]
    pub patterns: Vec<String>,
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_unixsock_patterns() -> Vec<String> {
    vec!["**".into()]
}

/// collectd's network plugin, receiving side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Addresses to listen on (IPv4 or IPv6); a multicast group address is joined.
    #[serde(default = "default_network_listen")]
    pub listen: Vec<std::net::SocketAddr>,
    #[serde(default)]
    pub security_level: SecurityLevelName,
    /// collectd AuthFile (`user: password` lines), re-read when it changes.
    #[serde(default)]
    pub auth_file: Option<PathBuf>,
    /// SO_RCVBUF in bytes; the kernel default loses datagrams in bursts.
    #[serde(default)]
    pub receive_buffer: Option<usize>,
}

fn default_network_listen() -> Vec<std::net::SocketAddr> {
    vec!["0.0.0.0:25826".parse().unwrap()]
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SecurityLevelName {
    #[default]
    None,
    Sign,
    Encrypt,
}

impl From<SecurityLevelName> for crate::ingest::network::SecurityLevel {
    fn from(l: SecurityLevelName) -> Self {
        match l {
            SecurityLevelName::None => Self::None,
            SecurityLevelName::Sign => Self::Sign,
            SecurityLevelName::Encrypt => Self::Encrypt,
        }
    }
}

/// A unix socket speaking collectd's text protocol (PUTVAL, PUTNOTIF).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Putval {
    pub socket: PathBuf,
    /// Octal file mode of the socket, as collectd's unixsock `SocketPerms`.
    #[serde(default = "default_socket_mode")]
    pub mode: String,
}

fn default_socket_mode() -> String {
    "0660".into()
}

/// The MQTT client: remote commands in lua-collectd-monitor's format, their results, a status
/// topic, and topics for rules. Topics may contain `{node}`, replaced by `daemon.node` (and, for
/// `run-remote`, by the target node).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mqtt {
    /// `mqtt://host[:port]` (1883) or `mqtts://host[:port]` (8883, TLS).
    pub broker: String,
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
    /// A task id seen within this window gets its recorded result again instead of a new run.
    #[serde(default = "default_dedupe_window", with = "humantime_serde")]
    pub dedupe_window: Duration,
    /// Refuse commands whose `timestamp` is older than this (code 0x1101); off when absent.
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// Messages kept while the broker is away; past it the oldest is dropped (logged, counted).
    #[serde(default = "default_outbox_limit")]
    pub outbox_limit: usize,
    /// How long a rule's `run-remote` waits for the other node's result.
    #[serde(default = "default_remote_timeout", with = "humantime_serde")]
    pub remote_timeout: Duration,
    /// Topic filters each rule may publish on: `rule-name = ["alerts/#"]`. Nothing otherwise.
    #[serde(default)]
    pub grants: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum MqttProtocol {
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    #[serde(rename = "5")]
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
fn default_dedupe_window() -> Duration {
    Duration::from_secs(24 * 3600)
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub commands: BTreeMap<String, Command>,
}

/// One allow-listed command. Written as an argv array (run without a shell), a string (run by
/// `/bin/sh -c` exactly as written), or a table with `run` and per-command limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub program: Program,
    pub timeout: Duration,
    /// Minimum time between two starts, whoever asks.
    pub cooldown: Duration,
    /// Bytes of stdout + stderr kept; the rest is drained and dropped.
    pub output_cap: usize,
    /// Time between SIGTERM and SIGKILL on timeout.
    pub kill_grace: Duration,
    /// Runs of this command allowed at once (whoever asks); 1 by default.
    pub concurrency: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Program {
    Argv(Vec<String>),
    Shell(String),
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Program::Argv(argv) => write!(f, "{argv:?}"),
            Program::Shell(s) => write!(f, "sh -c {s:?}"),
        }
    }
}

impl Command {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
    pub const DEFAULT_OUTPUT_CAP: usize = 64 * 1024;
    pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

    pub fn new(program: Program) -> Self {
        Self {
            program,
            timeout: Self::DEFAULT_TIMEOUT,
            cooldown: Duration::ZERO,
            output_cap: Self::DEFAULT_OUTPUT_CAP,
            kill_grace: Self::DEFAULT_KILL_GRACE,
            concurrency: 1,
        }
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CommandVisitor)
    }
}

struct CommandVisitor;

impl<'de> Visitor<'de> for CommandVisitor {
    type Value = Command;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a command: an argv array, a shell string, or a table with `run`")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Command, E> {
        Ok(Command::new(shell(s)?))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Command, A::Error> {
        let argv = Vec::<String>::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        Ok(Command::new(argv_program(argv)?))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Command, A::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            run: RunField,
            #[serde(default, with = "humantime_serde")]
            timeout: Option<Duration>,
            #[serde(default, with = "humantime_serde")]
            cooldown: Option<Duration>,
            #[serde(default)]
            output_cap: Option<usize>,
            #[serde(default, with = "humantime_serde")]
            kill_grace: Option<Duration>,
            #[serde(default)]
            concurrency: Option<usize>,
        }
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "`run` must be an argv array or a shell string")]
        enum RunField {
            Argv(Vec<String>),
            Shell(String),
        }
        let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
        let program = match t.run {
            RunField::Argv(argv) => argv_program(argv)?,
            RunField::Shell(s) => shell(&s)?,
        };
        let mut c = Command::new(program);
        if let Some(timeout) = t.timeout {
            if timeout.is_zero() {
                return Err(de::Error::custom("`timeout` must be more than 0"));
            }
            c.timeout = timeout;
        }
        c.cooldown = t.cooldown.unwrap_or(c.cooldown);
        c.output_cap = t.output_cap.unwrap_or(c.output_cap);
        c.kill_grace = t.kill_grace.unwrap_or(c.kill_grace);
        if let Some(n) = t.concurrency {
            if n == 0 {
                return Err(de::Error::custom("`concurrency` must be at least 1"));
            }
            c.concurrency = n;
        }
        Ok(c)
    }
}

fn shell<E: de::Error>(s: &str) -> Result<Program, E> {
    if s.trim().is_empty() {
        return Err(E::custom("a shell command must not be empty"));
    }
    Ok(Program::Shell(s.to_string()))
}

fn argv_program<E: de::Error>(argv: Vec<String>) -> Result<Program, E> {
    match argv.first() {
        None => Err(E::custom("an argv array needs at least the program")),
        Some(p) if p.is_empty() => Err(E::custom("the program (argv[0]) must not be empty")),
        Some(_) => Ok(Program::Argv(argv)),
    }
}

/// A config error an operator can act on: where, and what is wrong, in plain words.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the config: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{col}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, path, base)
    }

    /// Parse `text` (read from `path`, used in messages), resolving relative paths against `base`.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                col,
                message: e.message().trim_end().to_string(),
            }
        })?;
        config.resolve_paths(base);
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut self.daemon.state_dir);
        abs(&mut self.rules.dir);
        self.ingest.types_db.iter_mut().for_each(abs);
        if let Some(p) = &mut self.ingest.putval {
            abs(&mut p.socket);
        }
        if let Some(u) = &mut self.ingest.unixsock {
            abs(&mut u.socket);
        }
        if let Some(n) = &mut self.ingest.network
            && let Some(f) = &mut n.auth_file
        {
            abs(f);
        }
        if let Some(m) = &mut self.mqtt {
            m.password_file.iter_mut().for_each(abs);
            m.ca_file.iter_mut().for_each(abs);
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.daemon.node.trim().is_empty() {
            return Err("daemon.node must not be empty".into());
        }
        if self.rules.call_timeout.is_zero() {
            return Err("rules.call_timeout must be more than 0".into());
        }
        if self.rules.memory_limit_mib == 0 {
            return Err("rules.memory_limit_mib must be more than 0".into());
        }
        if self.rules.queue_capacity == 0 || self.rules.max_batch == 0 {
            return Err("rules.queue_capacity and rules.max_batch must be more than 0".into());
        }
        if let Some(p) = &self.ingest.putval {
            u32::from_str_radix(&p.mode, 8).map_err(|_| {
                format!(
                    "ingest.putval.mode `{}` is not an octal file mode like \"0660\"",
                    p.mode
                )
            })?;
        }
        if let Some(u) = &self.ingest.unixsock {
            if u.interval.is_zero() {
                return Err("ingest.unixsock.interval must be more than 0".into());
            }
            for p in &u.patterns {
                globset::Glob::new(p)
                    .map_err(|e| format!("ingest.unixsock.patterns: `{p}` is not a glob: {e}"))?;
            }
        }
        if let Some(n) = &self.ingest.network {
            if n.listen.is_empty() {
                return Err("ingest.network.listen needs at least one address".into());
            }
            if n.security_level != SecurityLevelName::None && n.auth_file.is_none() {
                return Err(
                    "ingest.network.security_level sign/encrypt needs ingest.network.auth_file"
                        .into(),
                );
            }
        }
        if let Some(m) = &self.mqtt {
            m.validate()?;
        }
        for (name, service) in &self.services {
            if service.commands.is_empty() {
                return Err(format!("services.{name} has no commands"));
            }
        }
        Ok(())
    }

    /// The state database path.
    pub fn state_db(&self) -> PathBuf {
        self.daemon.state_dir.join("medic.db")
    }

    /// Where compiled rules are cached.
    pub fn cache_dir(&self) -> PathBuf {
        self.daemon.state_dir.join("cache")
    }
}

impl Mqtt {
    fn validate(&self) -> Result<(), String> {
        crate::mqtt::options::BrokerUrl::parse(&self.broker)
            .map_err(|e| format!("mqtt.broker: {e}"))?;
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
        if self.outbox_limit == 0 {
            return Err("mqtt.outbox_limit must be more than 0".into());
        }
        for (key, topic) in [
            ("command_topic", &self.command_topic),
            ("result_topic", &self.result_topic),
            ("status_topic", &self.status_topic),
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
        Ok(())
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("medic.toml"), Path::new("/etc/medic"))
    }

    #[test]
    fn full_example_parses_with_defaults_and_resolved_paths() {
        let c = parse(
            r#"
            [daemon]
            node = "web1"
            state_dir = "state"
            [rules]
            dir = "/opt/rules"
            call_timeout = "20ms"
            [rules.config.threshold]
            below = 5
            [ingest.putval]
            socket = "putval.sock"
            [services.hello.commands]
            exec = "echo Hello World!"
            argv = ["echo", "hi"]
            slow = { run = ["sleep", "9"], timeout = "2s", cooldown = "1m", output_cap = 10 }
            "#,
        )
        .unwrap();
        assert_eq!(c.daemon.state_dir, Path::new("/etc/medic/state"));
        assert_eq!(c.rules.dir, Path::new("/opt/rules"));
        assert_eq!(c.rules.call_timeout, Duration::from_millis(20));
        assert_eq!(c.rules.memory_limit_mib, 64);
        assert_eq!(
            c.ingest.putval.unwrap().socket,
            Path::new("/etc/medic/putval.sock")
        );
        let hello = &c.services["hello"].commands;
        assert_eq!(
            hello["exec"].program,
            Program::Shell("echo Hello World!".into())
        );
        assert_eq!(hello["exec"].timeout, Duration::from_secs(60));
        assert_eq!(
            hello["argv"].program,
            Program::Argv(vec!["echo".into(), "hi".into()])
        );
        let slow = &hello["slow"];
        assert_eq!(slow.timeout, Duration::from_secs(2));
        assert_eq!(slow.cooldown, Duration::from_secs(60));
        assert_eq!(slow.output_cap, 10);
        assert_eq!(c.rules.config["threshold"]["below"].as_integer(), Some(5));
    }

    #[test]
    fn errors_have_line_and_column() {
        let err = parse("[daemon]\nnode = \"a\"\nbogus = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("medic.toml:3:1: unknown field `bogus`"),
            "{err}"
        );

        let err = parse("[rules]\ncall_timeout = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("medic.toml:2:16: "), "{err}");
        assert!(err.contains("soon"), "{err}");

        let err = parse("[services.s.commands]\nx = []\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("medic.toml:2:5: an argv array needs at least the program"),
            "{err}"
        );

        let err = parse("[services.s.commands]\nx = 5\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("2:5: invalid type: integer `5`, expected a command"),
            "{err}"
        );

        let err = parse("[services.s.commands]\nx = { run = \"a\", tiemout = \"1s\" }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `tiemout`"), "{err}");

        let err = parse("[daemon\n").unwrap_err().to_string();
        assert!(err.starts_with("medic.toml:1:"), "{err}");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let err = parse("[rules]\nmemory_limit_mib = 0\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "medic.toml: rules.memory_limit_mib must be more than 0"
        );
        let err = parse("[services.s]\ncommands = {}\n")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "medic.toml: services.s has no commands");
    }
}
