//! Receives collectd's network plugin traffic (UDP): one task per listen address, decoding each
//! datagram and handing its value lists and notifications to the engine. Never blocks: when the
//! engine queue is full, values are dropped and counted (UDP has no way to slow the sender).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::protocol::{Credentials, SecurityLevel, decode, to_ingested};
use crate::config::Network as NetworkConfig;
use crate::event::{Ingested, now_ns};
use crate::logging::{RateLimited, RateLimitedByKind, Untrusted};
use crate::metrics::{SourceCounters, metrics};
use crate::shutdown::Shutdown;

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

/// The largest datagram collectd (or anything) can send over UDP.
const MAX_DATAGRAM: usize = 65_536;

/// Bind a UDP socket, joining the group if `addr` is a multicast address.
pub fn bind(addr: SocketAddr, receive_buffer: Option<usize>) -> anyhow::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Only a multicast group is meant to be shared; a unicast port that another process could
    // also bind would let it read (part of) the feed.
    if addr.ip().is_multicast() {
        socket.set_reuse_address(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if let Some(size) = receive_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    let bind_addr: SocketAddr = match addr {
        SocketAddr::V4(a) if a.ip().is_multicast() => {
            (std::net::Ipv4Addr::UNSPECIFIED, a.port()).into()
        }
        SocketAddr::V6(a) if a.ip().is_multicast() => {
            (std::net::Ipv6Addr::UNSPECIFIED, a.port()).into()
        }
        other => other,
    };
    socket
        .bind(&bind_addr.into())
        .with_context(|| format!("cannot bind {addr}"))?;
    match addr {
        SocketAddr::V4(a) if a.ip().is_multicast() => {
            socket.join_multicast_v4(a.ip(), &std::net::Ipv4Addr::UNSPECIFIED)?
        }
        SocketAddr::V6(a) if a.ip().is_multicast() => socket.join_multicast_v6(a.ip(), 0)?,
        _ => {}
    }
    socket.set_nonblocking(true)?;
    Ok(UdpSocket::from_std(socket.into())?)
}

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

/// Start one receiving task per configured address.
/// Start one receiving task per configured address; each ends when `shutdown` fires.
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
        let mut shutdown = shutdown.clone();
        let counters = metrics().source("network", local.to_string());
        let receiver = receive(socket, level, auth, sink.clone(), counters);
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                _ = receiver => {}
                _ = shutdown.wait() => {}
            }
        }));
    }
    Ok((bound, tasks))
}

async fn receive(
    socket: UdpSocket,
    level: SecurityLevel,
    mut auth: AuthFile,
    sink: mpsc::Sender<Ingested>,
    counters: SourceCounters,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut decoded = Vec::new();
    let mut refusals = RateLimitedByKind::default();
    let mut drops = RateLimited::default();
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("network receive failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        decoded.clear();
        if let Err(e) = decode(&buf[..n], level, auth.credentials(), &mut decoded) {
            counters.refused(e.reason());
            refusals.log(Some(std::mem::discriminant(&e)), |suppressed| {
                let e = Untrusted(&e.to_string()).to_string();
                tracing::warn!(%from, bytes = n, suppressed, "datagram refused: {e}")
            });
        }
        let now = now_ns();
        for d in decoded.drain(..) {
            match to_ingested(d.item, now) {
                Ok(item) => {
                    let counter = match &item {
                        Ingested::Values(_) => &counters.values,
                        _ => &counters.notifications,
                    };
                    match sink.try_send(item) {
                        Ok(()) => {
                            counter.inc();
                        }
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            counters.dropped.inc();
                            drops.log(|suppressed| {
                                tracing::warn!(
                                    suppressed,
                                    "engine queue full: network values dropped"
                                )
                            });
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                    }
                }
                Err(e) => {
                    counters.refused("invalid_part");
                    refusals.log(None, |suppressed| {
                        let e = Untrusted(&e).to_string();
                        tracing::warn!(%from, suppressed, "part refused: {e}")
                    });
                }
            }
        }
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

    #[tokio::test]
    async fn multicast_addresses_join_their_group() {
        // collectd's default group, on a free port.
        let socket = bind("239.192.74.66:0".parse().unwrap(), None).unwrap();
        let port = socket.local_addr().unwrap().port();
        let sender = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        sender.set_multicast_loop_v4(true).unwrap();
        sender
            .send_to(b"hello group", ("239.192.74.66", port))
            .unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .expect("no multicast datagram arrived")
            .unwrap();
        assert_eq!(&buf[..n], b"hello group");
    }

    #[tokio::test]
    async fn a_unicast_port_cannot_be_shared() {
        let socket = bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let addr = socket.local_addr().unwrap();
        let second = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        second.set_reuse_address(true).unwrap();
        assert!(
            second.bind(&addr.into()).is_err(),
            "another socket could bind {addr} and read the feed"
        );
    }
}
