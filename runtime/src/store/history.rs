//! The audit history: one row per decision that reached the policy gate (and per notification
//! a rule raised), written when the decision is taken and completed when the command ends. A
//! row still `running` at the next start was cut short by a crash and is marked `interrupted`.
//!
//! Writers never wait on the database: [`History::record`] puts the entry in a bounded queue a
//! writer thread empties in transactions; a full queue drops the entry, counted and logged. A
//! transaction that fails (another process holds the lock, the disk is full) is retried every
//! second with what came meanwhile, so a passing problem loses nothing.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::{ToSql, params};
use serde::Serialize;

use super::Store;

mod writer;
use writer::Coalesced;
pub use writer::History;

pub(super) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS history (
        action_id   INTEGER PRIMARY KEY,
        kind        TEXT NOT NULL,
        asked       INTEGER NOT NULL,
        origin      TEXT NOT NULL,
        build       TEXT,
        reason      TEXT NOT NULL,
        service     TEXT NOT NULL,
        command     TEXT NOT NULL,
        state       TEXT NOT NULL,
        refusal     TEXT,
        ended       INTEGER,
        code        INTEGER,
        signal      INTEGER,
        timed_out   INTEGER NOT NULL DEFAULT 0,
        duration_ms INTEGER,
        output      TEXT,
        error       TEXT
    );
    CREATE INDEX IF NOT EXISTS history_asked ON history (asked);";

/// Where a row stands.
pub mod state {
    pub const RUNNING: &str = "running";
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
    pub const TIMED_OUT: &str = "timed out";
    pub const INTERRUPTED: &str = "interrupted";
    pub const REFUSED: &str = "refused";
    /// A notification (kind `notification`): nothing ran.
    pub const NOTED: &str = "noted";
    /// A rule fault (kind `fault`).
    pub const FAULTED: &str = "faulted";
}

/// What is recorded. Serialized (for `[history] forward`) as one JSON object with `kind`
/// `asked`, `ended`, `fault` or `notification`, times in ns since the epoch.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Entry {
    /// A decision reached the gate: admitted (state `running`) or refused.
    Asked {
        action_id: u64,
        at_ns: u64,
        /// A rule name, or `mqtt:<task id>`.
        origin: Arc<str>,
        /// SHA-256 of the rule's build, for decisions of rules.
        build: Option<Arc<str>>,
        reason: String,
        service: String,
        command: String,
        /// `None`: admitted.
        refusal: Option<String>,
    },
    /// An admitted command ended.
    Ended {
        action_id: u64,
        at_ns: u64,
        state: &'static str,
        code: Option<i32>,
        signal: Option<i32>,
        timed_out: bool,
        #[serde(rename = "duration_ms", serialize_with = "millis")]
        duration: Duration,
        output: String,
        error: Option<String>,
    },
    /// A rule faulted (trap, deadline, memory cap, init failure) or a new build or config of it
    /// was refused.
    Fault {
        action_id: u64,
        at_ns: u64,
        rule: Arc<str>,
        build: Option<Arc<str>>,
        what: String,
    },
    /// A notification a rule raised.
    #[serde(rename = "notification")]
    Notified {
        action_id: u64,
        at_ns: u64,
        rule: Arc<str>,
        severity: &'static str,
        message: String,
        /// `plugin[-instance]/type[-instance]` when the rule named where it comes from.
        source: Option<String>,
    },
}

impl Entry {
    /// The entry as one JSON object, for `[history] forward`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("an entry always serializes")
    }
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// Where each entry also goes (`[history] forward`), as it is recorded.
pub type Forward = Arc<dyn Fn(&Entry) + Send + Sync>;

/// How long history is kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_age: Duration,
    pub max_rows: u64,
}

/// One row of history, as `medic history` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub action_id: u64,
    pub kind: String,
    /// Unix time in nanoseconds.
    pub asked: u64,
    pub origin: String,
    pub build: Option<String>,
    pub reason: String,
    pub service: String,
    pub command: String,
    pub state: String,
    pub refusal: Option<String>,
    pub ended: Option<u64>,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: Option<u64>,
    pub output: Option<String>,
    pub error: Option<String>,
}

