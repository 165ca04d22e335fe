//! The one TOML file an operator writes. Parse errors carry `file:line:col`; relative paths are
//! resolved against the config file's directory so a config works from any working directory.

mod collectd;
mod command;
pub mod file_ref;
mod mqtt;
mod probe;
mod sinks;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

pub use collectd::Collectd;
pub use command::{Command, Program, Service};
pub use mqtt::{Auth, BrokerUrl, Mqtt, MqttProtocol, Sender};
pub use probe::{CHECK as PROBE_COMMAND, Probe};
pub use sinks::{FileSink, Format, HttpSink, RuleGrant, Sink, filter_within};

#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    #[serde(default)]
    pub history: History,
    #[serde(default)]
    pub policy: Policy,
    #[serde(default)]
    pub notify: Notify,
    /// The read-only HTTP endpoints; off unless `[http] listen` is set.
    #[serde(default)]
    pub http: Option<Http>,
    /// Checks run on a schedule; each is also service `probe-<name>` of the allow-list.
    #[serde(default)]
    pub probes: BTreeMap<String, Probe>,
    /// The local collectd whose config may be replaced over MQTT; refused when absent.
    #[serde(default)]
    pub collectd: Option<Collectd>,
    /// Where records rules emit go, by name.
    #[serde(default)]
    pub sinks: BTreeMap<String, Sink>,
}

/// `GET /status`, `/history`, `/metrics`, `/feed.atom` and the page at `/`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// Loopback by default: anything wider needs `token_file`.
    #[serde(default = "default_http_listen")]
    pub listen: std::net::SocketAddr,
    /// A file holding the bearer token every request must carry (`Authorization: Bearer …`).
    pub token_file: Option<PathBuf>,
    /// A connection must send a whole request head within this long of opening (or of its
    /// previous response), token or not: a client that trickles bytes cannot hold a slot.
    #[serde(default = "default_header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    /// A connection on which no byte is sent or read for this long is closed: a client that
    /// stops reading an answer. (Between requests `header_timeout` already applies.)
    #[serde(default = "default_http_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A request still being answered after this long gets 503 and its work is dropped.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Connections open at once; one more is closed as soon as it is accepted (and counted in
    /// `medic_http_connections_refused_total`). Lowered at start to what the open-files limit
    /// leaves beside the PUTVAL clients and the commands.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_http_listen() -> std::net::SocketAddr {
    ([127, 0, 0, 1], 9105).into()
}

fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_http_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_connections() -> usize {
    256
}

/// Where rules' notifications go besides the log, the history and MQTT.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// A collectd unixsock plugin's socket: each notification is sent as `PUTNOTIF`.
    pub collectd_socket: Option<PathBuf>,
}

/// Limits across all commands (each command has its own too).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Commands running at once, all services together.
    pub max_concurrent: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self { max_concurrent: 16 }
    }
}

/// The audit history in `state_dir/medic.db`, kept within both bounds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct History {
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    pub max_rows: u64,
    /// A `[sinks.*]` every audit record also goes to, as a JSON object.
    pub forward: Option<String>,
}

