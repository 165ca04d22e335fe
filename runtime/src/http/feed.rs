//! `GET /feed.atom`: what went wrong, as an Atom feed any reader can follow (as SlapOS
//! publishes failed promises): failed, timed-out, interrupted and refused commands, rule faults,
//! breaker changes and rule notifications, newest first.

use std::str::FromStr;

use atom_syndication::{Entry, Feed, FixedDateTime, Link, Person, Text};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::{Shared, blocking, rfc3339};
use crate::store::history::{Query, Row};

/// Entries in the feed.
const ENTRIES: u32 = 50;

pub(super) async fn feed(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let store = app.parts.store.clone();
    let query = Query {
        failed: true,
        or_notifications: true,
        limit: ENTRIES,
        max_bytes: super::MAX_PAGE_BYTES,
        ..Query::default()
    };
    let rows = match blocking(move || Ok(store.history(&query)?)).await {
        Ok(rows) => rows,
        Err(response) => return response,
    };
    // Links must be absolute: use the address the reader used (a proxy's, if any).
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let base = format!("http://{host}");
    (
        [(header::CONTENT_TYPE, "application/atom+xml; charset=utf-8")],
        render(&app.parts.node, &base, &rows),
    )
        .into_response()
}

/// The feed of `rows` (newest first) for `node`, linking to the page at `base`.
pub(super) fn render(node: &str, base: &str, rows: &[Row]) -> String {
    let mut feed = Feed::default();
    feed.set_title(Text::plain(format!(
        "medic on {node}: failures and notices"
    )));
    feed.set_id(format!("urn:medic:{node}:feed"));
    let newest = rows.first().map_or(0, |r| r.ended.unwrap_or(r.asked));
    feed.set_updated(time(newest));
    let mut author = Person::default();
    author.set_name(format!("medic on {node}"));
    feed.set_authors(vec![author]);
    feed.set_links(vec![
        link(&format!("{base}/feed.atom"), "self"),
        link(&format!("{base}/"), "alternate"),
    ]);
    feed.set_entries(
        rows.iter()
            .map(|r| entry(node, base, r))
            .collect::<Vec<_>>(),
    );
    feed.to_string()
}

fn entry(node: &str, base: &str, r: &Row) -> Entry {
    let mut e = Entry::default();
    e.set_id(format!("urn:medic:{node}:action:{}", r.action_id));
    e.set_title(Text::plain(title(r)));
    e.set_updated(time(r.ended.unwrap_or(r.asked)));
    e.set_published(Some(time(r.asked)));
    e.set_links(vec![link(&format!("{base}/"), "alternate")]);
    let mut summary = format!("{} at {} by {}", r.state, rfc3339(r.asked), r.origin);
    if let Some(build) = &r.build {
        summary.push_str(&format!(" (build {})", &build[..build.len().min(12)]));
    }
    for detail in [&r.refusal, &r.error].into_iter().flatten() {
        summary.push_str(&format!(": {detail}"));
    }
    if !r.reason.is_empty() {
        summary.push_str(&format!("\nreason: {}", r.reason));
    }
    if let Some(output) = r.output.as_deref().filter(|o| !o.trim().is_empty()) {
        summary.push_str(&format!("\noutput: {}", output.trim()));
    }
    e.set_summary(Some(Text::plain(clean(&summary))));
    e
}

fn title(r: &Row) -> String {
    match r.kind.as_str() {
        "fault" => format!("rule fault: {}", r.origin),
        "notification" => format!("{} from {}", r.reason, r.origin),
        _ => {
            let how = match (r.code, r.signal) {
                (Some(c), _) if r.state == "failed" => format!(" (exit {c})"),
                (None, Some(s)) => format!(" (signal {s})"),
                _ => String::new(),
            };
            format!("{} {}/{}{how}", r.state, r.service, r.command)
        }
    }
}

/// XML 1.0 cannot carry most control characters, whatever the escaping: command output may.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\n' | '\t' => c,
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

fn time(ns: u64) -> FixedDateTime {
    FixedDateTime::from_str(&rfc3339(ns)).unwrap_or_default()
}

fn link(href: &str, rel: &str) -> Link {
    let mut l = Link::default();
    l.set_href(href);
    l.set_rel(rel);
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u64, kind: &str, state: &str) -> Row {
        Row {
            action_id: id,
            kind: kind.into(),
            asked: 1_796_083_200_000_000_000 + id,
            origin: "disk".into(),
            build: Some("ab".repeat(32)),
            reason: "root 97% full".into(),
            service: "nginx".into(),
            command: "restart".into(),
            state: state.into(),
            refusal: None,
            ended: None,
            code: Some(1),
            signal: None,
            timed_out: false,
            duration_ms: Some(3),
            output: Some("bad\u{1}thing <&>".into()),
            error: None,
        }
    }

    #[test]
    fn entries_read_back_with_their_text() {
        let text = render(
            "web-1",
            "http://h",
            &[row(2, "command", "failed"), row(1, "fault", "faulted")],
        );
        let feed = Feed::from_str(&text).expect("valid Atom");
        assert_eq!(feed.entries().len(), 2);
        let first = &feed.entries()[0];
        assert_eq!(first.title().value, "failed nginx/restart (exit 1)");
        assert_eq!(first.id(), "urn:medic:web-1:action:2");
        let summary = &first.summary().unwrap().value;
        assert!(summary.contains("output: bad thing <&>"), "{summary}");
        assert_eq!(feed.entries()[1].title().value, "rule fault: disk");
    }
}
