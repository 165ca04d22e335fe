//! Embedded persistence under `daemon.state_dir`: the rules' key/value state (surviving hot
//! reloads and restarts), the MQTT outbox (messages not yet acknowledged by the broker) and the
//! remote-command task ids seen (dedupe). SQLite in WAL mode, so a killed daemon loses nothing
//! it committed and operators can inspect it with `sqlite3`.

use std::path::Path;
use std::sync::{Arc, Mutex};

pub mod history;

use anyhow::Context;
use rusqlite::{Connection, OptionalExtension, params};

/// How long a write waits for a lock another process holds (a backup, an admin's `sqlite3`)
/// before it fails. medic's own writers share one connection and never wait on each other; the
/// wait would be spent inside a rule's call (state writes, 50 ms deadline) or holding the
/// connection every other writer needs, so a locked database fails fast, is reported and
/// counted, and the history retries on its own.
const WRITE_WAIT: std::time::Duration = std::time::Duration::from_millis(10);

/// A cheap handle; clones share one connection (state writes are small and rare next to rule
/// work, so one lock is simpler than a pool and never the bottleneck).
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    /// Failed writes (a full disk, say) are said once a minute per kind of write, not once per
    /// write: medic keeps deciding and acting meanwhile, and SQLite writes again once there is
    /// room. Per kind, so a flood of failed history writes never hides a rule's failed state.
    failures: Arc<Mutex<(crate::logging::RateLimitedByKind<String>, u64)>>,
}