impl Default for History {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_rows: 100_000,
            forward: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Daemon {
    /// This machine's name for remote commands and logs; default: the hostname.
    pub node: String,
    /// Rule state, compiled-rule cache, MQTT outbox and task ids live here.
    pub state_dir: PathBuf,
    /// At shutdown, how long running commands may finish before their process groups are
    /// killed.
    #[serde(with = "humantime_serde")]
    pub stop_timeout: Duration,
}

impl Default for Daemon {
    fn default() -> Self {
        Self {
            node: hostname(),
            state_dir: PathBuf::from("/var/lib/medic"),
            stop_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// What each rule may use beyond commands: `[rules.grants.<file stem>] sinks = [...]`.
    pub grants: BTreeMap<String, RuleGrant>,
    /// Where the config file is: files that rule configs name by relative paths are there.
    #[serde(skip)]
    pub config_dir: PathBuf,
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
            grants: BTreeMap::new(),
            config_dir: PathBuf::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// Series known at once; values of a new series beyond it are refused and counted.
    pub max_series: usize,
    /// How many of its intervals a value's time may lie ahead of medic's clock.
    pub max_future_intervals: u32,
    /// A series not heard from for this many of its intervals is forgotten (collectd's
    /// `Timeout`): its memory comes back, and a rule sees it as new if it returns.
    pub series_timeout: u32,
}

impl Default for Ingest {
    fn default() -> Self {
        Self {
            types_db: vec![PathBuf::from("/usr/share/collectd/types.db")],
            default_interval: Duration::from_secs(10),
            putval: None,
            network: None,
            unixsock: None,
            max_series: 100_000,
            max_future_intervals: 3,
            series_timeout: 2,
        }
    }
}

/// Polling collectd's unixsock plugin (LISTVAL, then GETVAL).
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Addresses to listen on (IPv4 or IPv6); a multicast group address is joined.
    #[serde(default = "default_network_listen")]
    pub listen: Vec<std::net::SocketAddr>,
    #[serde(default)]
    pub security_level: SecurityLevel,
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

/// What the network receiver accepts, as collectd's `SecurityLevel`.
pub use collectd_codec::network::SecurityLevel;

/// A unix socket speaking collectd's text protocol (PUTVAL, PUTNOTIF).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Putval {
    pub socket: PathBuf,
    /// File mode of the socket, written in octal as collectd's unixsock `SocketPerms`
    /// (`"0660"`).
    #[serde(default = "default_socket_mode", deserialize_with = "octal_mode")]
    pub mode: u32,
    /// Clients connected at once; one more gets `-1 Too many clients` and is closed.
    #[serde(default = "default_max_clients")]
    pub max_clients: usize,
    /// A client that sends nothing for this long is disconnected.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
}

fn default_max_clients() -> usize {
    128
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}

fn default_socket_mode() -> u32 {
    0o660
}

fn octal_mode<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let text = String::deserialize(d)?;
    u32::from_str_radix(&text, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| {
            de::Error::custom(format!("`{text}` is not an octal file mode like \"0660\""))
        })
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
        config.enlist_probes();
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut self.daemon.state_dir);
        if let Some(c) = &mut self.collectd {
            abs(&mut c.config);
            abs(&mut c.pid_file);
        }
        for sink in self.sinks.values_mut() {
            match sink {
                Sink::File(f) => abs(&mut f.path),
                Sink::Http(h) => h.token_file.iter_mut().for_each(abs),
            }
        }
        abs(&mut self.rules.dir);
        self.rules.config_dir = base.to_path_buf();
        self.ingest.types_db.iter_mut().for_each(abs);
        if let Some(p) = &mut self.ingest.putval {
            abs(&mut p.socket);
        }
        if let Some(u) = &mut self.ingest.unixsock {
            abs(&mut u.socket);
        }
        self.notify.collectd_socket.iter_mut().for_each(abs);
        if let Some(h) = &mut self.http {
            h.token_file.iter_mut().for_each(abs);
        }
        if let Some(n) = &mut self.ingest.network
            && let Some(f) = &mut n.auth_file
        {
            abs(f);
        }
        if let Some(m) = &mut self.mqtt {
            m.password_file.iter_mut().for_each(abs);
            m.ca_file.iter_mut().for_each(abs);
            m.auth.key_file.iter_mut().for_each(abs);
            for sender in m.auth.senders.values_mut() {
                abs(&mut sender.public_key_file);
            }
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
        if self.policy.max_concurrent == 0 {
            return Err("policy.max_concurrent must be more than 0".into());
        }
        if self.history.max_rows == 0 || self.history.max_age.is_zero() {
            return Err("history.max_age and history.max_rows must be more than 0".into());
        }
        if self.ingest.max_series == 0
            || self.ingest.max_future_intervals == 0
            || self.ingest.series_timeout == 0
        {
            return Err("ingest.max_series, ingest.max_future_intervals and \
                 ingest.series_timeout must be more than 0"
                .into());
        }
        if let Some(p) = &self.ingest.putval
            && (p.max_clients == 0 || p.idle_timeout.is_zero())
        {
            return Err(
                "ingest.putval.max_clients and ingest.putval.idle_timeout must be more than 0"
                    .into(),
            );
        }
        if let Some(u) = &self.ingest.unixsock
            && u.interval.is_zero()
        {
            return Err("ingest.unixsock.interval must be more than 0".into());
        }
        if let Some(n) = &self.ingest.network {
            if n.listen.is_empty() {
                return Err("ingest.network.listen needs at least one address".into());
            }
            if n.security_level != SecurityLevel::None && n.auth_file.is_none() {
                return Err(
                    "ingest.network.security_level sign/encrypt needs ingest.network.auth_file"
                        .into(),
                );
            }
        }
        if let Some(m) = &self.mqtt {
            m.validate()?;
        }
        if let Some(h) = &self.http
            && (h.header_timeout.is_zero()
                || h.idle_timeout.is_zero()
                || h.request_timeout.is_zero()
                || h.max_connections == 0)
        {
            return Err(
                "http.header_timeout, http.idle_timeout, http.request_timeout and \
                 http.max_connections must be more than 0"
                    .into(),
            );
        }
        if let Some(h) = &self.http
            && h.request_timeout >= h.idle_timeout
        {
            return Err(
                "http.request_timeout must be shorter than http.idle_timeout (an answer being \
                 worked on moves no bytes, and would count as idle)"
                    .into(),
            );
        }
        if let Some(h) = &self.http
            && !h.listen.ip().is_loopback()
            && h.token_file.is_none()
        {
            return Err(format!(
                "http.listen {} is reachable from other hosts: set http.token_file (a bearer \
                 token) or listen on loopback behind a reverse proxy",
                h.listen
            ));
        }
        for (name, service) in &self.services {
            if service.commands.is_empty() {
                return Err(format!("services.{name} has no commands"));
            }
        }
        probe::validate(&self.probes, &self.services)?;
        if let Some(c) = &self.collectd
            && c.allow_remote
            && self.mqtt.as_ref().and_then(|m| m.max_age).is_none()
        {
            return Err(
                "collectd.allow_remote needs mqtt.max_age: without it a captured \
                 replacement request could be sent again once the dedupe window has passed"
                    .into(),
            );
        }
        if let Some(sink) = &self.history.forward
            && !self.sinks.contains_key(sink)
        {
            return Err(format!(
                "history.forward names `{sink}`, which is not a [sinks.*]"
            ));
        }
        for (rule, grant) in &self.rules.grants {
            if let Some(bad) = grant
                .subscribe
                .iter()
                .find(|f| f.is_empty() || !rumqttc::valid_filter(f))
            {
                return Err(format!(
                    "rules.grants.{rule}.subscribe: `{bad}` is not an MQTT topic filter"
                ));
            }
            if let Some(unknown) = grant.sinks.iter().find(|s| !self.sinks.contains_key(*s)) {
                return Err(format!(
                    "rules.grants.{rule}.sinks names `{unknown}`, which is not a [sinks.*]"
                ));
            }
        }
        for (name, sink) in &self.sinks {
            // A name is a directory under state_dir/sinks and a metric label.
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "sinks.\"{name}\": a sink name may have only A-Z a-z 0-9 - _"
                ));
            }
            let queue = match sink {
                Sink::File(f) => f.queue,
                Sink::Http(h) => {
                    if !(h.url.starts_with("http://") || h.url.starts_with("https://"))
                        || h.url.parse::<http::Uri>().is_err()
                    {
                        return Err(format!(
                            "sinks.{name}.url `{}` is not an http:// or https:// URL",
                            h.url
                        ));
                    }
                    if h.max_batch == 0 || h.timeout.is_zero() || h.retention_max_bytes == 0 {
                        return Err(format!(
                            "sinks.{name}: max_batch, timeout and retention_max_bytes must be \
                             more than 0"
                        ));
                    }
                    h.queue
                }
            };
            if queue == 0 {
                return Err(format!("sinks.{name}.queue must be more than 0"));
            }
        }
        Ok(())
    }

    /// Put each probe on the allow-list as service `probe-<name>`, command `check`: the
    /// executor, the gate and the status page then treat a probe's runs as any other
    /// command's.
    pub fn enlist_probes(&mut self) {
        for (name, p) in &self.probes {
            let commands = BTreeMap::from([(probe::CHECK.to_string(), p.command.clone())]);
            self.services
                .insert(Probe::service(name), Service { commands });
        }
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

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// This machine's name: the default `daemon.node`, and `medic send --key`'s sender.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests;
