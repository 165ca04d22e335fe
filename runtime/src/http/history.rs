//! `GET /history`: the audit history as JSON, newest first, a page at a time
//! (`?since=1h&rule=R&service=S&failed=1&limit=N&before=CURSOR`), from the same table and with
//! the same filters as `medic history`. A parameter it does not know, or a value it cannot
//! read, is a 400 that says which: a typo must not silently widen a query.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query as Params, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{MAX_PAGE_BYTES, Shared, blocking, error};
use crate::store::history::{Query, Row};

/// Rows per page unless `limit` says otherwise, and the most it may say.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

#[derive(Serialize)]
struct Page {
    rows: Vec<Row>,
    /// The `before` cursor of the next page, when this one was full.
    next: Option<String>,
}

pub(super) async fn history(
    State(app): State<Shared>,
    Params(params): Params<HashMap<String, String>>,
) -> Response {
    let query = match parse(&params, crate::event::now_ns()) {
        Ok(q) => q,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let store = app.parts.store.clone();
    let limit = query.limit as usize;
    match blocking(move || Ok(store.history(&query)?)).await {
        Ok(rows) => {
            let full = rows.len() == limit
                || rows.iter().map(Row::text_bytes).sum::<usize>() >= MAX_PAGE_BYTES;
            let next = full
                .then(|| rows.last().map(|r| format!("{}.{}", r.asked, r.action_id)))
                .flatten();
            Json(Page { rows, next }).into_response()
        }
        Err(response) => response,
    }
}

/// Read the parameters into a query; `now_ns` anchors a relative `since`.
pub(super) fn parse(params: &HashMap<String, String>, now_ns: u64) -> Result<Query, String> {
    let mut q = Query {
        limit: DEFAULT_LIMIT,
        max_bytes: MAX_PAGE_BYTES,
        ..Query::default()
    };
    for (key, value) in params {
        match key.as_str() {
            "since" => q.since_ns = Some(since(value, now_ns)?),
            "rule" => q.origin = Some(value.clone()),
            "service" => q.service = Some(value.clone()),
            "failed" => {
                q.failed = match value.as_str() {
                    "1" | "true" | "yes" => true,
                    "0" | "false" | "no" => false,
                    _ => return Err(format!("failed={value}: use 1 or 0")),
                }
            }
            "limit" => {
                q.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| format!("limit={value}: a number from 1 to {MAX_LIMIT}"))?
            }
            "before" => q.before = Some(cursor(value)?),
            other => {
                return Err(format!(
                    "unknown parameter `{other}` (known: since, rule, service, failed, limit, \
                     before)"
                ));
            }
        }
    }
    Ok(q)
}

/// `1h`, `30m`, `2d` (before now) or an RFC 3339 time.
fn since(value: &str, now_ns: u64) -> Result<u64, String> {
    if let Ok(d) = humantime::parse_duration(value) {
        return Ok(now_ns.saturating_sub(d.as_nanos() as u64));
    }
    match value.parse::<jiff::Timestamp>() {
        Ok(t) => Ok(t.as_nanosecond().max(0) as u64),
        Err(_) => Err(format!(
            "since={value}: a duration (`1h`, `30m`) or an RFC 3339 time \
             (`2026-11-30T12:00:00Z`)"
        )),
    }
}

/// The `next` of a previous page: `<asked ns>.<action id>`.
fn cursor(value: &str) -> Result<(u64, u64), String> {
    value
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| format!("before={value}: pass the `next` of the previous page"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_every_parameter() {
        let now = 10_000_000_000_000;
        let q = parse(
            &params(&[
                ("since", "1s"),
                ("rule", "disk"),
                ("service", "nginx"),
                ("failed", "1"),
                ("limit", "5"),
                ("before", "12.7"),
            ]),
            now,
        )
        .unwrap();
        assert_eq!(q.since_ns, Some(now - 1_000_000_000));
        assert_eq!(q.origin.as_deref(), Some("disk"));
        assert_eq!(q.service.as_deref(), Some("nginx"));
        assert!(q.failed);
        assert_eq!(q.limit, 5);
        assert_eq!(q.before, Some((12, 7)));
        let q = parse(&params(&[("since", "2026-11-30T00:00:00Z")]), now).unwrap();
        assert_eq!(q.since_ns, Some(1_795_996_800_000_000_000));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for (k, v, says) in [
            ("sinse", "1h", "unknown parameter `sinse`"),
            ("since", "yesterday", "since=yesterday"),
            ("failed", "maybe", "failed=maybe"),
            ("limit", "0", "limit=0"),
            ("limit", "100000", "limit=100000"),
            ("before", "x", "before=x"),
        ] {
            let e = parse(&params(&[(k, v)]), 0).unwrap_err();
            assert!(e.contains(says), "{k}={v}: {e}");
        }
    }
}