impl Store {
    /// Open (or create) the database at `path`. A corrupt one is moved aside (to
    /// `medic.db.corrupt-<unix time>`) and a fresh one made: a recovery daemon that refuses to
    /// start recovers nothing. What was lost is logged.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            crate::os::private_dir(dir)
                .with_context(|| format!("cannot create state directory {}", dir.display()))?;
        }
        match Self::open_at(path) {
            Err(e) if is_corrupt(&e) => {
                let moved = move_aside(path)
                    .with_context(|| format!("cannot move the corrupt {} aside", path.display()))?;
                tracing::error!(
                    file = %path.display(),
                    moved_to = %moved.display(),
                    "state database is corrupt ({e:#}): moved aside, starting with a fresh one; \
                     lost: {}",
                    lost(&moved)
                );
                Self::open_at(path)
            }
            other => other,
        }
    }

    fn open_at(path: &Path) -> anyhow::Result<Self> {
        // Created private before SQLite writes a byte (its WAL and shared memory files take
        // the database file's mode).
        crate::os::create_private_file(path)
            .with_context(|| format!("cannot create state database {}", path.display()))?;
        // The database, its WAL and shared memory: private, even if made under another umask
        // or by an older medic. Done before SQLite opens them, never after: SQLite's locks are
        // POSIX record locks, which a process loses on *every* descriptor of a file when it
        // closes *any* descriptor of it. Opening and closing `-shm` here once SQLite held it
        // dropped the lock that tells other processes a connection is live, so `medic history`
        // took itself for the first connection and truncated the shared memory under the
        // daemon (SIGBUS).
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            crate::os::private_file(Path::new(&file))
                .with_context(|| format!("cannot make {} private", Path::new(&file).display()))?;
        }
        // Never through a link: the database holds what medic ran and what it may run.
        let flags = rusqlite::OpenFlags::default() | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(path, flags)
            .with_context(|| format!("cannot open state database {}", path.display()))?;
        let store = Self::init(conn)
            .with_context(|| format!("cannot prepare state database {}", path.display()))?;
        let check: String = store
            .conn()
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .with_context(|| format!("cannot check state database {}", path.display()))?;
        if check != "ok" {
            return Err(Corrupt(check).into());
        }
        store.conn().busy_timeout(WRITE_WAIT)?;
        Ok(store)
    }

    /// An existing database, read-only and as it is (no schema change, no move aside): for
    /// `medic history` beside a running daemon.
    pub fn open_read_only(path: &Path) -> anyhow::Result<Self> {
        use rusqlite::OpenFlags;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Self::wrap(conn))
    }

    /// A throw-away store, for `medic check` and tests.
    pub fn in_memory() -> anyhow::Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> anyhow::Result<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS rule_state (
                 rule  TEXT NOT NULL,
                 key   TEXT NOT NULL,
                 value BLOB NOT NULL,
                 PRIMARY KEY (rule, key)
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS mqtt_outbox (
                 id      INTEGER PRIMARY KEY AUTOINCREMENT,
                 topic   TEXT NOT NULL,
                 payload BLOB NOT NULL,
                 retain  INTEGER NOT NULL,
                 created INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS policy_state (
                 service TEXT NOT NULL,
                 command TEXT NOT NULL,
                 state   BLOB NOT NULL,
                 PRIMARY KEY (service, command)
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS mqtt_tasks (
                 task_id  TEXT PRIMARY KEY,
                 received INTEGER NOT NULL,
                 reply    BLOB
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS mqtt_nonces (
                 sender  TEXT NOT NULL,
                 nonce   TEXT NOT NULL,
                 expires INTEGER NOT NULL,
                 PRIMARY KEY (sender, nonce)
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS collectd_replacement (
                 task_id   TEXT PRIMARY KEY,
                 step      TEXT NOT NULL,
                 action_id INTEGER NOT NULL
             ) WITHOUT ROWID;",
        )?;
        conn.execute_batch(history::SCHEMA)?;
        Ok(Self::wrap(conn))
    }

    fn wrap(conn: Connection) -> Self {
        Self {
            conn: Arc::new(Mutex::new(conn)),
            failures: Arc::new(Mutex::new((
                crate::logging::RateLimitedByKind::new(std::time::Duration::from_secs(60)),
                0,
            ))),
        }
    }

    /// Report a failed read or write of the state database (`what` failed: the caller's
    /// context), at most once a minute for each `what`, with how many failed since medic
    /// started.
    pub fn report(&self, what: &str, e: &dyn std::fmt::Display) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.1 += 1;
        let total = failures.1;
        failures.0.log(what.to_string(), |suppressed| {
            tracing::error!(
                total_failures = total,
                suppressed,
                "state database: {what}: {e} (disk full?); medic keeps running and writes again \
                 when it can"
            )
        });
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent: keep serving.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state_get(&self, rule: &str, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
        self.conn()
            .prepare_cached("SELECT value FROM rule_state WHERE rule = ?1 AND key = ?2")?
            .query_row(params![rule, key], |r| r.get(0))
            .optional()
    }

    /// Every key of `rule`'s state: read once when the rule's first instance starts; from then
    /// on its state lives in memory and changes go to the writer thread.
    pub fn state_all(&self, rule: &str) -> rusqlite::Result<Vec<(String, Vec<u8>)>> {
        self.conn()
            .prepare_cached("SELECT key, value FROM rule_state WHERE rule = ?1")?
            .query_map(params![rule], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
    }

    pub fn state_set(&self, rule: &str, key: &str, value: &[u8]) -> rusqlite::Result<()> {
        rule_state_put(&self.conn(), rule, key, value)
    }

    pub fn state_delete(&self, rule: &str, key: &str) -> rusqlite::Result<()> {
        rule_state_delete(&self.conn(), rule, key)
    }
}

fn rule_state_put(conn: &Connection, rule: &str, key: &str, value: &[u8]) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO rule_state (rule, key, value) VALUES (?1, ?2, ?3)
         ON CONFLICT (rule, key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![rule, key, value])
    .map(drop)
}

fn rule_state_delete(conn: &Connection, rule: &str, key: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM rule_state WHERE rule = ?1 AND key = ?2")?
        .execute(params![rule, key])
        .map(drop)
}

/// How much the MQTT outbox keeps while the broker is away; past either bound the oldest
/// messages are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimit {
    pub messages: usize,
    pub bytes: usize,
}

/// One message waiting in the MQTT outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub id: i64,
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// What the dedupe table knows of a remote task id.
#[derive(Debug, PartialEq)]
pub enum TaskSeen {
    /// First time (within the window): it is now recorded as running.
    New,
    /// Still running (or was, when medic last stopped).
    Running,
    /// Finished; the reply that was sent.
    Done(Vec<u8>),
}

impl Store {
    /// Queue a message; keeps at most `limit` by dropping the oldest. Returns its id and how
    /// many old messages were dropped to make room.
    pub fn outbox_push(
        &self,
        topic: &str,
        payload: &[u8],
        retain: bool,
        limit: OutboxLimit,
    ) -> rusqlite::Result<(i64, usize)> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let id = push(&tx, topic, payload, retain)?;
        let dropped = trim(&tx, limit)?;
        tx.commit()?;
        Ok((id, dropped))
    }

    /// Messages in the order they were queued, from id `after` on, at most `max`.
    pub fn outbox_after(&self, after: i64, max: usize) -> rusqlite::Result<Vec<Outgoing>> {
        self.conn()
            .prepare_cached(
                "SELECT id, topic, payload, retain FROM mqtt_outbox WHERE id > ?1
                 ORDER BY id LIMIT ?2",
            )?
            .query_map(params![after, max as i64], |r| {
                Ok(Outgoing {
                    id: r.get(0)?,
                    topic: r.get(1)?,
                    payload: r.get(2)?,
                    retain: r.get(3)?,
                })
            })?
            .collect()
    }

    /// The broker has the message: forget it.
    pub fn outbox_remove(&self, id: i64) -> rusqlite::Result<()> {
        self.conn()
            .prepare_cached("DELETE FROM mqtt_outbox WHERE id = ?1")?
            .execute(params![id])
            .map(drop)
    }

    pub fn outbox_len(&self) -> rusqlite::Result<usize> {
        self.conn()
            .query_row("SELECT count(*) FROM mqtt_outbox", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as usize)
    }

    /// Use a signed request's nonce: `false` when the sender used it before (a replay). Kept
    /// until `expires` (ns): after it the request is refused as expired anyway, so the table
    /// holds at most what senders signed for the last `mqtt.auth.max_validity`.
    pub fn nonce_use(
        &self,
        sender: &str,
        nonce: &str,
        expires: u64,
        now: u64,
    ) -> rusqlite::Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.prepare_cached("DELETE FROM mqtt_nonces WHERE expires <= ?1")?
            .execute(params![now as i64])?;
        let fresh = tx
            .prepare_cached(
                "INSERT INTO mqtt_nonces (sender, nonce, expires) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![sender, nonce, expires as i64])?
            == 1;
        tx.commit()?;
        Ok(fresh)
    }

    /// Record a task id as running unless it was seen after `since` (ns); say what was known.
    /// Record a task id as running unless it was seen since `since`. At most `keep` finished
    /// task ids are kept (the oldest go first; running ones are never dropped).
    pub fn task_begin(
        &self,
        task_id: &str,
        now: u64,
        since: u64,
        keep: usize,
    ) -> rusqlite::Result<TaskSeen> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let seen: Option<(i64, Option<Vec<u8>>)> = tx
            .prepare_cached("SELECT received, reply FROM mqtt_tasks WHERE task_id = ?1")?
            .query_row(params![task_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let result = match seen {
            Some((received, reply)) if received as u64 >= since => match reply {
                Some(reply) => TaskSeen::Done(reply),
                None => TaskSeen::Running,
            },
            _ => {
                tx.prepare_cached(
                    "INSERT INTO mqtt_tasks (task_id, received, reply) VALUES (?1, ?2, NULL)
                     ON CONFLICT (task_id) DO UPDATE SET received = excluded.received, reply = NULL",
                )?
                .execute(params![task_id, now as i64])?;
                tx.prepare_cached(
                    "DELETE FROM mqtt_tasks WHERE task_id IN (
                         SELECT task_id FROM mqtt_tasks WHERE reply IS NOT NULL
                         ORDER BY received DESC LIMIT -1 OFFSET ?1)",
                )?
                .execute(params![keep as i64])?;
                TaskSeen::New
            }
        };
        tx.commit()?;
        Ok(result)
    }

    /// Record a task's reply and queue it for the broker, atomically: a crash leaves either
    /// both or neither, so a result is never lost nor recorded without being sent.
    pub fn task_finish(
        &self,
        task_id: &str,
        topic: &str,
        reply: &[u8],
        limit: OutboxLimit,
    ) -> rusqlite::Result<(i64, usize)> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.prepare_cached("UPDATE mqtt_tasks SET reply = ?2 WHERE task_id = ?1")?
            .execute(params![task_id, reply])?;
        let id = push(&tx, topic, reply, false)?;
        let dropped = trim(&tx, limit)?;
        tx.commit()?;
        Ok((id, dropped))
    }

    /// Task ids recorded as running: their medic stopped before they finished.
    pub fn tasks_running(&self) -> rusqlite::Result<Vec<String>> {
        self.conn()
            .prepare_cached("SELECT task_id FROM mqtt_tasks WHERE reply IS NULL")?
            .query_map([], |r| r.get(0))?
            .collect()
    }

    /// Keep a command's cooldown, rate-limit and breaker state (the gate's own serialization).
    pub fn policy_state_set(
        &self,
        service: &str,
        command: &str,
        state: &[u8],
    ) -> rusqlite::Result<()> {
        policy_state_put(&self.conn(), service, command, state)
    }

    /// Every `(service, command, state)` kept.
    pub fn policy_states(&self) -> rusqlite::Result<Vec<(String, String, Vec<u8>)>> {
        self.conn()
            .prepare_cached("SELECT service, command, state FROM policy_state")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect()
    }

    /// Where the collectd config replacement of `task_id` has got to (`step`), so a medic that
    /// restarts in the middle finishes it and answers once.
    pub fn replacement_set(
        &self,
        task_id: &str,
        step: &str,
        action_id: u64,
    ) -> rusqlite::Result<()> {
        self.conn()
            .prepare_cached(
                "INSERT INTO collectd_replacement (task_id, step, action_id) VALUES (?1, ?2, ?3)
                 ON CONFLICT (task_id) DO UPDATE SET step = excluded.step",
            )?
            .execute(params![task_id, step, action_id as i64])
            .map(drop)
    }

    /// The step and action id recorded for `task_id`'s replacement, if one is in progress.
    pub fn replacement(&self, task_id: &str) -> rusqlite::Result<Option<(String, u64)>> {
        self.conn()
            .prepare_cached("SELECT step, action_id FROM collectd_replacement WHERE task_id = ?1")?
            .query_row(params![task_id], |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
            })
            .optional()
    }

    /// The replacement of `task_id` is over (answered).
    pub fn replacement_clear(&self, task_id: &str) -> rusqlite::Result<()> {
        self.conn()
            .prepare_cached("DELETE FROM collectd_replacement WHERE task_id = ?1")?
            .execute(params![task_id])
            .map(drop)
    }

    /// Forget task ids received before `before` (ns); returns how many.
    pub fn tasks_expire(&self, before: u64) -> rusqlite::Result<usize> {
        self.conn()
            .prepare_cached("DELETE FROM mqtt_tasks WHERE received < ?1 AND reply IS NOT NULL")?
            .execute(params![before as i64])
    }
}

