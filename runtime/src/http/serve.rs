//! Accepting HTTP connections within limits, before anything reads a token: a cap on
//! connections open at once (one more is closed as soon as it is accepted), a deadline for each
//! request head (hyper's header-read timer), an idle deadline (nothing sent or read), and a
//! deadline for each answer.
//!
//! Why our own accept loop rather than `axum::serve`: axum serves without a timer, so hyper's
//! header timeout never fires, and it has no cap; 3 000 half-sent requests then held 3 000
//! descriptors until the PUTVAL socket could no longer accept. The connection count is also
//! what the open-files budget is computed from (`connection_cap`).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::logging::RateLimited;
use crate::metrics::{ReasonLabels, metrics};
use crate::shutdown::Shutdown;

/// What a connection may take; `config::Http`'s values after `connection_cap`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
}

/// Descriptors kept for everything that is not an HTTP connection or a PUTVAL client: the
/// database, rule files and watches, sockets, and the pipes of running commands (three per
/// command, `policy.max_concurrent` of them at once).
pub const RESERVED_FDS: u64 = 256;

/// The connection cap that fits the open-files limit: what is configured, lowered so that the
/// HTTP side can never take the descriptors PUTVAL clients and commands need.
pub fn connection_cap(configured: usize, nofile: u64, putval_clients: usize) -> usize {
    let left = nofile
        .saturating_sub(RESERVED_FDS)
        .saturating_sub(putval_clients as u64);
    configured
        .min(usize::try_from(left).unwrap_or(usize::MAX))
        .max(1)
}

/// How long a graceful stop waits for answers in progress before closing their connections.
const DRAIN: Duration = Duration::from_secs(5);

/// Serve `router` on `listener` until `shutdown` fires.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, mut shutdown: Shutdown) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut accept_errors = RateLimited::default();
    let mut refusals = RateLimited::default();
    let m = metrics();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends: the descriptors are elsewhere; back off instead of
                // spinning on an accept that cannot succeed.
                accept_errors.log(|suppressed| {
                    tracing::warn!(suppressed, "HTTP accept failed: {e}");
                });
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            m.http_connections_refused.inc();
            refusals.log(|suppressed| {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    suppressed,
                    "HTTP connection closed at once: http.max_connections are open"
                );
            });
            drop(stream);
            continue;
        };
        let io = Watched::new(stream);
        let last_activity = io.last.clone();
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(router.clone()));
        let connection = graceful.watch(connection);
        m.http_connections.inc();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                served = connection => {
                    if let Err(e) = served {
                        if e.is_timeout() {
                            closed("header_timeout");
                        }
                        tracing::debug!("HTTP connection ended: {e}");
                    }
                }
                () = idle(&last_activity, limits.idle_timeout) => closed("idle"),
            }
            m.http_connections.dec();
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN) => {
            tracing::debug!("HTTP answers still in progress after {DRAIN:?}: closed");
        }
    }
}

fn closed(reason: &'static str) {
    metrics()
        .http_connections_closed
        .get_or_create(&ReasonLabels { reason })
        .inc();
}

/// Resolves once nothing has been read or written for `limit`.
async fn idle(last: &Activity, limit: Duration) {
    loop {
        let quiet = last.since();
        if quiet >= limit {
            return;
        }
        tokio::time::sleep(limit - quiet).await;
    }
}

/// When a connection last moved a byte, as milliseconds since it opened.
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn since(&self) -> Duration {
        self.opened
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A TCP stream that notes each read or write that moved bytes.
struct Watched {
    stream: TcpStream,
    last: Arc<Activity>,
}

impl Watched {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            last: Arc::new(Activity {
                opened: Instant::now(),
                last_ms: AtomicU64::new(0),
            }),
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.last.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.last.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_descriptors_for_putval_and_commands() {
        assert_eq!(connection_cap(256, 1_048_576, 128), 256);
        assert_eq!(connection_cap(4096, 1024, 128), 1024 - 256 - 128);
        assert_eq!(
            connection_cap(256, 100, 128),
            1,
            "never 0: the page stays reachable"
        );
    }
}
