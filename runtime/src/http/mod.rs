//! The read-only HTTP side, off unless `[http] listen` is set: `GET /status` (JSON),
//! `/history` (JSON, paginated), `/metrics` (Prometheus), `/feed.atom` and the page at `/`.
//!
//! Nothing here changes anything medic does: every handler reads the status board, the
//! metrics, the policy gate's view or the history (through a read-only connection of its own,
//! so a slow page never holds the lock the audit writer needs). With `token_file`, every
//! request must carry `Authorization: Bearer <token>`; without it, only requests naming a
//! loopback host are served, so a web page that rebinds its DNS name to 127.0.0.1 cannot read
//! the history. Connections are bounded before either check (`serve`).

pub mod client;
mod feed;
mod history;
mod page;
mod serve;
mod status;

pub use serve::{Limits, RESERVED_FDS, connection_cap};

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::effects::view::{CommandView, SinkView};
use crate::engine::status::StatusBoard;
use crate::metrics::metrics;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// One input, as the daemon started it.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    /// `network`, `putval` or `unixsock`: the `source` label of its metrics.
    pub kind: &'static str,
    /// The `listener` label: bound address or socket path.
    pub listener: String,
    /// The refusal reasons it counts, to list them by name.
    pub reasons: &'static [&'static str],
}

/// What the endpoints read.
pub struct Parts {
    pub node: String,
    pub listen: SocketAddr,
    /// Required as a bearer token when set.
    pub token: Option<String>,
    pub board: StatusBoard,
    /// Each allow-listed command's policy state now.
    pub commands: Arc<dyn Fn() -> Vec<CommandView> + Send + Sync>,
    /// Each sink's deliveries since medic started.
    pub sinks: Arc<dyn Fn() -> Vec<SinkView> + Send + Sync>,
    /// A read-only connection to `state_dir/medic.db`.
    pub store: Store,
    pub sources: Vec<SourceInfo>,
    /// The broker URL when `[mqtt]` is configured.
    pub mqtt_broker: Option<String>,
    pub limits: Limits,
}

/// Shared by every handler.
struct App {
    parts: Parts,
    started: SystemTime,
    since: Instant,
    rates: Mutex<status::Rates>,
}

type Shared = Arc<App>;

/// The history text one answer may carry: a page ends early (with a `next` cursor on
/// `/history`) once its rows reach this; a command's output is kept up to its cap, so 1 000
/// rows could otherwise be ~64 MiB built in memory.
const MAX_PAGE_BYTES: usize = 4 << 20;

/// A bound listener, not yet serving: binding at start makes a taken port a start error.
pub struct Server {
    listener: tokio::net::TcpListener,
    app: Shared,
}

impl Server {
    pub async fn bind(parts: Parts) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(parts.listen).await?;
        let rates = Mutex::new(status::Rates::default());
        Ok(Self {
            listener,
            app: Arc::new(App {
                parts,
                started: SystemTime::now(),
                since: Instant::now(),
                rates,
            }),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `shutdown` fires; requests in progress finish first.
    pub fn serve(self, shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
        let app = self.app.clone();
        let sampler_stop = shutdown.clone();
        tokio::spawn(status::sample_rates(app.clone(), sampler_stop));
        let limits = app.parts.limits;
        let router = router(app);
        tokio::spawn(serve::serve(self.listener, router, limits, shutdown))
    }
}

fn router(app: Shared) -> Router {
    Router::new()
        .route("/", get(page::page))
        .route("/status", get(status::status))
        .route("/history", get(history::history))
        .route("/metrics", get(metrics_text))
        .route("/feed.atom", get(feed::feed))
        .layer(middleware::from_fn_with_state(app.clone(), authorize))
        .layer(middleware::from_fn_with_state(app.clone(), within_deadline))
        .with_state(app)
}

/// An answer not ready within `http.request_timeout` is a 503; its work is dropped.
async fn within_deadline(State(app): State<Shared>, request: Request, next: Next) -> Response {
    let limit = app.parts.limits.request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("no answer within http.request_timeout ({limit:?})"),
        ),
    }
}

/// With a token configured, anything without `Authorization: Bearer <token>` gets 401.
/// Without one, a request must name a loopback host (see the module's doc).
async fn authorize(State(app): State<Shared>, request: Request, next: Next) -> Response {
    let Some(token) = &app.parts.token else {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok());
        return match host {
            Some(host) if loopback_host(host) => next.run(request).await,
            _ => error(
                StatusCode::MISDIRECTED_REQUEST,
                "without http.token_file only requests for localhost, 127.0.0.1 or [::1] are \
                 served (Host header)",
            ),
        };
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if same(given.trim().as_bytes(), token.as_bytes()) => next.run(request).await,
        Some(_) => unauthorized("wrong bearer token"),
        None => {
            unauthorized("this endpoint needs `Authorization: Bearer <token>` (http.token_file)")
        }
    }
}

/// `localhost`, an IPv4 loopback address or `[::1]`, with or without a port.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((addr, rest)) if rest.is_empty() || rest.starts_with(':') => addr,
            _ => return false,
        },
        None => host.split_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Compare without an early exit, so response times do not tell how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized(why: &str) -> Response {
    let mut response = error(StatusCode::UNAUTHORIZED, why);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"medic\""),
    );
    response
}

/// A JSON error body `{"error": …}` with `code`.
fn error(code: StatusCode, message: &str) -> Response {
    (code, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// Prometheus exposition: OpenMetrics when the scraper asks for it (Prometheus does), else the
/// classic text format. Gauges that live elsewhere (outbox depth) are read now.
async fn metrics_text(State(app): State<Shared>, headers: axum::http::HeaderMap) -> Response {
    if app.parts.mqtt_broker.is_some() {
        let store = app.parts.store.clone();
        let depth = tokio::task::spawn_blocking(move || store.outbox_len())
            .await
            .ok()
            .and_then(Result::ok);
        if let Some(depth) = depth {
            metrics().mqtt_outbox_messages.set(depth as i64);
        }
    }
    let open_metrics = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if open_metrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            metrics().encode(),
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            metrics().encode_text(),
        )
            .into_response()
    }
}

/// Run a blocking read (SQLite) off the async threads; a failure is a 500 with its reason.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::warn!("HTTP: cannot read the history: {e:#}");
            Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot read the history: {e:#}"),
            ))
        }
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())),
    }
}

/// RFC 3339 (UTC) of a wall-clock nanosecond count.
fn rfc3339(ns: u64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map(|t| t.round(jiff::Unit::Millisecond).unwrap_or(t).to_string())
        .unwrap_or_default()
}

fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()
}

#[cfg(test)]
mod tests;
