//! Hot-reload load tool: the real `medic` binary serves the `counter` rule while PUTVAL values
//! stream in; the rule file is replaced again and again. Reports the time from the new file being
//! in place (renamed over the old one, as deploy tools do) to the new version serving, and how
//! many values were lost across all the swaps (must be 0).
//!
//! Two cases: a build medic has never seen (compiled on the spot: a quick Winch build serves
//! first, then the Cranelift build compiled in the background takes over), and a build it has
//! compiled before (loaded from its on-disk cache). Each "new build" is the counter component
//! with a unique custom section appended, so its hash is new and it must really be compiled.
//!
//! Needs target/rules/counter.wasm (scripts/build-rules.sh). Run:
//! `cargo bench -p medic-benches --bench reload`

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const FRESH: usize = 15;
const CACHED: usize = 15;

fn main() {
    // `cargo bench` passes `--bench`; this tool has no options.
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    let counter = std::fs::read(medic_integration::rule("counter")).unwrap();
    std::fs::write(rules.join("counter.wasm"), &counter).unwrap();
    let config = dir.path().join("medic.toml");
    std::fs::write(
        &config,
        "[daemon]\nstate_dir = \"state\"\n[rules]\ndir = \"rules\"\n\
         [rules.config.counter]\npattern = \"*/load/load\"\n\
         [ingest]\ntypes_db = [\"/usr/share/collectd/types.db\"]\n\
         [ingest.putval]\nsocket = \"putval.sock\"\n",
    )
    .unwrap();
    let log = dir.path().join("medic.log");
    let mut medic = start(&config, &log);
    wait_for(&log, "medic running", 1);
    // The first build is new too: its quick build, then its optimized one.
    let mut counts = Counts {
        starts: 2,
        tier_ups: 1,
    };
    wait_for(&log, "rule tiered up", counts.tier_ups);
    wait_for(&log, "counter v1 starting", counts.starts);

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let streamer = {
        let (stop, sent, socket) = (stop.clone(), sent.clone(), dir.path().join("putval.sock"));
        std::thread::spawn(move || stream(&socket, &stop, &sent))
    };

    let mut fresh = Vec::new();
    let mut optimized = Vec::new();
    let mut compile = Vec::new();
    let mut builds = Vec::new();
    for i in 0..FRESH {
        let build = with_custom_section(&counter, &format!("bench-{}-{i}", std::process::id()));
        let placed = put_in_place(&rules, &build);
        fresh.push(serving(placed, &log, &mut counts));
        let (serves, took) = tiered_up(placed, &log, &mut counts);
        optimized.push(serves);
        compile.push(took);
        builds.push(build);
        std::thread::sleep(Duration::from_millis(150));
    }
    let mut cached = Vec::new();
    for i in 0..CACHED {
        let placed = put_in_place(&rules, &builds[i % builds.len()]);
        cached.push(serving(placed, &log, &mut counts));
        std::thread::sleep(Duration::from_millis(150));
    }

    stop.store(true, Ordering::SeqCst);
    let sent = streamer.join().unwrap();
    let seen = wait_for_count(&log, sent);
    let _ = medic.kill();
    let _ = medic.wait();

    println!(
        "hot reload, file in place -> new version serving ({} swaps under load):",
        FRESH + CACHED
    );
    report("new build: quick build serving", &mut fresh);
    report("new build: optimized build serving", &mut optimized);
    report("  (its Cranelift compile, in the background)", &mut compile);
    report("known build (cached)", &mut cached);
    println!(
        "values sent {sent}, seen by the rule {seen}, lost {}",
        sent - seen
    );
}

