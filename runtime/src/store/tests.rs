//! Unit tests of `store`.

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

const ROOMY: OutboxLimit = OutboxLimit {
    messages: 10,
    bytes: 1 << 20,
};

#[test]
fn outbox_keeps_order_and_drops_the_oldest_past_its_limit() {
    let s = Store::in_memory().unwrap();
    let three = OutboxLimit {
        messages: 3,
        bytes: 1 << 20,
    };
    for i in 0..5 {
        let (_, dropped) = s.outbox_push("t", &[i], false, three).unwrap();
        assert_eq!(dropped, usize::from(i >= 3));
    }
    let left = s.outbox_after(0, 10).unwrap();
    let payloads: Vec<u8> = left.iter().map(|m| m.payload[0]).collect();
    assert_eq!(payloads, [2, 3, 4]);
    s.outbox_remove(left[0].id).unwrap();
    assert_eq!(s.outbox_after(left[0].id, 1).unwrap()[0].payload, [3]);
    assert_eq!(s.outbox_len().unwrap(), 2);
    // By bytes: 10-byte messages in a 25-byte outbox keep the newest two.
    let small = OutboxLimit {
        messages: 100,
        bytes: 25,
    };
    for i in 0..4u8 {
        s.outbox_push("b", &[i; 10], false, small).unwrap();
    }
    let left: Vec<u8> = s
        .outbox_after(0, 10)
        .unwrap()
        .iter()
        .map(|m| m.payload[0])
        .collect();
    assert_eq!(left, [2, 3]);
}

#[test]
fn tasks_dedupe_within_the_window() {
    let s = Store::in_memory().unwrap();
    assert_eq!(s.task_begin("7", 100, 0, 10).unwrap(), TaskSeen::New);
    assert_eq!(s.task_begin("7", 101, 0, 10).unwrap(), TaskSeen::Running);
    assert_eq!(s.tasks_running().unwrap(), ["7"]);
    s.task_finish("7", "r", b"done", ROOMY).unwrap();
    assert_eq!(
        s.task_begin("7", 102, 50, 10).unwrap(),
        TaskSeen::Done(b"done".to_vec())
    );
    assert_eq!(s.outbox_len().unwrap(), 1);
    // Outside the window it is a new task.
    assert_eq!(s.task_begin("7", 300, 200, 10).unwrap(), TaskSeen::New);
    s.task_finish("7", "r", b"again", ROOMY).unwrap();
    assert_eq!(s.tasks_expire(400).unwrap(), 1);
    assert!(s.tasks_running().unwrap().is_empty());
}

#[test]
fn the_dedupe_table_keeps_the_newest_finished_tasks() {
    let s = Store::in_memory().unwrap();
    for t in 0..5u64 {
        s.task_begin(&t.to_string(), t, 0, 2).unwrap();
        s.task_finish(&t.to_string(), "r", b"x", ROOMY).unwrap();
    }
    // A running task is never dropped, however many come after it.
    s.task_begin("running", 10, 0, 2).unwrap();
    for t in 20..23u64 {
        s.task_begin(&t.to_string(), t, 0, 2).unwrap();
        s.task_finish(&t.to_string(), "r", b"x", ROOMY).unwrap();
    }
    assert_eq!(s.tasks_running().unwrap(), ["running"]);
    assert_eq!(
        s.task_begin("0", 30, 0, 2).unwrap(),
        TaskSeen::New,
        "forgotten"
    );
    assert!(matches!(
        s.task_begin("22", 31, 0, 2).unwrap(),
        TaskSeen::Done(_)
    ));
}

#[test]
fn a_nonce_is_taken_once_per_sender_until_it_expires_and_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("medic.db");
    let s = Store::open(&path).unwrap();
    assert!(s.nonce_use("ops", "n1", 100, 10).unwrap());
    assert!(!s.nonce_use("ops", "n1", 100, 20).unwrap(), "a replay");
    assert!(
        s.nonce_use("ci", "n1", 100, 20).unwrap(),
        "another sender's"
    );
    drop(s);
    let s = Store::open(&path).unwrap();
    assert!(!s.nonce_use("ops", "n1", 100, 30).unwrap(), "persisted");
    // Past its expiry it is forgotten (the request itself is refused as expired by then).
    assert!(s.nonce_use("ops", "n1", 300, 150).unwrap());
}

