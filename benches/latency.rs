//! End to end: from the collectd datagram whose value crosses a threshold to the start of the
//! recovery command's process, on the release medic. The `threshold` rule watches one series;
//! the command is `date +%s%N` (run without a shell), so its output is the moment it started,
//! read back from the audit history. Each crossing is followed by a clearing value, so every
//! crossing is a new episode; the command's cooldown is 0 and its `max_runs` high.
//!
//! Two phases: idle (only the crossings), and under load (100 000 other values/s on the same
//! listener, 40 gauge value lists per datagram). Budget (issue 9): p99 < 5 ms at 100 000
//! values/s. `cargo bench -p medic-benches --bench latency` (MEDIC_LATENCY_CROSSINGS overrides the 100
//! crossings per phase). Needs target/rules/threshold.wasm.

use medic_integration::bench::{env_or, percentile};
use std::net::UdpSocket;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use medic_integration::packet::{
    Datagram, HOST, INTERVAL_HR, PLUGIN, TIME_HR, TYPE, TYPE_INSTANCE, cdtime, cdtime_now,
    load_datagram,
};
use medic_integration::{Site, free_udp_port, wait_until};

const LOAD_PER_DATAGRAM: u64 = 40;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// One value of the watched series.
fn watched(value: f64) -> Datagram {
    let mut d = Datagram::default();
    d.string(HOST, "lat")
        .string(PLUGIN, "latency")
        .string(TYPE, "gauge")
        .number(TIME_HR, cdtime_now())
        .number(INTERVAL_HR, cdtime(Duration::from_secs(1)))
        .string(TYPE_INSTANCE, "x")
        .gauge(value);
    d
}

/// 100 000 values/s until `stop`, paced.
fn background(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(("127.0.0.1", port)).unwrap();
        let per_sec = 100_000 / LOAD_PER_DATAGRAM;
        let start = Instant::now();
        let mut seq = 0;
        while !stop.load(Ordering::Relaxed) {
            let due = Duration::from_secs_f64(seq as f64 / per_sec as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            socket
                .send(load_datagram(seq, LOAD_PER_DATAGRAM).bytes())
                .unwrap();
            seq += 1;
        }
        seq * LOAD_PER_DATAGRAM
    })
}

/// Per crossing: sent, the rule asked, the executor started it, the process began (ns).
struct Stages {
    sent: u64,
    asked: u64,
    running: u64,
    started: u64,
}

/// Times of medic's log lines containing `needle`, in order.
fn log_times(site: &Site, needle: &str) -> Vec<u64> {
    std::fs::read_to_string(site.path("medic.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle) && l.contains("command=\"stamp\""))
        .filter_map(|l| l.split_whitespace().next()?.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_nanosecond() as u64)
        .collect()
}

