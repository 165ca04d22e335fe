//! `medic history`: the audit history of the daemon that runs with a config, newest first: a
//! table for people, JSON lines (`--json`) for scripts. It opens `state_dir/medic.db` read-only;
//! SQLite's WAL lets it read while the daemon writes.

use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::config::Config;
use crate::store::Store;
use crate::store::history::{Query, Row};

/// What to show.
pub struct Filter {
    /// Only decisions taken within this long before now.
    pub since: Option<Duration>,
    pub rule: Option<String>,
    pub service: Option<String>,
    pub failed: bool,
    pub limit: u32,
}

pub fn history(config_path: &Path, filter: Filter, json: bool) -> anyhow::Result<String> {
    let config = Config::load(config_path)?;
    let db = config.state_db();
    let store = Store::open_read_only(&db)
        .with_context(|| format!("cannot read the audit history in {}", db.display()))?;
    let query = Query {
        since_ns: filter
            .since
            .map(|s| crate::event::now_ns().saturating_sub(s.as_nanos() as u64)),
        origin: filter.rule,
        service: filter.service,
        failed: filter.failed,
        limit: filter.limit,
        ..Query::default()
    };
    let rows = store
        .history(&query)
        .with_context(|| format!("cannot read the audit history in {}", db.display()))?;
    Ok(if json { lines(&rows)? } else { table(&rows) })
}

fn lines(rows: &[Row]) -> anyhow::Result<String> {
    let mut out = String::new();
    for row in rows {
        out.push_str(&serde_json::to_string(row)?);
        out.push('\n');
    }
    Ok(out)
}

/// Columns that fit a terminal; `--json` has every field.
fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<20} {:<18} {:<24} {:<12} {:<8} DETAIL\n",
        "TIME (UTC)", "ORIGIN", "SERVICE/COMMAND", "STATE", "CODE"
    ));
    for r in rows {
        let time = jiff::Timestamp::from_nanosecond(i128::from(r.asked))
            .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        let what = match r.kind.as_str() {
            "notification" => "(notification)".to_string(),
            "fault" => "(rule fault)".to_string(),
            _ => format!("{}/{}", r.service, r.command),
        };
        let code = match (r.code, r.signal) {
            (Some(c), _) => c.to_string(),
            (None, Some(s)) => format!("sig {s}"),
            _ => "-".into(),
        };
        let detail = r
            .refusal
            .as_deref()
            .or(r.error.as_deref())
            .unwrap_or(&r.reason);
        let _ = writeln!(
            out,
            "{time:<20} {:<18} {:<24} {:<12} {code:<8} {}",
            clip(&r.origin, 18),
            clip(&what, 24),
            r.state,
            clip(&detail.replace(char::is_control, " "), 60),
        );
    }
    out
}

/// At most `width` characters, the last one `…` when cut.
fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, short)]
    config: std::path::PathBuf,
    /// Only decisions taken this long ago or less (e.g. 1h, 30m, 2d).
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<Duration>,
    /// Only decisions of this rule (or `mqtt:<task id>`).
    #[arg(long)]
    rule: Option<String>,
    #[arg(long)]
    service: Option<String>,
    /// Only what did not succeed: failed, timed out, interrupted, refused.
    #[arg(long)]
    failed: bool,
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// One JSON object per line, every field.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> std::process::ExitCode {
    let filter = Filter {
        since: a.since,
        rule: a.rule,
        service: a.service,
        failed: a.failed,
        limit: a.limit,
    };
    match history(&a.config, filter, a.json) {
        Ok(text) => {
            print!("{text}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => super::fail(format!("{e:#}")),
    }
}
