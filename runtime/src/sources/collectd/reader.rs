//! The receive path: one thread per socket that does nothing but drain the kernel's queue,
//! up to [`BATCH`] datagrams per system call (`recvmmsg`), and hand each batch on. Decoding,
//! series look-ups and a full engine queue happen elsewhere, so they never delay the next read;
//! a burst waits in the socket's buffer only as long as a copy takes.

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::errno::Errno;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
use tokio::sync::mpsc;

use crate::logging::RateLimited;
use crate::metrics::{SourceCounters, metrics};
use crate::shutdown::Shutdown;

/// Datagrams read per system call at most.
pub const BATCH: usize = 64;
/// The largest datagram collectd (or anything) can send over UDP.
const MAX_DATAGRAM: usize = 65_536;
/// Bytes read but not yet decoded, at most: past it, batches are dropped and counted (a peer
/// sending 64 KiB datagrams cannot make medic buffer without end).
pub const MAX_IN_FLIGHT: usize = 64 << 20;

/// Datagrams read in one call, back to back in one buffer. The decoder gives each back when it
/// is done ([`Recycle`]), so a steady flow allocates nothing here: with one malloc arena, every
/// buffer of a kilobyte or more made glibc consolidate the whole arena's freed small blocks
/// (`malloc_consolidate` was 40 % of this thread's time at 2 500 datagrams/s).
#[derive(Default)]
pub struct Datagrams {
    pub data: Vec<u8>,
    /// End offset in `data` and sender of each datagram.
    pub ends: Vec<(usize, Option<SocketAddr>)>,
}

impl Datagrams {
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Option<SocketAddr>)> {
        let mut start = 0;
        self.ends.iter().map(move |&(end, from)| {
            let d = &self.data[start..end];
            start = end;
            (d, from)
        })
    }
}

/// The way emptied batches go back from the decoder to the reader.
pub type Recycle = crossbeam_channel::Sender<Datagrams>;

/// Emptied batches kept for reuse.
const SPARE_BATCHES: usize = 8;

/// A channel for emptied batches: the decoder's end, and the reader's.
pub fn recycling() -> (Recycle, crossbeam_channel::Receiver<Datagrams>) {
    crossbeam_channel::bounded(SPARE_BATCHES)
}

/// What the reader shares with the decoder: the bytes it has handed on and not yet decoded.
#[derive(Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// The decoder is done with `batch`.
    pub fn done(&self, batch: &Datagrams) {
        self.0.fetch_sub(batch.data.len(), Ordering::Relaxed);
    }
}

/// Read `socket` on a thread of its own until `shutdown`, handing batches to `out`.
/// `spares`: emptied batches the decoder gives back.
pub fn spawn(
    socket: std::net::UdpSocket,
    out: mpsc::Sender<Datagrams>,
    spares: crossbeam_channel::Receiver<Datagrams>,
    in_flight: InFlight,
    counters: SourceCounters,
    shutdown: Shutdown,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let name = format!("udp:{}", socket.local_addr()?.port());
    std::thread::Builder::new().name(name).spawn(move || {
        read_until_shutdown(&socket, &out, &spares, &in_flight, &counters, &shutdown)
    })
}

