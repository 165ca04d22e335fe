//! The listening UDP socket, set up so bursts fit: collectd's senders flush a whole interval's
//! values at once (`collectd-tg` sends a second's worth in one burst), and whatever does not fit
//! the socket's receive buffer while the reader catches up is lost in the kernel.

use std::net::SocketAddr;

use anyhow::Context;
use nix::sys::socket::{setsockopt, sockopt};
use socket2::{Domain, Protocol, Socket, Type};

/// Receive buffer asked for when the config sets none: room for about 10 000 full-size
/// collectd datagrams (the kernel charges each about twice its payload).
pub const DEFAULT_RECEIVE_BUFFER: usize = 32 << 20;

/// How long a blocked read waits before the reader looks at the shutdown signal again.
pub const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(200);

/// Bind a UDP socket for the reader thread (blocking, with [`READ_TIMEOUT`]), joining the group
/// if `addr` is a multicast address, with a receive buffer of `receive_buffer` bytes (or
/// [`DEFAULT_RECEIVE_BUFFER`]).
pub fn bind(
    addr: SocketAddr,
    receive_buffer: Option<usize>,
) -> anyhow::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Only a multicast group is meant to be shared; a unicast port that another process could
    // also bind would let it read (part of) the feed.
    if addr.ip().is_multicast() {
        socket.set_reuse_address(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    size_receive_buffer(
        &socket,
        addr,
        receive_buffer.unwrap_or(DEFAULT_RECEIVE_BUFFER),
    )?;
    // The socket's own drop count comes with each datagram: kernel drops become a metric.
    setsockopt(&socket, sockopt::RxqOvfl, &1).context("cannot enable SO_RXQ_OVFL")?;
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
    socket.set_read_timeout(Some(READ_TIMEOUT))?;
    Ok(socket.into())
}

/// Ask for `wanted` bytes. As root (CAP_NET_ADMIN) `SO_RCVBUFFORCE` is not clamped by
/// `net.core.rmem_max`; otherwise the kernel gives at most that, and medic says what it got.
fn size_receive_buffer(socket: &Socket, addr: SocketAddr, wanted: usize) -> anyhow::Result<()> {
    let forced = setsockopt(socket, sockopt::RcvBufForce, &wanted).is_ok();
    if !forced {
        socket
            .set_recv_buffer_size(wanted)
            .context("cannot set SO_RCVBUF")?;
    }
    // Linux reports twice what it grants (the other half is its bookkeeping).
    let got = socket.recv_buffer_size()? / 2;
    if got < wanted {
        tracing::warn!(
            listen = %addr,
            asked = wanted,
            got,
            "the UDP receive buffer is smaller than asked (net.core.rmem_max clamps it for a \
             non-root medic): bursts may be lost in the kernel; raise net.core.rmem_max or give \
             medic CAP_NET_ADMIN"
        );
    } else {
        tracing::info!(listen = %addr, bytes = got, forced, "UDP receive buffer");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multicast_addresses_join_their_group() {
        // collectd's default group, on a free port.
        let socket = bind("239.192.74.66:0".parse().unwrap(), None).unwrap();
        let port = socket.local_addr().unwrap().port();
        let sender = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        sender.set_multicast_loop_v4(true).unwrap();
        sender
            .send_to(b"hello group", ("239.192.74.66", port))
            .unwrap();
        let mut buf = [0u8; 64];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let n = loop {
            match socket.recv_from(&mut buf) {
                Ok((n, _)) => break n,
                Err(_) if std::time::Instant::now() < deadline => continue,
                Err(e) => panic!("no multicast datagram arrived: {e}"),
            }
        };
        assert_eq!(&buf[..n], b"hello group");
    }

    #[test]
    fn a_unicast_port_cannot_be_shared() {
        let socket = bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let addr = socket.local_addr().unwrap();
        let second = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        second.set_reuse_address(true).unwrap();
        assert!(
            second.bind(&addr.into()).is_err(),
            "another socket could bind {addr} and read the feed"
        );
    }

    /// As root (CI), the default is granted whatever `net.core.rmem_max` says.
    #[test]
    fn the_default_buffer_is_granted_to_root() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("not root: SO_RCVBUFFORCE is not allowed; skipped");
            return;
        }
        let socket = Socket::from(bind("127.0.0.1:0".parse().unwrap(), None).unwrap());
        assert_eq!(
            socket.recv_buffer_size().unwrap() / 2,
            DEFAULT_RECEIVE_BUFFER
        );
    }
}