/// One command's policy state, on `conn` (the store's connection or a transaction of it).
fn policy_state_put(
    conn: &Connection,
    service: &str,
    command: &str,
    state: &[u8],
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO policy_state (service, command, state) VALUES (?1, ?2, ?3)
         ON CONFLICT (service, command) DO UPDATE SET state = excluded.state",
    )?
    .execute(params![service, command, state])
    .map(drop)
}

fn push(
    tx: &rusqlite::Transaction,
    topic: &str,
    payload: &[u8],
    retain: bool,
) -> rusqlite::Result<i64> {
    tx.prepare_cached(
        "INSERT INTO mqtt_outbox (topic, payload, retain, created) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        topic,
        payload,
        retain,
        crate::event::now_ns() as i64
    ])?;
    Ok(tx.last_insert_rowid())
}

/// Drop the oldest messages past either bound of `limit` (the newest are kept).
fn trim(tx: &rusqlite::Transaction, limit: OutboxLimit) -> rusqlite::Result<usize> {
    let by_count = tx
        .prepare_cached(
            "DELETE FROM mqtt_outbox WHERE id IN (
                 SELECT id FROM mqtt_outbox ORDER BY id DESC LIMIT -1 OFFSET ?1)",
        )?
        .execute(params![limit.messages as i64])?;
    let by_bytes = tx
        .prepare_cached(
            "DELETE FROM mqtt_outbox WHERE id IN (
                 SELECT id FROM (
                     SELECT id, sum(length(payload)) OVER (ORDER BY id DESC) AS newer
                     FROM mqtt_outbox)
                 WHERE newer > ?1)",
        )?
        .execute(params![limit.bytes as i64])?;
    Ok(by_count + by_bytes)
}