fn read_until_shutdown(
    socket: &std::net::UdpSocket,
    out: &mpsc::Sender<Datagrams>,
    spares: &crossbeam_channel::Receiver<Datagrams>,
    in_flight: &InFlight,
    counters: &SourceCounters,
    shutdown: &Shutdown,
) {
    let listener = counters.listener().to_string();
    let m = metrics();
    let datagrams = m.network_datagrams(&listener);
    let kernel_drops = m.network_dropped(&listener, "kernel");
    let handoff_drops = m.network_dropped(&listener, "handoff");
    let mut buffers: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0; MAX_DATAGRAM]).collect();
    let mut errors = RateLimited::default();
    let mut handoff_log = RateLimited::default();
    let mut drops_seen: Option<u32> = None;
    let mut got: Vec<(usize, Option<SocketAddr>)> = Vec::with_capacity(BATCH);
    // How many datagrams one call may take: twice what the last call took (at least 2, at most
    // BATCH), so the headers made for each call stay small while datagrams come one at a time
    // and grow at once in a burst.
    let mut want = 2;
    while !shutdown.is_triggered() {
        got.clear();
        let mut drops_now = None;
        // Fresh each call: the kernel shrinks each header's control length to what it wrote
        // (nothing, while there are no drops), and nix does not restore it, so reused headers
        // would never see the drop count again.
        let mut headers =
            MultiHeaders::<SockaddrStorage>::preallocate(want, Some(nix::cmsg_space!(u32)));
        {
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = buffers
                .iter_mut()
                .take(want)
                .map(|b| [IoSliceMut::new(b.as_mut_slice())])
                .collect();
            // Blocks for the first datagram (up to the socket's read timeout), then takes what
            // else is queued without waiting.
            match recvmmsg(
                socket.as_raw_fd(),
                &mut headers,
                slices.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(results) => {
                    for r in results {
                        if let Ok(cmsgs) = r.cmsgs() {
                            for c in cmsgs {
                                if let ControlMessageOwned::RxqOvfl(n) = c {
                                    drops_now = Some(n);
                                }
                            }
                        }
                        let from = r.address.as_ref().and_then(socket_addr);
                        got.push((r.bytes.min(MAX_DATAGRAM), from));
                    }
                }
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(e) => {
                    errors.log(|suppressed| {
                        tracing::warn!(listen = listener, suppressed, "network receive failed: {e}")
                    });
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
            }
        }
        if let Some(n) = drops_now {
            // The socket's cumulative count (a u32 that wraps): add what is new.
            let before = drops_seen.unwrap_or(0);
            kernel_drops.inc_by(u64::from(n.wrapping_sub(before)));
            drops_seen = Some(n);
        }
        want = (got.len() * 2).clamp(2, BATCH);
        datagrams.inc_by(got.len() as u64);
        let size: usize = got.iter().map(|(n, _)| n).sum();
        if in_flight.0.load(Ordering::Relaxed) + size > MAX_IN_FLIGHT {
            handoff_drops.inc_by(got.len() as u64);
            handoff_log.log(|suppressed| {
                tracing::warn!(
                    listen = listener,
                    suppressed,
                    "decoding is behind by {MAX_IN_FLIGHT} bytes: datagrams dropped"
                )
            });
            continue;
        }
        let mut batch = spares.try_recv().unwrap_or_default();
        batch.data.clear();
        batch.ends.clear();
        for (buffer, &(n, from)) in buffers.iter().zip(&got) {
            batch.data.extend_from_slice(&buffer[..n]);
            batch.ends.push((batch.data.len(), from));
        }
        in_flight.0.fetch_add(size, Ordering::Relaxed);
        match out.try_send(batch) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(batch)) => {
                in_flight.done(&batch);
                handoff_drops.inc_by(batch.ends.len() as u64);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

fn socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    s.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Datagrams the kernel dropped for a full buffer are counted from the socket's own
    /// counter (it comes with the next datagram that fits).
    #[test]
    fn kernel_drops_are_counted() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("not root: cannot force a tiny receive buffer; skipped");
            return;
        }
        let socket =
            super::super::socket::bind("127.0.0.1:0".parse().unwrap(), Some(4096)).unwrap();
        let addr = socket.local_addr().unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..200 {
            sender.send_to(&[0u8; 1000], addr).unwrap();
        }
        let counters = metrics().source("network", addr.to_string());
        let (tx, mut rx) = mpsc::channel(1024);
        let (mut trigger, shutdown) = crate::shutdown::channel();
        let reader = spawn(
            socket,
            tx,
            recycling().1,
            InFlight::default(),
            counters,
            shutdown,
        )
        .unwrap();
        let drain = |rx: &mut mpsc::Receiver<Datagrams>| {
            let mut n = 0;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                match rx.try_recv() {
                    Ok(b) => n += b.ends.len(),
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
                if n > 0 && rx.is_empty() {
                    break;
                }
            }
            n
        };
        let first = drain(&mut rx);
        assert!(first > 0 && first < 200, "{first} of 200 fit the buffer");
        sender.send_to(&[0u8; 1000], addr).unwrap();
        assert_eq!(drain(&mut rx), 1);
        let dropped = metrics().network_dropped(&addr.to_string(), "kernel").get();
        assert_eq!(dropped, (200 - first) as u64);
        trigger.fire();
        reader.join().unwrap();
    }
}
