//! collectd's text protocol on a unix socket: `PUTVAL` and `PUTNOTIF`, and the queries
//! `GETVAL`, `LISTVAL` and `FLUSH` ([`query`]), with collectd's own replies, so `collectdctl`,
//! `collectd-nagios`, the exec plugin's conventions and `nc -U` one-liners work as they do
//! against collectd's unixsock plugin.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::config::Putval as PutvalConfig;
use crate::event::{
    DsType, Identifier, Ingested, LatestValues, MAX_MESSAGE_LEN, MAX_NAME_LEN, MAX_VALUES,
    Notification, Sample, Severity, ValueList, now_ns, secs_to_ns,
};
use crate::logging::{RateLimited, Untrusted};
use crate::metrics::{SourceCounters, metrics};
use crate::shutdown::Shutdown;
use crate::types_db::TypesDb;

/// Longest line accepted; longer ones are answered with an error and the connection closed.
const MAX_LINE: u64 = 64 * 1024;

/// What a line asks for, or the reply it gets.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    Values(Vec<ValueList>),
    Notification(Notification),
    /// `GETVAL`, `LISTVAL` or `FLUSH`: answered from the series table.
    Query(query::Query),
}

/// Parse one protocol line. `Err` holds the reply text after `-1 `.
pub fn parse_line(
    line: &str,
    types: &TypesDb,
    default_interval_ns: u64,
    now: u64,
) -> Result<Parsed, String> {
    let tokens = tokenize(line)?;
    let Some((command, args)) = tokens.split_first() else {
        return Err("Unknown command: ".into());
    };
    if let Some(query) = query::parse(command, args) {
        return query.map(Parsed::Query);
    }
    match command.to_ascii_uppercase().as_str() {
        "PUTVAL" => putval(args, types, default_interval_ns, now).map(Parsed::Values),
        "PUTNOTIF" => putnotif(args).map(Parsed::Notification),
        _ => Err(format!("Unknown command: {command}")),
    }
}

/// Split on whitespace; double quotes group (with `\` escapes) and may start mid-token, as in
/// `message="disk full"`.
fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut chars = line.trim().chars().peekable();
    while chars.peek().is_some() {
        let mut token = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            if c != '"' {
                token.push(c);
                continue;
            }
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(e) => token.push(e),
                        None => return Err("Unterminated quoted string.".into()),
                    },
                    Some(c) => token.push(c),
                    None => return Err("Unterminated quoted string.".into()),
                }
            }
        }
        tokens.push(token);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
    }
    Ok(tokens)
}

fn putval(
    args: &[String],
    types: &TypesDb,
    default_interval_ns: u64,
    now: u64,
) -> Result<Vec<ValueList>, String> {
    let Some((ident_text, rest)) = args.split_first() else {
        return Err("Missing identifier and/or value-list.".into());
    };
    let identifier = Identifier::parse(ident_text)
        .ok_or_else(|| format!("Cannot parse identifier `{ident_text}'."))?;
    check_lengths(&identifier)?;
    let mut interval = default_interval_ns;
    let mut lists = Vec::new();
    for token in rest {
        if let Some((key, value)) = token.split_once('=') {
            if key.eq_ignore_ascii_case("interval") {
                interval = value
                    .parse::<f64>()
                    .ok()
                    .and_then(secs_to_ns)
                    .filter(|&ns| ns > 0)
                    .ok_or_else(|| format!("Cannot parse option interval: `{value}'."))?;
            }
            // `meta:…` and unknown options are ignored, as collectd does.
            continue;
        }
        lists.push(token.as_str());
    }
    if lists.is_empty() {
        return Err("Missing identifier and/or value-list.".into());
    }
    let count = lists[0].split(':').count().saturating_sub(1);
    if count > MAX_VALUES {
        return Err(format!("Too many values ({count}; at most {MAX_VALUES})."));
    }
    let sources = types
        .sources_or_fallback(&identifier.type_, count)
        .ok_or_else(|| format!("1 Type `{}' isn't defined.", identifier.type_))?;
    lists
        .into_iter()
        .map(|text| {
            let mut fields = text.split(':');
            let time = match fields.next() {
                Some("N") => now,
                Some(t) => t
                    .parse::<f64>()
                    .ok()
                    .and_then(secs_to_ns)
                    .filter(|&t| t > 0)
                    .ok_or(())?,
                None => return Err(()),
            };
            let samples = fields
                .zip(sources.iter())
                .map(|(v, ds)| sample(v, ds.ds_type))
                .collect::<Result<Vec<_>, ()>>()?;
            if samples.len() != sources.len() || text.split(':').count() != sources.len() + 1 {
                return Err(());
            }
            Ok(ValueList {
                identifier: identifier.clone(),
                time,
                interval,
                samples,
            })
        })
        .collect::<Result<_, ()>>()
        .map_err(|()| "Parsing the values string failed.".into())
}