/// Send `n` crossings, each cleared 100 ms later; returns when each was sent.
fn send_crossings(port: u16, n: usize) -> Vec<u64> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(("127.0.0.1", port)).unwrap();
    let mut sent = Vec::with_capacity(n);
    for _ in 0..n {
        sent.push(now_ns());
        socket.send(watched(200.0).bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        socket.send(watched(0.0).bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    sent
}

/// Send `n` crossings; return each one's stages.
fn crossings(site: &Site, port: u16, n: usize, runs_before: usize) -> Vec<Stages> {
    let sent = send_crossings(port, n);
    let started = || -> Vec<u64> {
        let mut rows: Vec<(u64, u64)> = site
            .history()
            .iter()
            .filter(|r| r["command"] == "stamp" && r["state"] == "succeeded")
            .filter_map(|r| {
                let asked = r["asked"].as_u64()?;
                let out = r["output"].as_str()?.trim().parse().ok()?;
                Some((asked, out))
            })
            .collect();
        rows.sort();
        rows.into_iter().map(|(_, started)| started).collect()
    };
    assert!(
        wait_until(Duration::from_secs(30), || started().len()
            >= runs_before + n),
        "only {} of {} commands ran",
        started().len() - runs_before,
        n
    );
    let asked = log_times(site, "rule asks to run a command");
    let running = log_times(site, "running command");
    let started = started();
    (0..n)
        .map(|i| Stages {
            sent: sent[i],
            asked: asked.get(runs_before + i).copied().unwrap_or(0),
            running: running.get(runs_before + i).copied().unwrap_or(0),
            started: started[runs_before + i],
        })
        .collect()
}

/// Another process in an exclusive transaction on `db` until the guard is dropped.
struct Locker(std::process::Child);

impl Drop for Locker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn lock_database(db: &Path) -> Locker {
    use std::io::BufRead;
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             print('locked', flush=True)\n\
             time.sleep(3600)\n",
        )
        .arg(db)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (the locking process)");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    Locker(child)
}

/// Crossings while the database takes no writes: the audit rows wait in the history's queue,
/// so each process start is read from the command's own log line instead.
fn crossings_locked(site: &Site, port: u16, n: usize) -> Vec<Stages> {
    let before = log_times(site, "running command").len();
    let sent = send_crossings(port, n);
    assert!(
        wait_until(Duration::from_secs(30), || log_times(
            site,
            "command succeeded"
        )
        .len()
            >= before + n),
        "the commands did not all run"
    );
    let asked = log_times(site, "rule asks to run a command");
    let running = log_times(site, "running command");
    let outputs = succeeded_outputs(site);
    (0..n)
        .map(|i| Stages {
            sent: sent[i],
            asked: asked[before + i],
            running: running[before + i],
            started: outputs[before + i],
        })
        .collect()
}

/// The `output="…"` of each "command succeeded" line: `date +%s%N`, when the process began.
fn succeeded_outputs(site: &Site) -> Vec<u64> {
    std::fs::read_to_string(site.path("medic.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("command succeeded") && l.contains("command=\"stamp\""))
        .filter_map(|l| l.split("output=\"").nth(1)?.split('"').next()?.parse().ok())
        .collect()
}

fn report(phase: &str, stages: Vec<Stages>) {
    let ms = |f: &dyn Fn(&Stages) -> (u64, u64)| -> Vec<f64> {
        let mut v: Vec<f64> = stages
            .iter()
            .map(|s| {
                let (from, to) = f(s);
                to.saturating_sub(from) as f64 / 1e6
            })
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v
    };
    let total = ms(&|s| (s.sent, s.started));
    println!(
        "  {phase:<28} p50 {:6.2} ms  p99 {:6.2} ms  max {:6.2} ms  ({} crossings)",
        percentile(&total, 0.5),
        percentile(&total, 0.99),
        total.last().unwrap(),
        total.len()
    );
    for (stage, v) in [
        ("sent → rule asks", ms(&|s| (s.sent, s.asked))),
        ("rule asks → executor runs", ms(&|s| (s.asked, s.running))),
        (
            "executor runs → process starts",
            ms(&|s| (s.running, s.started)),
        ),
    ] {
        println!(
            "    {stage:<32} p50 {:6.2} ms  p99 {:6.2} ms",
            percentile(&v, 0.5),
            percentile(&v, 0.99)
        );
    }
}

fn main() {
    let n: usize = env_or("MEDIC_LATENCY_CROSSINGS", 100);
    let port = free_udp_port();
    let site = Site::new();
    site.add_rule("threshold", "t");
    site.write_config(&format!(
        r#"
[ingest.network]
listen = ["127.0.0.1:{port}"]

[rules.config.t]
pattern = "lat/latency/gauge-x"
above = 100
clear = 50
service = "svc"
command = "stamp"

[services.svc.commands]
stamp = {{ run = ["date", "+%s%N"], max_runs = {{ count = 1000000, within = "1h" }} }}
"#
    ));
    let medic = site.start_binary(&medic_integration::bench::release_medic(), "info");
    println!("latency: crossing datagram sent → recovery command started (release medic)");
    report("idle", crossings(&site, port, n, 0));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = background(port, stop.clone());
    std::thread::sleep(Duration::from_secs(2));
    report("under 100 000 values/s", crossings(&site, port, n, n));
    stop.store(true, Ordering::Relaxed);
    let values = sender.join().unwrap();
    println!("  (background: {values} values sent)");
    // Another process holds medic.db's write lock (a backup, a `sqlite3` shell left in a
    // transaction): the decision → spawn path must not wait on it.
    let locker = lock_database(&site.path("state/medic.db"));
    report(
        "database locked elsewhere",
        crossings_locked(&site, port, n),
    );
    drop(locker);
    medic.stop();
}
