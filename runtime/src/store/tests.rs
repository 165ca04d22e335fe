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