fn start(config: &Path, log: &Path) -> Child {
    let file = std::fs::File::create(log).unwrap();
    Command::new(medic_integration::bench::release_medic())
        .args(["run", "--log-level", "info", "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap()
}

/// Stream PUTVAL lines at a few thousand values/s until told to stop; returns how many were
/// acknowledged.
fn stream(socket: &Path, stop: &AtomicBool, sent: &AtomicU64) -> u64 {
    let mut writer = UnixStream::connect(socket).unwrap();
    let mut reader = BufReader::new(writer.try_clone().unwrap());
    let mut line = String::new();
    while !stop.load(Ordering::SeqCst) {
        let n = sent.load(Ordering::SeqCst);
        let mut buf = String::new();
        for i in 0..50 {
            buf.push_str(&format!(
                "PUTVAL h{}/load/load N:{}:1:1\n",
                (n + i) % 13,
                n + i
            ));
        }
        writer.write_all(buf.as_bytes()).unwrap();
        for _ in 0..50 {
            line.clear();
            reader.read_line(&mut line).unwrap();
            assert!(line.starts_with("0 Success"), "{line}");
        }
        sent.fetch_add(50, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(10));
    }
    sent.load(Ordering::SeqCst)
}

/// How many of each line the log has had so far.
struct Counts {
    starts: usize,
    tier_ups: usize,
}

/// Put a build in place (renamed over the old file, as deploy tools do); returns when, in
/// seconds since midnight.
fn put_in_place(rules: &Path, build: &[u8]) -> f64 {
    let tmp = rules.join(".counter.tmp");
    std::fs::write(&tmp, build).unwrap();
    std::fs::rename(&tmp, rules.join("counter.wasm")).unwrap();
    since_midnight(SystemTime::now())
}

/// How long after `placed` the next instance started serving.
fn serving(placed: f64, log: &Path, counts: &mut Counts) -> Duration {
    counts.starts += 1;
    let line = wait_for(log, "counter v1 starting", counts.starts);
    Duration::from_secs_f64((log_time(&line) - placed).max(0.0))
}

/// How long after `placed` the optimized build took over, and its compile time (as medic
/// logs it).
fn tiered_up(placed: f64, log: &Path, counts: &mut Counts) -> (Duration, Duration) {
    counts.tier_ups += 1;
    counts.starts += 1;
    let line = wait_for(log, "rule tiered up", counts.tier_ups);
    wait_for(log, "counter v1 starting", counts.starts);
    let compile = line
        .split("compile=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(debug_duration)
        .unwrap_or_else(|| panic!("no compile time in {line}"));
    (
        Duration::from_secs_f64((log_time(&line) - placed).max(0.0)),
        compile,
    )
}

/// A `Duration` as its `Debug` prints it (`260.83ms`, `1.2s`, `950µs`).
fn debug_duration(text: &str) -> Option<Duration> {
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("µs") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix("ns") {
        (n, 1e-9)
    } else {
        (text.strip_suffix('s')?, 1.0)
    };
    Some(Duration::from_secs_f64(number.parse::<f64>().ok()? * scale))
}

/// Wait for the `nth` line containing `needle`; returns it.
fn wait_for(log: &Path, needle: &str, nth: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().filter(|l| l.contains(needle)).nth(nth - 1) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} #{nth} in the log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Wait until the rule reports having seen `sent` values (or stops moving); returns its count.
fn wait_for_count(log: &Path, sent: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let seen = medic_integration::max_seen(text.lines());
        if seen >= sent || Instant::now() > deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Seconds since UTC midnight of a log line's RFC 3339 timestamp.
fn log_time(line: &str) -> f64 {
    let t = &line[11..line.find('Z').unwrap()];
    let mut parts = t.split(':');
    let h: f64 = parts.next().unwrap().parse().unwrap();
    let m: f64 = parts.next().unwrap().parse().unwrap();
    let s: f64 = parts.next().unwrap().parse().unwrap();
    h * 3600.0 + m * 60.0 + s
}

fn since_midnight(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64() % 86_400.0
}

/// The component with one more custom section: same behaviour, different bytes.
fn with_custom_section(component: &[u8], payload: &str) -> Vec<u8> {
    let name = b"medic-bench";
    let mut content = leb(name.len());
    content.extend_from_slice(name);
    content.extend_from_slice(payload.as_bytes());
    let mut out = component.to_vec();
    out.push(0);
    out.extend(leb(content.len()));
    out.extend(content);
    out
}

fn leb(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "  {what:22} n={:2}  p50 {:6.1} ms  p90 {:6.1} ms  max {:6.1} ms",
        samples.len(),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() * 9 / 10]),
        ms(*samples.last().unwrap()),
    );
}
