//! Receives collectd's network plugin traffic (UDP). Per listen address, a reader thread
//! ([`super::reader`]) drains the socket in batches and a decoding task turns the datagrams
//! into value lists and notifications for the engine. Never blocks: when the engine queue is
//! full, values are dropped and counted (UDP has no way to slow the sender); datagrams lost
//! before decoding are counted apart (`medic_network_datagrams_dropped_total`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use tokio::sync::mpsc;

use super::reader::{self, Datagrams, InFlight};
use super::socket::bind;
use crate::config::Network as NetworkConfig;
use crate::event::{Ingested, now_ns};
use crate::logging::{RateLimited, RateLimitedByKind, Untrusted};
use crate::metrics::{SourceCounters, metrics};
use crate::shutdown::Shutdown;
use collectd_codec::network::{Credentials, DecodeError, Decoded, SecurityLevel, decode};

/// Refusal reasons of this source (decode errors, and parts that decode but make no value).
pub const REFUSAL_REASONS: &[&str] = &[
    "malformed",
    "unsigned",
    "encrypted_at_none",
    "unknown_user",
    "bad_signature",
    "decrypt_failed",
    "invalid_part",
];

/// Batches between a reader and its decoder (bounded in bytes by [`reader::MAX_IN_FLIGHT`]).
const HANDOFF: usize = 4096;

/// collectd's AuthFile, re-read when its modification time changes (checked at most once a
/// second, so a busy receiver does not stat the file per datagram).
pub struct AuthFile {
    path: Option<PathBuf>,
    credentials: Credentials,
    modified: Option<SystemTime>,
    checked: Instant,
}

impl AuthFile {
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let mut me = Self {
            path: path.map(Path::to_path_buf),
            credentials: Credentials::default(),
            modified: None,
            checked: Instant::now(),
        };
        if let Some(p) = &me.path {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read auth file {}", p.display()))?;
            me.credentials = Credentials::parse(&text);
            me.modified = std::fs::metadata(p).and_then(|m| m.modified()).ok();
        }
        Ok(me)
    }

    pub fn credentials(&mut self) -> &Credentials {
        if let Some(path) = &self.path
            && self.checked.elapsed() >= Duration::from_secs(1)
        {
            self.checked = Instant::now();
            let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            if modified != self.modified {
                match std::fs::read_to_string(path) {
                    Ok(text) => {
                        self.credentials = Credentials::parse(&text);
                        self.modified = modified;
                        tracing::info!(file = %path.display(), "auth file re-read");
                    }
                    Err(e) => tracing::warn!(
                        file = %path.display(),
                        "cannot re-read auth file, keeping the previous users: {e}"
                    ),
                }
            }
        }
        &self.credentials
    }
}

/// Bind every configured address and start its reader thread and decoding task; both end
/// when `shutdown` fires (the task once the reader is gone and what it read is decoded).
pub fn start(
    config: &NetworkConfig,
    sink: mpsc::Sender<Ingested>,
    shutdown: Shutdown,
) -> anyhow::Result<(Vec<SocketAddr>, Vec<tokio::task::JoinHandle<()>>)> {
    let level = config.security_level;
    let mut bound = Vec::new();
    let mut tasks = Vec::new();
    for &addr in &config.listen {
        let socket = bind(addr, config.receive_buffer)?;
        let local = socket.local_addr()?;
        bound.push(local);
        let auth = AuthFile::load(config.auth_file.as_deref())?;
        let counters = metrics().source("network", local.to_string());
        let (handoff, batches) = mpsc::channel(HANDOFF);
        let (recycle, spares) = reader::recycling();
        let in_flight = InFlight::default();
        reader::spawn(
            socket,
            handoff,
            spares,
            in_flight.clone(),
            counters.clone(),
            shutdown.clone(),
        )
        .with_context(|| format!("cannot start the reader of {local}"))?;
        let decoder = Decoder {
            level,
            auth,
            sink: sink.clone(),
            counters,
            in_flight,
            recycle,
            decoded: Vec::new(),
            refusals: RateLimitedByKind::default(),
            drops: RateLimited::default(),
        };
        tasks.push(tokio::spawn(decoder.run(batches)));
    }
    Ok((bound, tasks))
}

/// A datagram's sender in a log line (`?` when the kernel gave none).
struct Sender(Option<SocketAddr>);

impl std::fmt::Display for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => f.write_str("?"),
        }
    }
}

/// Turns one listener's datagrams into events for the engine.
struct Decoder {
    level: SecurityLevel,
    auth: AuthFile,
    sink: mpsc::Sender<Ingested>,
    counters: SourceCounters,
    in_flight: InFlight,
    /// Where decoded batches go back to the reader, to be filled again.
    recycle: reader::Recycle,
    /// Reused for every datagram.
    decoded: Vec<Decoded>,
    refusals: RateLimitedByKind<Option<std::mem::Discriminant<DecodeError>>>,
    drops: RateLimited,
}

