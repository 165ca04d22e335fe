//! Embedded persistence under `daemon.state_dir`: the rules' key/value state (surviving hot
//! reloads and restarts). SQLite in WAL mode, so a killed daemon loses nothing it acknowledged
//! and operators can inspect it with `sqlite3`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use rusqlite::{Connection, OptionalExtension, params};

/// A cheap handle; clones share one connection (state writes are small and rare next to rule
/// work, so one lock is simpler than a pool and never the bottleneck).
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

impl Store {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create state directory {}", dir.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open state database {}", path.display()))?;
        Self::init(conn)
            .with_context(|| format!("cannot prepare state database {}", path.display()))
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
             ) WITHOUT ROWID;",
        )?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
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

    pub fn state_set(&self, rule: &str, key: &str, value: &[u8]) -> rusqlite::Result<()> {
        self.conn()
            .prepare_cached(
                "INSERT INTO rule_state (rule, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (rule, key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![rule, key, value])
            .map(drop)
    }

    pub fn state_delete(&self, rule: &str, key: &str) -> rusqlite::Result<()> {
        self.conn()
            .prepare_cached("DELETE FROM rule_state WHERE rule = ?1 AND key = ?2")?
            .execute(params![rule, key])
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_reopen_and_is_per_rule() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/medic.db");
        let s = Store::open(&path).unwrap();
        s.state_set("a", "k", b"1").unwrap();
        s.state_set("a", "k", b"2").unwrap();
        s.state_set("b", "k", b"3").unwrap();
        drop(s);
        let s = Store::open(&path).unwrap();
        assert_eq!(s.state_get("a", "k").unwrap(), Some(b"2".to_vec()));
        assert_eq!(s.state_get("b", "k").unwrap(), Some(b"3".to_vec()));
        s.state_delete("a", "k").unwrap();
        assert_eq!(s.state_get("a", "k").unwrap(), None);
    }
}
