//! collectd's text protocol on a unix socket (parsed by `collectd_codec::text`): `PUTVAL` and
//! `PUTNOTIF` into the engine, and the queries `GETVAL`, `LISTVAL` and `FLUSH` answered from the
//! series table, with collectd's own replies.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::sync::Arc;

use collectd_codec::text::{LatestValues, Parsed, parse_line, query, success_reply};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::config::Putval as PutvalConfig;
use crate::event::{Ingested, now_ns};
use crate::logging::{RateLimited, Untrusted};
use crate::metrics::{SourceCounters, metrics};
use crate::shutdown::Shutdown;
use crate::types_db::TypesDb;

/// Longest line accepted; longer ones are answered with an error and the connection closed.
const MAX_LINE: u64 = collectd_codec::text::MAX_LINE as u64;

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