impl Decoder {
    /// Until the reader is gone (at shutdown) and every batch it handed on is decoded.
    async fn run(mut self, mut batches: mpsc::Receiver<Datagrams>) {
        while let Some(batch) = batches.recv().await {
            for (datagram, from) in batch.iter() {
                if !self.datagram(datagram, from) {
                    return;
                }
            }
            self.in_flight.done(&batch);
            let _ = self.recycle.try_send(batch);
        }
    }

    /// Decode one datagram and hand on what it carries; false once the engine is gone.
    fn datagram(&mut self, bytes: &[u8], from: Option<SocketAddr>) -> bool {
        // Formatted only when a refusal is logged, not per datagram.
        let from = Sender(from);
        let mut decoded = std::mem::take(&mut self.decoded);
        decoded.clear();
        if let Err(e) = decode(bytes, self.level, self.auth.credentials(), &mut decoded) {
            self.counters.refused(e.reason());
            self.refusals
                .log(Some(std::mem::discriminant(&e)), |suppressed| {
                    let e = Untrusted(&e.to_string()).to_string();
                    tracing::warn!(%from, bytes = bytes.len(), suppressed, "datagram refused: {e}")
                });
        }
        let now = now_ns();
        let mut open = true;
        for d in decoded.drain(..) {
            match d.item.into_record(now).map(Ingested::from) {
                Ok(item) => {
                    let counter = match &item {
                        Ingested::Values(_) => &self.counters.values,
                        _ => &self.counters.notifications,
                    };
                    match self.sink.try_send(item) {
                        Ok(()) => {
                            counter.inc();
                        }
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            self.counters.dropped.inc();
                            self.drops.log(|suppressed| {
                                tracing::warn!(
                                    suppressed,
                                    "engine queue full: network values dropped"
                                )
                            });
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => open = false,
                    }
                }
                Err(e) => {
                    self.counters.refused("invalid_part");
                    self.refusals.log(None, |suppressed| {
                        let e = Untrusted(&e).to_string();
                        tracing::warn!(%from, suppressed, "part refused: {e}")
                    });
                }
            }
        }
        self.decoded = decoded;
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecurityLevel;

    use crate::test_fixtures::bytes as fixture;

    fn config(listen: &[&str], level: SecurityLevel) -> NetworkConfig {
        NetworkConfig {
            listen: listen.iter().map(|a| a.parse().unwrap()).collect(),
            security_level: level,
            auth_file: None,
            receive_buffer: Some(1 << 20),
        }
    }

    async fn receive_n(rx: &mut mpsc::Receiver<Ingested>, n: usize) -> usize {
        let mut got = 0;
        while got < n {
            match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
                Ok(Some(_)) => got += 1,
                _ => break,
            }
        }
        got
    }

    #[tokio::test]
    async fn receives_on_ipv4_and_ipv6() {
        let (tx, mut rx) = mpsc::channel(1024);
        let cfg = config(&["127.0.0.1:0", "[::1]:0"], SecurityLevel::None);
        let (_trigger, shutdown) = crate::shutdown::channel();
        let (bound, _tasks) = start(&cfg, tx, shutdown).unwrap();
        assert_eq!(bound.len(), 2);
        let plain = fixture("plain.bin");
        let v4 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        v4.send_to(&plain, bound[0]).unwrap();
        assert_eq!(receive_n(&mut rx, 29).await, 29);
        let v6 = std::net::UdpSocket::bind("[::1]:0").unwrap();
        v6.send_to(&plain, bound[1]).unwrap();
        assert_eq!(receive_n(&mut rx, 29).await, 29);
        for addr in &bound {
            let counters = metrics().source("network", addr.to_string());
            let items = counters.values.get() + counters.notifications.get();
            assert_eq!(items, 29, "{addr}");
        }
    }

    #[tokio::test]
    async fn refusals_are_counted_and_the_receiver_keeps_serving() {
        let dir = tempfile::tempdir().unwrap();
        let auth = dir.path().join("passwd");
        std::fs::write(&auth, "fixture-user: fixture-secret\n").unwrap();
        let (tx, mut rx) = mpsc::channel(1024);
        let mut cfg = config(&["127.0.0.1:0"], SecurityLevel::Sign);
        cfg.auth_file = Some(auth);
        let (_trigger, shutdown) = crate::shutdown::channel();
        let (bound, _tasks) = start(&cfg, tx, shutdown).unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(&fixture("plain.bin"), bound[0]).unwrap();
        client.send_to(b"garbage", bound[0]).unwrap();
        client.send_to(&fixture("sign.bin"), bound[0]).unwrap();
        assert_eq!(receive_n(&mut rx, 28).await, 28);
        let counters = metrics().source("network", bound[0].to_string());
        assert_eq!(
            counters.refusals(REFUSAL_REASONS),
            vec![("malformed", 1), ("unsigned", 1)]
        );
    }
}