/// `PRAGMA quick_check` found damage.
#[derive(Debug, thiserror::Error)]
#[error("integrity check failed: {0}")]
struct Corrupt(String);

fn is_corrupt(e: &anyhow::Error) -> bool {
    use rusqlite::ffi::ErrorCode;
    e.chain().any(|cause| {
        cause.is::<Corrupt>()
            || matches!(
                cause.downcast_ref::<rusqlite::Error>(),
                Some(rusqlite::Error::SqliteFailure(f, _))
                    if matches!(f.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
            )
    })
}

/// Rename the database and its WAL and shared-memory files; returns the database's new name.
fn move_aside(path: &Path) -> std::io::Result<std::path::PathBuf> {
    let stamp = crate::event::now_ns() / 1_000_000_000;
    let mut moved = None;
    for suffix in ["", "-wal", "-shm"] {
        let mut from = path.as_os_str().to_owned();
        from.push(suffix);
        let mut to = path.as_os_str().to_owned();
        to.push(format!(".corrupt-{stamp}{suffix}"));
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        moved.get_or_insert(std::path::PathBuf::from(to));
    }
    Ok(moved.expect("set on the first pass"))
}

/// What the moved-aside database held, as far as it can still be read.
fn lost(moved: &Path) -> String {
    let Ok(conn) = Connection::open_with_flags(moved, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return "everything (it cannot be opened)".into();
    };
    let count = |table: &str| -> String {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
            r.get::<_, i64>(0)
        })
        .map_or_else(|_| "unreadable".into(), |n| n.to_string())
    };
    format!(
        "rule state keys: {}, MQTT outbox messages: {}, remote task ids: {}",
        count("rule_state"),
        count("mqtt_outbox"),
        count("mqtt_tasks")
    )
}

#[cfg(test)]
mod tests;
