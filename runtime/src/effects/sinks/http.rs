//! The `http` sink: records POSTed in batches (`max_batch` records, or `max_age` after the first
//! one waited), as lines or a JSON array. A batch that fails (no connection, a timeout, a 5xx,
//! 408 or 429) is kept on disk ([`Retention`]) and retried with backoff, oldest first; while
//! anything is kept, new batches queue behind it on disk, so the destination sees them in order.
//! A 4xx that will never succeed drops the batch, counted. Delivery is at least once: a batch
//! whose answer was lost is sent again.

use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, StatusCode, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{mpsc, watch};

use super::retention::Retention;
use super::{LastError, count_n, set_retained};
use crate::config::{Format, HttpSink};

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// First wait after a failure; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How a POST ended.
enum Sent {
    Ok,
    /// Worth trying again later.
    Retry(String),
    /// Never going to be taken.
    Rejected(String),
}

pub struct Deliverer {
    name: String,
    cfg: HttpSink,
    client: Client<Https, Full<Bytes>>,
    token: Option<String>,
    retention: Retention,
    backoff: Duration,
    retry_at: Option<Instant>,
    last_error: Option<String>,
    /// `last_error`, shown on `/status`.
    shown_error: LastError,
}

impl Deliverer {
    pub fn new(
        name: String,
        cfg: HttpSink,
        retention: Retention,
        shown_error: LastError,
    ) -> anyhow::Result<Self> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))?
            .https_or_http()
            .enable_http1()
            .build();
        let token = match &cfg.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        anyhow::anyhow!("sinks.{name}.token_file {}: {e}", path.display())
                    })?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        let retry_at = (!retention.is_empty()).then(Instant::now);
        set_retained(&name, retention.bytes());
        Ok(Self {
            name,
            cfg,
            client: Client::builder(TokioExecutor::new()).build(https),
            token,
            retention,
            backoff: FIRST_BACKOFF,
            retry_at,
            last_error: None,
            shown_error,
        })
    }

    pub async fn run(
        mut self,
        mut records: mpsc::Receiver<Vec<u8>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut first_at: Option<Instant> = None;
        loop {
            let due = first_at.map(|t| t + self.cfg.max_age);
            let next = [due, self.retry_at].into_iter().flatten().min();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                got = records.recv() => match got {
                    Some(record) => {
                        first_at.get_or_insert_with(Instant::now);
                        batch.push(record);
                        // Records arriving steadily must not keep a due batch or retry waiting.
                        let now = Instant::now();
                        let due = first_at.is_some_and(|t| t + self.cfg.max_age <= now);
                        let retry = self.retry_at.is_some_and(|t| t <= now);
                        if batch.len() < self.cfg.max_batch && !due && !retry {
                            continue;
                        }
                    }
                    None => break,
                },
                _ = sleep => {}
                _ = async { drop(stop.wait_for(|s| *s).await) } => break,
            }
            let due = first_at.is_some_and(|t| t + self.cfg.max_age <= Instant::now());
            if !batch.is_empty() && (batch.len() >= self.cfg.max_batch || due) {
                let full = std::mem::take(&mut batch);
                first_at = None;
                self.deliver(full).await;
            }
            if self.retry_at.is_some_and(|t| t <= Instant::now()) {
                self.drain_retained().await;
            }
        }
        // Stopping: what is queued goes out now, or waits on disk for the next start.
        while let Ok(record) = records.try_recv() {
            batch.push(record);
        }
        if !batch.is_empty() {
            self.deliver(batch).await;
        }
        if !self.retention.is_empty() {
            self.drain_retained().await;
        }
        if !self.retention.is_empty() {
            tracing::warn!(
                sink = self.name,
                bytes = self.retention.bytes(),
                "sink could not deliver everything before medic stopped; the rest is kept on disk \
                 and sent after the next start"
            );
        }
    }

    fn body(&self, records: &[Vec<u8>]) -> Vec<u8> {
        match self.cfg.format {
            Format::Lines => {
                let mut body = Vec::with_capacity(records.iter().map(|r| r.len() + 1).sum());
                for r in records {
                    body.extend_from_slice(r);
                    body.push(b'\n');
                }
                body
            }
            Format::Json => {
                let values: Vec<serde_json::Value> = records
                    .iter()
                    .map(|r| {
                        serde_json::from_slice(r).unwrap_or_else(|_| {
                            serde_json::Value::String(String::from_utf8_lossy(r).into_owned())
                        })
                    })
                    .collect();
                serde_json::to_vec(&values).expect("JSON values always serialise")
            }
        }
    }

    /// A new batch: straight to the destination, or behind what waits on disk.
    async fn deliver(&mut self, records: Vec<Vec<u8>>) {
        let body = self.body(&records);
        let n = records.len();
        if self.retention.is_empty() {
            match self.post(&body).await {
                Sent::Ok => return self.delivered(n),
                Sent::Rejected(why) => return self.rejected(n, &why),
                Sent::Retry(why) => self.failed(why),
            }
        }
        self.keep(&body, n);
    }

    /// Send what waits on disk, oldest first, until the destination fails again.
    async fn drain_retained(&mut self) {
        while let Some(oldest) = self.retention.oldest() {
            let (body, n) = match oldest {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(
                        sink = self.name,
                        "a kept batch cannot be read: {e}; dropped"
                    );
                    let lost = self.retention.pop_oldest();
                    count_n(&self.name, "dropped", lost);
                    continue;
                }
            };
            match self.post(&body).await {
                Sent::Ok => {
                    self.retention.pop_oldest();
                    self.delivered(n);
                }
                Sent::Rejected(why) => {
                    self.retention.pop_oldest();
                    self.rejected(n, &why);
                }
                Sent::Retry(why) => {
                    count_n(&self.name, "retried", n);
                    self.failed(why);
                    break;
                }
            }
        }
        if self.retention.is_empty() {
            self.retry_at = None;
        }
        set_retained(&self.name, self.retention.bytes());
    }

    fn keep(&mut self, body: &[u8], n: usize) {
        match self.retention.push(body, n) {
            Ok(lost) => {
                count_n(&self.name, "retained", n);
                if lost > 0 {
                    count_n(&self.name, "dropped", lost);
                    tracing::warn!(
                        sink = self.name,
                        records = lost,
                        "sink retention over retention_max_bytes: the oldest records dropped"
                    );
                }
            }
            Err(e) => {
                count_n(&self.name, "dropped", n);
                tracing::error!(
                    sink = self.name,
                    records = n,
                    "cannot keep a batch on disk: {e}; dropped"
                );
            }
        }
        set_retained(&self.name, self.retention.bytes());
        self.retry_at
            .get_or_insert_with(|| Instant::now() + self.backoff);
    }

    fn delivered(&mut self, n: usize) {
        count_n(&self.name, "sent", n);
        if self.last_error.take().is_some() {
            tracing::info!(sink = self.name, "sink delivers again");
            self.show_error(None);
        }
        self.backoff = FIRST_BACKOFF;
    }

    fn show_error(&self, error: Option<String>) {
        if let Ok(mut shown) = self.shown_error.lock() {
            *shown = error;
        }
    }

    fn rejected(&mut self, n: usize, why: &str) {
        count_n(&self.name, "dropped", n);
        self.show_error(Some(why.to_string()));
        tracing::warn!(
            sink = self.name,
            records = n,
            "sink refused a batch for good ({why}); dropped"
        );
    }

    fn failed(&mut self, why: String) {
        if self.last_error.as_deref() != Some(&why) {
            tracing::warn!(
                sink = self.name,
                retry_in = ?self.backoff,
                "sink cannot deliver ({why}); keeping records on disk"
            );
        }
        self.show_error(Some(why.clone()));
        self.last_error = Some(why);
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    async fn post(&self, body: &[u8]) -> Sent {
        let mut request = Request::post(&self.cfg.url).header(
            header::CONTENT_TYPE,
            match self.cfg.format {
                Format::Lines => "text/plain; charset=utf-8",
                Format::Json => "application/json",
            },
        );
        for (k, v) in &self.cfg.headers {
            request = request.header(k.as_str(), v.as_str());
        }
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match request.body(Full::new(Bytes::copy_from_slice(body))) {
            Ok(r) => r,
            Err(e) => return Sent::Rejected(format!("cannot build the request: {e}")),
        };
        let response = tokio::time::timeout(self.cfg.timeout, self.client.request(request)).await;
        match response {
            Err(_) => Sent::Retry(format!("no answer within {:?}", self.cfg.timeout)),
            Ok(Err(e)) => Sent::Retry(format!("{e}")),
            Ok(Ok(r)) => {
                let status = r.status();
                if status.is_success() {
                    Sent::Ok
                } else if status.is_server_error()
                    || status == StatusCode::REQUEST_TIMEOUT
                    || status == StatusCode::TOO_MANY_REQUESTS
                {
                    Sent::Retry(format!("HTTP {status}"))
                } else {
                    Sent::Rejected(format!("HTTP {status}"))
                }
            }
        }
    }
}
