//! `GET /`: the status page for a person. Plain server-rendered HTML and CSS, no script; it
//! reloads itself every few seconds and fits a phone. Failures stand out in red. Every string
//! that comes from outside (rule names, reasons, command output) is escaped by `maud`.

use axum::extract::State;
use axum::response::Html;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::status::{Status, build};
use super::{Shared, blocking, rfc3339};
use crate::effects::view::Breaker;
use crate::store::history::{Query, Row};

/// Decisions on the page.
const DECISIONS: u32 = 50;
/// Seconds between reloads.
const REFRESH: u32 = 10;

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;padding:0 .8em 2em;max-width:70em;color:#222}
h1{font-size:1.3em;margin:.6em 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .3em}
.meta{color:#666}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.25em .5em;border-bottom:1px solid #ddd;vertical-align:top}
th{background:#f4f4f4}
.scroll{overflow-x:auto}
.bad{background:#fde8e8;color:#8a1010}.bad td:first-child{border-left:4px solid #c62828}
.ok{color:#1b6e20}.warn{color:#8a5a00}
code{font-size:.9em;word-break:break-all}
.out{max-width:28em;white-space:pre-wrap;overflow-wrap:anywhere;font-family:monospace;font-size:.85em}
@media (max-width:40em){th,td{padding:.2em .3em}.wide{display:none}}
";

pub(super) async fn page(State(app): State<Shared>) -> Html<String> {
    let store = app.parts.store.clone();
    let with_outbox = app.parts.mqtt_broker.is_some();
    let read = blocking(move || {
        let rows = store.history(&Query {
            limit: DECISIONS,
            max_bytes: super::MAX_PAGE_BYTES,
            ..Query::default()
        })?;
        let outbox = if with_outbox {
            store.outbox_len().ok()
        } else {
            None
        };
        Ok((rows, outbox))
    })
    .await;
    let (rows, outbox, history_error) = match read {
        Ok((rows, outbox)) => (rows, outbox, None),
        Err(_) => (
            Vec::new(),
            None,
            Some("the history cannot be read (see medic's log)"),
        ),
    };
    let status = build(&app, outbox);
    Html(render(&status, &rows, history_error).into_string())
}

pub(super) fn render(s: &Status, rows: &[Row], history_error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content=(REFRESH);
                title { "medic on " (s.node) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "medic on " (s.node) }
                p.meta {
                    "version " (s.version) " · up " (uptime(s.uptime_s)) " · "
                    (s.series) " series"
                    @if let Some(m) = &s.mqtt {
                        " · MQTT " (m.broker) ": "
                        @if m.connected { span.ok { "connected" } } @else { span.warn { "disconnected" } }
                        @if let Some(n) = m.outbox { " (" (n) " waiting)" }
                    }
                    @if s.history.dropped > 0 {
                        " · " span.warn { (s.history.dropped) " audit records lost" }
                    }
                }
                (rules(s))
                (sources(s))
                (commands(s))
                h2 { "Last decisions" }
                @if let Some(e) = history_error { p.warn { (e) } }
                (decisions(rows))
            }
        }
    }
}

fn rules(s: &Status) -> Markup {
    html! {
        h2 { "Rules" }
        @if s.rules.is_empty() { p.meta { "No rule is loaded." } } @else {
            div.scroll { table {
                tr { th { "Rule" } th { "State" } th { "Events" } th { "Dropped" } th.wide { "Last call" } th.wide { "Build" } }
                @for r in &s.rules {
                    tr class=[(r.state != "serving" || r.last_load_error.is_some()).then_some("bad")] {
                        td { (r.name) " " span.meta { (r.version) } }
                        td {
                            (r.state)
                            @if let Some(e) = &r.error { br; (e) }
                            @if let Some(ms) = r.retry_in_ms { br; "retry in " (ms) " ms" }
                            @if let Some(e) = &r.last_load_error { br; "new build refused: " (e) }
                        }
                        td { (r.events) }
                        td { (r.dropped) }
                        td.wide { (r.last_call_us) " µs" }
                        td.wide { code { (&r.build[..r.build.len().min(12)]) } }
                    }
                }
            } }
        }
    }
}

fn sources(s: &Status) -> Markup {
    html! {
        h2 { "Sources" }
        @if s.sources.is_empty() { p.meta { "No collectd source is configured." } } @else {
            div.scroll { table {
                tr { th { "Source" } th { "Values" } th { "Per second" } th { "Refused" } th { "Dropped" } }
                @for src in &s.sources {
                    tr class=[(src.dropped > 0 || src.connected == Some(false)).then_some("bad")] {
                        td {
                            (src.kind) " " code { (src.listener) }
                            @if src.connected == Some(false) { br; "not connected to collectd" }
                        }
                        td { (src.values + src.notifications) }
                        td { (format!("{:.1}", src.per_second)) }
                        td {
                            @for (reason, n) in &src.refused { (reason) ": " (n) br; }
                            @if src.refused.is_empty() { "0" }
                        }
                        td { (src.dropped) }
                    }
                }
            } }
        }
    }
}

fn commands(s: &Status) -> Markup {
    html! {
        h2 { "Commands" }
        @if s.commands.is_empty() { p.meta { "No command is allowed (no [services])." } } @else {
            div.scroll { table {
                tr { th { "Command" } th { "Breaker" } th { "Runs in window" } th { "Last result" } }
                @for c in &s.commands {
                    @let open = !matches!(c.breaker, Breaker::Closed { .. });
                    @let failed = c.last.as_ref().is_some_and(|l| l.outcome != "succeeded");
                    tr class=[(open || failed).then_some("bad")] {
                        td { (c.service) "/" (c.command) @if c.running > 0 { " " span.warn { "running" } } }
                        td {
                            @match &c.breaker {
                                Breaker::Closed { failures, opens_at } => { "closed (" (failures) "/" (opens_at) " failures)" }
                                Breaker::Open { remaining } => { "open, " (remaining.as_secs()) " s left" }
                                Breaker::HalfOpen => { "half-open (next run is the trial)" }
                            }
                        }
                        td { (c.runs_in_window) " of " (c.max_runs) }
                        td {
                            @match &c.last {
                                Some(l) => { (l.outcome) @if let Some(code) = l.code { " (exit " (code) ")" } br; span.meta { (rfc3339(l.ended_ns)) } }
                                None => { span.meta { "not run since start" } }
                            }
                        }
                    }
                }
            } }
        }
    }
}

fn decisions(rows: &[Row]) -> Markup {
    html! {
        @if rows.is_empty() { p.meta { "Nothing decided yet." } } @else {
            div.scroll { table {
                tr { th { "Time (UTC)" } th { "Origin" } th { "What" } th { "Outcome" } th.wide { "Detail" } }
                @for r in rows {
                    @let bad = matches!(r.state.as_str(), "failed" | "timed out" | "interrupted" | "refused" | "faulted");
                    tr class=[bad.then_some("bad")] {
                        td { (rfc3339(r.asked).replace('T', " ")) }
                        td { (r.origin) }
                        td {
                            @match r.kind.as_str() {
                                "notification" => { "notification" }
                                "fault" => { "rule fault" }
                                _ => { (r.service) "/" (r.command) }
                            }
                        }
                        td { (r.state) @if let Some(c) = r.code { " (exit " (c) ")" } }
                        td.wide.out {
                            @if let Some(x) = r.refusal.as_ref().or(r.error.as_ref()) { (x) "\n" }
                            span.meta { (r.reason) }
                            @if let Some(o) = r.output.as_deref().filter(|o| !o.trim().is_empty()) { "\n" (o.trim()) }
                        }
                    }
                }
            } }
        }
    }
}

fn uptime(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}
