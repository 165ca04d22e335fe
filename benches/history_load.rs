//! The audit history under load: 1 000 decisions a second (each an `Asked` and an `Ended`
//! entry, as a command request that runs makes) recorded for 10 s into a file-backed
//! `medic.db`. Reports the writer's CPU (the whole process's, minus an idle baseline), the
//! slowest `record` call (what a deciding thread pays: it must never wait on the disk), and the
//! rows on disk at the end.
//!
//! Budget (issue 8): < 5 % of a core at 1 000 decisions/s, and `record` never blocks.
//! `cargo bench -p medic-benches --bench history_load` (MEDIC_DECISIONS_PER_SEC, MEDIC_HISTORY_SECS).

use medic_integration::bench::env_or;
use std::sync::Arc;
use std::time::{Duration, Instant};

use medic::store::Store;
use medic::store::history::{Entry, History, Query, Retention, state};

/// CPU seconds this process has used (user + system).
fn cpu() -> f64 {
    // SAFETY: getrusage fills the struct we pass; RUSAGE_SELF has no other effect.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn main() {
    let rate = env_or("MEDIC_DECISIONS_PER_SEC", 1000);
    let secs = env_or("MEDIC_HISTORY_SECS", 10);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("medic.db")).unwrap();
    let history = History::start(
        store.clone(),
        Retention {
            max_age: Duration::from_secs(3600),
            max_rows: 1_000_000,
        },
    )
    .unwrap();

    // The pacing loop alone, for the baseline.
    let pace = |mut each: Box<dyn FnMut(u64)>| {
        let start = Instant::now();
        let total = rate * secs;
        for i in 0..total {
            let due = Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            each(i);
        }
    };
    let before = cpu();
    pace(Box::new(|_| {}));
    let idle = cpu() - before;

    let origin: Arc<str> = Arc::from("threshold");
    let build: Arc<str> = Arc::from("9f2c".repeat(16));
    let mut slowest = Duration::ZERO;
    let before = cpu();
    pace(Box::new(|i| {
        let now = medic::event::now_ns();
        let asked = Instant::now();
        history.record(Entry::Asked {
            action_id: i,
            at_ns: now,
            origin: origin.clone(),
            build: Some(build.clone()),
            reason: format!("load {i} above 8 for 60s"),
            service: "web".into(),
            command: "restart".into(),
            refusal: None,
        });
        history.record(Entry::Ended {
            action_id: i,
            at_ns: now,
            state: state::SUCCEEDED,
            code: Some(0),
            signal: None,
            timed_out: false,
            duration: Duration::from_millis(40),
            output: "restarted\n".into(),
            error: None,
        });
        slowest = slowest.max(asked.elapsed());
    }));
    assert!(history.flush(Duration::from_secs(30)));
    let busy = cpu() - before;
    let rows = store
        .history(&Query {
            limit: u32::MAX,
            ..Query::default()
        })
        .unwrap()
        .len();
    let extra = (busy - idle).max(0.0);
    println!(
        "history: {rate} decisions/s for {secs} s: {:.2} % of a core for the history \
         (process CPU {busy:.2} s, pacing alone {idle:.2} s), slowest record() pair {slowest:?}, \
         {rows} rows written, {} dropped",
        100.0 * extra / secs as f64,
        history.dropped()
    );
    assert_eq!(rows as u64, rate * secs, "every decision is on disk");
    assert!(100.0 * extra / (secs as f64) < 5.0, "over the 5 % budget");
}