/// collectd keeps identifier parts in fixed buffers; a longer one is refused, never cut.
fn check_lengths(identifier: &Identifier) -> Result<(), String> {
    match identifier.too_long() {
        Some((part, length)) => Err(format!(
            "Identifier {part} too long ({length} bytes; at most {MAX_NAME_LEN})."
        )),
        None => Ok(()),
    }
}

fn sample(text: &str, ds_type: DsType) -> Result<Sample, ()> {
    Ok(match ds_type {
        DsType::Gauge if text == "U" => Sample::Gauge(f64::NAN),
        DsType::Gauge => Sample::Gauge(text.parse().map_err(drop)?),
        DsType::Derive => Sample::Derive(text.parse().map_err(drop)?),
        DsType::Counter => Sample::Counter(text.parse().map_err(drop)?),
        DsType::Absolute => Sample::Absolute(text.parse().map_err(drop)?),
    })
}

fn putnotif(args: &[String]) -> Result<Notification, String> {
    let mut severity = None;
    let mut time = None;
    let mut message = None;
    let mut identifier = Identifier::default();
    for token in args {
        let (key, value) = token.split_once('=').ok_or("Malformed option.")?;
        match key.to_ascii_lowercase().as_str() {
            "severity" => {
                severity = Some(match value.to_ascii_lowercase().as_str() {
                    "failure" => Severity::Failure,
                    "warning" => Severity::Warning,
                    "okay" => Severity::Okay,
                    _ => return Err("Error parsing option `severity'".into()),
                })
            }
            "time" => {
                time = Some(
                    value
                        .parse::<f64>()
                        .ok()
                        .and_then(secs_to_ns)
                        .ok_or("Error parsing option `time'")?,
                )
            }
            "message" => message = Some(value.to_string()),
            "host" => identifier.host = value.into(),
            "plugin" => identifier.plugin = value.into(),
            "plugin_instance" => identifier.plugin_instance = value.into(),
            "type" => identifier.type_ = value.into(),
            "type_instance" => identifier.type_instance = value.into(),
            // Typed meta data (`s:key=…`, `i:key=…`) and unknown options are ignored.
            _ => {}
        }
    }
    check_lengths(&identifier)?;
    let message = message
        .filter(|m| !m.is_empty())
        .ok_or("No message or message of length 0 given.")?;
    if message.len() > MAX_MESSAGE_LEN {
        return Err(format!(
            "Message too long ({} bytes; at most {MAX_MESSAGE_LEN}).",
            message.len()
        ));
    }
    let severity = severity.ok_or("Option `severity' missing.")?;
    let time = time.filter(|&t| t > 0).ok_or("Option `time' missing.")?;
    Ok(Notification {
        severity,
        time,
        message,
        identifier,
    })
}

/// The success reply collectd gives for a line (a query's is its answer).
pub fn success_reply(parsed: &Parsed) -> String {
    match parsed {
        Parsed::Values(v) if v.len() == 1 => "0 Success: 1 value has been dispatched.".into(),
        Parsed::Values(v) => format!("0 Success: {} values have been dispatched.", v.len()),
        Parsed::Notification(_) => "0 Success".into(),
        Parsed::Query(_) => "0 Success".into(),
    }
}

/// Serves the socket until shutdown. Each connection is handled on its own task, which ends
/// at shutdown too (so the ingest queue closes and the engine can drain). Connections are
/// capped (`max_clients`) and closed when idle (`idle_timeout`), so idle clients can never use
/// up the descriptors a recovery command needs.
pub struct PutvalServer {
    listener: UnixListener,
    types: Arc<TypesDb>,
    default_interval_ns: u64,
    sink: mpsc::Sender<Ingested>,
    clients: Arc<tokio::sync::Semaphore>,
    max_clients: usize,
    idle_timeout: std::time::Duration,
    counters: SourceCounters,
    /// What `GETVAL` and `LISTVAL` read.
    latest: Arc<dyn LatestValues>,
}

/// No series at all: until the daemon plugs the series table in.
struct NoSeries;

impl LatestValues for NoSeries {
    fn getval(&self, _: &str) -> Option<Vec<(String, f64)>> {
        None
    }

    fn listval(&self) -> Vec<(u64, String)> {
        Vec::new()
    }
}

/// Refusal reasons of this source.
pub const REFUSAL_REASONS: &[&str] = &["invalid_line", "line_too_long", "too_many_clients"];