impl Row {
    /// The bytes of its text fields: what makes one row large.
    pub fn text_bytes(&self) -> usize {
        let optional = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        self.kind.len()
            + self.origin.len()
            + optional(&self.build)
            + self.reason.len()
            + self.service.len()
            + self.command.len()
            + self.state.len()
            + optional(&self.refusal)
            + optional(&self.output)
            + optional(&self.error)
    }
}

/// Which rows a query returns, newest first.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub since_ns: Option<u64>,
    pub origin: Option<String>,
    pub service: Option<String>,
    /// Only what did not succeed: failed, timed out, interrupted, refused, and rule faults.
    pub failed: bool,
    /// With `failed`: notifications too (what a feed of trouble shows).
    pub or_notifications: bool,
    /// Only rows older than this `(asked, action_id)`: the next page after a page ending there.
    pub before: Option<(u64, u64)>,
    pub limit: u32,
    /// Stop after the row that brings the text read past this many bytes (0: no bound), so
    /// one page of rows with large outputs cannot be built whole in memory.
    pub max_bytes: usize,
}

impl Store {
    /// The audit entries and the latest policy states, in one transaction.
    fn history_write(&self, entries: &[Entry], keyed: &Coalesced) -> rusqlite::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for ((service, command), state) in &keyed.policy {
            super::policy_state_put(&tx, service, command, state)?;
        }
        for ((rule, key), value) in &keyed.rule_state {
            match value {
                Some(value) => super::rule_state_put(&tx, rule, key, value)?,
                None => super::rule_state_delete(&tx, rule, key)?,
            }
        }
        for entry in entries {
            match entry {
                Entry::Asked {
                    action_id,
                    at_ns,
                    origin,
                    build,
                    reason,
                    service,
                    command,
                    refusal,
                } => {
                    let state = match refusal {
                        None => state::RUNNING,
                        Some(_) => state::REFUSED,
                    };
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO history (action_id, kind, asked, origin, build, \
                         reason, service, command, state, refusal) \
                         VALUES (?1, 'command', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    )?
                    .execute(params![
                        *action_id as i64,
                        *at_ns as i64,
                        &**origin,
                        build.as_deref(),
                        reason,
                        service,
                        command,
                        state,
                        refusal,
                    ])?;
                }
                Entry::Ended {
                    action_id,
                    at_ns,
                    state,
                    code,
                    signal,
                    timed_out,
                    duration,
                    output,
                    error,
                } => {
                    tx.prepare_cached(
                        "UPDATE history SET state = ?2, ended = ?3, code = ?4, signal = ?5, \
                         timed_out = ?6, duration_ms = ?7, output = ?8, error = ?9 \
                         WHERE action_id = ?1",
                    )?
                    .execute(params![
                        *action_id as i64,
                        state,
                        *at_ns as i64,
                        code,
                        signal,
                        timed_out,
                        duration.as_millis() as i64,
                        output,
                        error,
                    ])?;
                }
                Entry::Fault {
                    action_id,
                    at_ns,
                    rule,
                    build,
                    what,
                } => {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO history (action_id, kind, asked, origin, build, \
                         reason, service, command, state) \
                         VALUES (?1, 'fault', ?2, ?3, ?4, ?5, '', '', ?6)",
                    )?
                    .execute(params![
                        *action_id as i64,
                        *at_ns as i64,
                        &**rule,
                        build.as_deref(),
                        what,
                        state::FAULTED,
                    ])?;
                }
                Entry::Notified {
                    action_id,
                    at_ns,
                    rule,
                    severity,
                    message,
                    source,
                } => {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO history (action_id, kind, asked, origin, reason, \
                         service, command, state) \
                         VALUES (?1, 'notification', ?2, ?3, ?4, '', '', ?5)",
                    )?
                    .execute(params![
                        *action_id as i64,
                        *at_ns as i64,
                        &**rule,
                        match source {
                            Some(from) => format!("{severity} from {from}: {message}"),
                            None => format!("{severity}: {message}"),
                        },
                        state::NOTED,
                    ])?;
                }
            }
        }
        tx.commit()
    }

    /// At start: rows a crash left `running` become `interrupted`. Returns how many.
    pub fn history_interrupt_running(&self) -> rusqlite::Result<usize> {
        self.conn()
            .prepare_cached(
                "UPDATE history SET state = ?1, \
                 error = 'medic stopped before the command ended (crash or kill)' \
                 WHERE state = ?2",
            )?
            .execute(params![state::INTERRUPTED, state::RUNNING])
    }

    fn history_prune(&self, retention: Retention) {
        let oldest = crate::event::now_ns().saturating_sub(retention.max_age.as_nanos() as u64);
        let pruned = self.conn().execute(
            "DELETE FROM history WHERE asked < ?1 OR action_id IN \
             (SELECT action_id FROM history ORDER BY asked DESC LIMIT -1 OFFSET ?2)",
            params![oldest as i64, retention.max_rows as i64],
        );
        match pruned {
            Ok(0) => {}
            Ok(n) => tracing::debug!(rows = n, "audit history pruned"),
            Err(e) => self.report("audit history cannot be pruned", &e),
        }
    }

    pub fn history(&self, q: &Query) -> rusqlite::Result<Vec<Row>> {
        let mut sql = String::from(
            "SELECT action_id, kind, asked, origin, build, reason, service, command, state, \
             refusal, ended, code, signal, timed_out, duration_ms, output, error \
             FROM history WHERE asked >= ?1",
        );
        let since = q.since_ns.unwrap_or(0) as i64;
        let mut args: Vec<&dyn ToSql> = vec![&since];
        if let Some(origin) = &q.origin {
            args.push(origin);
            sql.push_str(&format!(" AND origin = ?{}", args.len()));
        }
        if let Some(service) = &q.service {
            args.push(service);
            sql.push_str(&format!(" AND service = ?{}", args.len()));
        }
        let failed = "state IN ('failed', 'timed out', 'interrupted', 'refused', 'faulted')";
        match (q.failed, q.or_notifications) {
            (true, true) => sql.push_str(&format!(" AND ({failed} OR kind = 'notification')")),
            (true, false) => sql.push_str(&format!(" AND {failed}")),
            _ => {}
        }
        let before = q.before.map(|(asked, id)| (asked as i64, id as i64));
        if let Some((asked, id)) = &before {
            args.push(asked);
            let a = args.len();
            args.push(id);
            sql.push_str(&format!(
                " AND (asked < ?{a} OR (asked = ?{a} AND action_id < ?{}))",
                args.len()
            ));
        }
        let limit = i64::from(q.limit);
        args.push(&limit);
        sql.push_str(&format!(
            " ORDER BY asked DESC, action_id DESC LIMIT ?{}",
            args.len()
        ));
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(args.as_slice(), |r| {
            Ok(Row {
                action_id: r.get::<_, i64>(0)? as u64,
                kind: r.get(1)?,
                asked: r.get::<_, i64>(2)? as u64,
                origin: r.get(3)?,
                build: r.get(4)?,
                reason: r.get(5)?,
                service: r.get(6)?,
                command: r.get(7)?,
                state: r.get(8)?,
                refusal: r.get(9)?,
                ended: r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
                code: r.get(11)?,
                signal: r.get(12)?,
                timed_out: r.get(13)?,
                duration_ms: r.get::<_, Option<i64>>(14)?.map(|v| v as u64),
                output: r.get(15)?,
                error: r.get(16)?,
            })
        })?;
        if q.max_bytes == 0 {
            return rows.collect();
        }
        let mut page = Vec::new();
        let mut bytes = 0;
        for row in rows {
            let row = row?;
            bytes += row.text_bytes();
            page.push(row);
            if bytes >= q.max_bytes {
                break;
            }
        }
        Ok(page)
    }
}