#[test]
fn a_corrupt_database_is_moved_aside_and_a_fresh_one_made() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("medic.db");
    std::fs::write(&path, b"this is not a database, just bytes ".repeat(200)).unwrap();
    let s = Store::open(&path).unwrap();
    s.state_set("r", "k", b"v").unwrap();
    assert_eq!(s.state_get("r", "k").unwrap().as_deref(), Some(&b"v"[..]));
    let moved: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("medic.db.corrupt-"))
        .collect();
    assert_eq!(moved.len(), 1, "{moved:?}");
}

mod history {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::store::history::{Entry, History, Query, Retention, state};

    fn asked(action_id: u64, at_ns: u64, refusal: Option<&str>) -> Entry {
        Entry::Asked {
            action_id,
            at_ns,
            origin: Arc::from("threshold"),
            build: Some(Arc::from("ab12")),
            reason: "load high".into(),
            service: "web".into(),
            command: "restart".into(),
            refusal: refusal.map(str::to_string),
        }
    }

    fn ended(action_id: u64, state: &'static str, code: Option<i32>) -> Entry {
        Entry::Ended {
            action_id,
            at_ns: crate::event::now_ns(),
            state,
            code,
            signal: None,
            timed_out: false,
            duration: Duration::from_millis(12),
            output: "done".into(),
            error: None,
        }
    }

    fn all() -> Query {
        Query {
            limit: 100,
            ..Query::default()
        }
    }

    const LONG: Retention = Retention {
        max_age: Duration::from_secs(3600),
        max_rows: 1000,
    };

    #[test]
    fn a_page_stops_at_its_byte_bound_after_the_row_that_reaches_it() {
        let store = Store::in_memory().unwrap();
        let history = History::start(store.clone(), LONG).unwrap();
        let now = crate::event::now_ns();
        for id in 1..=10 {
            history.record(asked(id, now + id, None));
            let mut end = ended(id, state::SUCCEEDED, Some(0));
            if let Entry::Ended { output, .. } = &mut end {
                *output = "x".repeat(1000);
            }
            history.record(end);
        }
        assert!(history.flush(Duration::from_secs(5)));
        let page = store
            .history(&Query {
                max_bytes: 2500,
                ..all()
            })
            .unwrap();
        let ids: Vec<u64> = page.iter().map(|r| r.action_id).collect();
        assert_eq!(ids, [10, 9, 8], "the third row brings it past 2 500 bytes");
        assert_eq!(store.history(&all()).unwrap().len(), 10, "0: no bound");
    }

    #[test]
    fn policy_states_are_kept_by_the_writer_thread_the_latest_of_each_command() {
        let store = Store::in_memory().unwrap();
        let history = History::start(store.clone(), LONG).unwrap();
        for n in 0..50u8 {
            history.keep_policy("web", "restart", vec![n]);
        }
        history.keep_policy("db", "vacuum", b"other".to_vec());
        assert!(history.flush(Duration::from_secs(5)));
        let mut states = store.policy_states().unwrap();
        states.sort();
        assert_eq!(
            states,
            [
                ("db".into(), "vacuum".into(), b"other".to_vec()),
                ("web".into(), "restart".into(), vec![49]),
            ]
        );
    }

    #[test]
    fn decisions_and_outcomes_are_recorded_and_queried() {
        let store = Store::in_memory().unwrap();
        let history = History::start(store.clone(), LONG).unwrap();
        let now = crate::event::now_ns();
        history.record(asked(1, now, None));
        history.record(ended(1, state::SUCCEEDED, Some(0)));
        history.record(asked(2, now + 1, Some("cooldown")));
        history.record(asked(3, now + 2, None));
        history.record(Entry::Notified {
            action_id: 4,
            at_ns: now + 3,
            rule: Arc::from("threshold"),
            severity: "warning",
            message: "disk almost full".into(),
            source: None,
        });
        assert!(history.flush(Duration::from_secs(5)));
        let rows = store.history(&all()).unwrap();
        let states: Vec<(u64, &str)> = rows.iter().map(|r| (r.action_id, &*r.state)).collect();
        assert_eq!(
            states,
            vec![
                (4, "noted"),
                (3, "running"),
                (2, "refused"),
                (1, "succeeded")
            ]
        );
        assert_eq!(rows[3].build.as_deref(), Some("ab12"));
        assert_eq!((rows[3].code, rows[3].duration_ms), (Some(0), Some(12)));
        assert_eq!(rows[2].refusal.as_deref(), Some("cooldown"));
        assert_eq!(rows[0].reason, "warning: disk almost full");
        let failed = store
            .history(&Query {
                failed: true,
                ..all()
            })
            .unwrap();
        assert_eq!(failed.iter().map(|r| r.action_id).collect::<Vec<_>>(), [2]);
        let trouble = store
            .history(&Query {
                failed: true,
                or_notifications: true,
                ..all()
            })
            .unwrap();
        let ids: Vec<u64> = trouble.iter().map(|r| r.action_id).collect();
        assert_eq!(ids, [4, 2]);
        // Pages: two rows, then the rows older than the last one of the first page.
        let page = |before| {
            store
                .history(&Query {
                    limit: 2,
                    before,
                    ..all()
                })
                .unwrap()
        };
        let first = page(None);
        let last = first.last().unwrap();
        let second = page(Some((last.asked, last.action_id)));
        let ids: Vec<u64> = first.iter().chain(&second).map(|r| r.action_id).collect();
        assert_eq!(ids, [4, 3, 2, 1]);
        // A crash leaves 3 running: the next start says it was interrupted.
        assert_eq!(store.history_interrupt_running().unwrap(), 1);
        let rows = store.history(&all()).unwrap();
        assert_eq!(rows[1].state, "interrupted");
        assert!(rows[1].error.as_deref().unwrap().contains("crash or kill"));
    }