impl PutvalServer {
    /// Bind the configured socket, replacing a stale socket file left by a previous run (never
    /// a socket something still answers on, nor another kind of file), and give it its mode.
    pub fn bind(
        config: &PutvalConfig,
        types: Arc<TypesDb>,
        default_interval_ns: u64,
        sink: mpsc::Sender<Ingested>,
    ) -> io::Result<Self> {
        let socket = config.socket.as_path();
        if let Ok(meta) = std::fs::symlink_metadata(socket) {
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", socket.display()),
                ));
            }
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "something already answers on {} (another medic?); not replacing it",
                        socket.display()
                    ),
                ));
            }
            std::fs::remove_file(socket)?;
        }
        if let Some(dir) = socket.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Bound under a temporary name and given its mode before it takes the real one: a
        // client that connected while the socket still had the umask's mode would stay
        // connected after the chmod.
        let mut staging = socket.as_os_str().to_owned();
        staging.push(format!(".{}.new", std::process::id()));
        let staging = std::path::PathBuf::from(staging);
        let _ = std::fs::remove_file(&staging);
        let listener = UnixListener::bind(&staging)?;
        let placed =
            std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(config.mode))
                .and_then(|()| std::fs::rename(&staging, socket));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&staging);
            return Err(e);
        }
        Ok(Self {
            listener,
            types,
            default_interval_ns,
            sink,
            clients: Arc::new(tokio::sync::Semaphore::new(config.max_clients)),
            max_clients: config.max_clients,
            idle_timeout: config.idle_timeout,
            counters: metrics().source("putval", socket.display().to_string()),
            latest: Arc::new(NoSeries),
        })
    }

    /// Answer `GETVAL` and `LISTVAL` from `latest` (the series table).
    pub fn with_latest(mut self, latest: Arc<dyn LatestValues>) -> Self {
        self.latest = latest;
        self
    }

    pub async fn serve(self, mut shutdown: Shutdown) {
        let shared = Arc::new(self);
        let mut accept_errors = RateLimited::default();
        let mut refusals = RateLimited::default();
        let mut refused = 0u64;
        loop {
            let accepted = tokio::select! {
                a = shared.listener.accept() => a,
                _ = shutdown.wait() => return,
            };
            match accepted {
                Ok((stream, _)) => {
                    let Ok(permit) = shared.clients.clone().try_acquire_owned() else {
                        refused += 1;
                        shared.counters.refused("too_many_clients");
                        let max = shared.max_clients;
                        refusals.log(|suppressed| {
                            tracing::warn!(
                                max_clients = max,
                                total_refused = refused,
                                suppressed,
                                "PUTVAL client refused: too many clients"
                            )
                        });
                        let reply =
                            format!("-1 Too many clients ({max}; ingest.putval.max_clients).\n");
                        // Best effort and never waiting: the client is closed either way.
                        let _ = stream.try_write(reply.as_bytes());
                        continue;
                    };
                    let s = shared.clone();
                    let mut shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        tokio::select! {
                            r = s.connection(stream) => if let Err(e) = r {
                                tracing::debug!("putval connection ended: {e}");
                            },
                            _ = shutdown.wait() => {}
                        }
                    });
                }
                Err(e) => {
                    accept_errors.log(|suppressed| {
                        tracing::warn!(suppressed, "putval socket accept failed: {e}")
                    });
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn connection(&self, stream: UnixStream) -> io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let mut line = String::new();
        loop {
            line.clear();
            let mut limited = (&mut reader).take(MAX_LINE + 1);
            let read = limited.read_line(&mut line);
            let Ok(n) = tokio::time::timeout(self.idle_timeout, read).await else {
                tracing::debug!("putval client idle for {:?}: closed", self.idle_timeout);
                return Ok(());
            };
            let n = n?;
            if n == 0 {
                return Ok(());
            }
            if n as u64 > MAX_LINE {
                self.counters.refused("line_too_long");
                write.write_all(b"-1 Line too long.\n").await?;
                return Ok(());
            }
            let text = line.trim_end_matches(['\n', '\r']);
            if text.trim().is_empty() {
                continue;
            }
            let reply = match parse_line(text, &self.types, self.default_interval_ns, now_ns()) {
                Ok(Parsed::Query(q)) => query::answer(&q, &self.types, &*self.latest),
                Ok(parsed) => {
                    let reply = success_reply(&parsed);
                    if self.dispatch(parsed).await {
                        format!("{reply}\n")
                    } else {
                        "-1 medic is shutting down.\n".into()
                    }
                }
                Err(e) => {
                    self.counters.refused("invalid_line");
                    tracing::debug!(line = text, "putval refused: {}", Untrusted(&e));
                    format!("-1 {e}\n")
                }
            };
            write.write_all(reply.as_bytes()).await?;
        }
    }

    /// Hand over to the engine. Waiting here only slows this one client: the engine itself never
    /// waits on a rule.
    async fn dispatch(&self, parsed: Parsed) -> bool {
        match parsed {
            Parsed::Values(lists) => {
                for list in lists {
                    if self.sink.send(Ingested::Values(list)).await.is_err() {
                        return false;
                    }
                    self.counters.values.inc();
                }
                true
            }
            Parsed::Query(_) => true,
            Parsed::Notification(n) => {
                let sent = self.sink.send(Ingested::Notification(n)).await.is_ok();
                if sent {
                    self.counters.notifications.inc();
                }
                sent
            }
        }
    }
}

pub mod query;

#[cfg(test)]
mod tests;