    #[test]
    fn retention_keeps_the_newest_rows_within_age() {
        let store = Store::in_memory().unwrap();
        let now = crate::event::now_ns();
        let keep_two = Retention {
            max_age: Duration::from_secs(60),
            max_rows: 2,
        };
        {
            let history = History::start(store.clone(), LONG).unwrap();
            history.record(asked(1, now - 3_600_000_000_000, None));
            for id in 2..6 {
                history.record(asked(id, now + id, None));
            }
            assert!(history.flush(Duration::from_secs(5)));
        }
        // Retention runs when a writer starts (and every minute after).
        let history = History::start(store.clone(), keep_two).unwrap();
        assert!(history.flush(Duration::from_secs(5)));
        let ids: Vec<u64> = store
            .history(&all())
            .unwrap()
            .iter()
            .map(|r| r.action_id)
            .collect();
        assert_eq!(ids, [5, 4]);
    }

    /// `[history] forward` sends these objects: their keys are a contract with whatever reads
    /// the sink.
    #[test]
    fn entries_forward_as_json_objects_by_kind() {
        use serde_json::json;
        let asked = Entry::Asked {
            action_id: 1,
            at_ns: 10,
            origin: Arc::from("threshold"),
            build: Some(Arc::from("ab12")),
            reason: "load high".into(),
            service: "hello".into(),
            command: "exec".into(),
            refusal: None,
        };
        assert_eq!(
            asked.to_json(),
            json!({"kind": "asked", "action_id": 1, "at_ns": 10, "origin": "threshold",
                   "build": "ab12", "reason": "load high", "service": "hello",
                   "command": "exec", "refusal": null})
        );
        let ended = Entry::Ended {
            action_id: 1,
            at_ns: 20,
            state: state::SUCCEEDED,
            code: Some(0),
            signal: None,
            timed_out: false,
            duration: Duration::from_micros(1500),
            output: "hi\n".into(),
            error: None,
        };
        assert_eq!(
            ended.to_json(),
            json!({"kind": "ended", "action_id": 1, "at_ns": 20, "state": "succeeded",
                   "code": 0, "signal": null, "timed_out": false, "duration_ms": 1,
                   "output": "hi\n", "error": null})
        );
        let fault = Entry::Fault {
            action_id: 2,
            at_ns: 30,
            rule: Arc::from("spin"),
            build: None,
            what: "deadline".into(),
        };
        assert_eq!(
            fault.to_json(),
            json!({"kind": "fault", "action_id": 2, "at_ns": 30, "rule": "spin",
                   "build": null, "what": "deadline"})
        );
        let noted = Entry::Notified {
            action_id: 3,
            at_ns: 40,
            rule: Arc::from("lcm-lua"),
            severity: "okay",
            message: "{}".into(),
            source: Some("lua-collectd-monitor-local/a.lua::metric".into()),
        };
        assert_eq!(
            noted.to_json(),
            json!({"kind": "notification", "action_id": 3, "at_ns": 40, "rule": "lcm-lua",
                   "severity": "okay", "message": "{}",
                   "source": "lua-collectd-monitor-local/a.lua::metric"})
        );
    }
}
