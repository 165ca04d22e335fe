//! Memory per live series, and memory given back when they expire. The release `medic` takes
//! 1 000 000 distinct series over UDP (collectd's network protocol, 20 s interval, paced), a rule
//! subscribed to all of them; RSS is read once every one has reached the rule, then again after
//! they fall silent and expire (`ingest.series_timeout = 1`, so 20 s after their last value).
//!
//! Budget (issue 14): < 256 MiB RSS with all live, and back within 20 % of the RSS before them.
//! `cargo bench -p medic-benches --bench series_memory` (MEDIC_SERIES and MEDIC_SERIES_RATE override the
//! count and the values per second, 100 000). Needs target/rules/counter.wasm.

use medic_integration::bench::env_or;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use medic_integration::packet::{
    Datagram, HOST, INTERVAL_HR, PLUGIN, TIME_HR, TYPE, TYPE_INSTANCE, cdtime, cdtime_now,
};
use medic_integration::{Medic, Site, free_udp_port, max_seen, wait_until};

const BUDGET_MIB: f64 = 256.0;
const INTERVAL: Duration = Duration::from_secs(20);
/// Value lists per datagram (about 8 KB each).
const PER_DATAGRAM: u64 = 300;

/// `VmRSS` (resident now) or `VmHWM` (the peak) of medic, in MiB.
fn memory_mib(medic: &Medic, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", medic.pid())).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("the field in /proc/PID/status");
    kib / 1024.0
}

fn rss_mib(medic: &Medic) -> f64 {
    memory_mib(medic, "VmRSS")
}

/// Series `first .. first + PER_DATAGRAM`, one gauge each.
fn datagram(first: u64, end: u64) -> Datagram {
    let mut d = Datagram::default();
    d.string(HOST, "mem")
        .string(PLUGIN, "bench")
        .string(TYPE, "gauge")
        .number(TIME_HR, cdtime_now())
        .number(INTERVAL_HR, cdtime(INTERVAL));
    for k in first..end.min(first + PER_DATAGRAM) {
        d.string(TYPE_INSTANCE, &format!("s{k}")).gauge(k as f64);
    }
    d
}

fn main() {
    let series = env_or("MEDIC_SERIES", 1_000_000);
    let rate = env_or("MEDIC_SERIES_RATE", 100_000);
    let port = free_udp_port();
    let site = Site::new();
    site.add_rule("counter", "all");
    site.write_config(&format!(
        "[rules.config.all]\npattern = \"mem/bench/*\"\n\n\
         [ingest.network]\nlisten = [\"127.0.0.1:{port}\"]\nreceive_buffer = 16777216\n"
    ));
    site.set("ingest", &format!("max_series = {}", series + 1000));
    site.set("ingest", "series_timeout = 1");
    let medic = site.start_binary(&medic_integration::bench::release_medic(), "info");
    let seen = || max_seen(medic.log().lines());
    std::thread::sleep(Duration::from_secs(2));
    let before = rss_mib(&medic);

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(("127.0.0.1", port)).unwrap();
    let start = Instant::now();
    for first in (0..series).step_by(PER_DATAGRAM as usize) {
        let due = Duration::from_secs_f64(first as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        if let Err(e) = socket.send(datagram(first, series).bytes()) {
            panic!("send: {e}; medic's log:\n{}", medic.log());
        }
    }
    let sent_in = start.elapsed();
    // Until every value reached the rule, or none has for a few seconds (then some were lost).
    let mut last = (0, Instant::now());
    wait_until(Duration::from_secs(60), || {
        let now = seen();
        if now != last.0 {
            last = (now, Instant::now());
        }
        now >= series || last.1.elapsed() > Duration::from_secs(3)
    });
    let reached = seen();
    // All are live now (the first expire INTERVAL after they were sent); the peak counts too.
    let live = rss_mib(&medic).max(memory_mib(&medic, "VmHWM"));
    // The last series expires INTERVAL after its value, found by the next pass a second later.
    if let Some(wait) = (INTERVAL + Duration::from_secs(5)).checked_sub(start.elapsed() - sent_in) {
        std::thread::sleep(wait);
    }
    let after = rss_mib(&medic);
    let per_series = (live - before) * 1024.0 * 1024.0 / series as f64;
    println!(
        "series memory: {series} series sent in {:.1} s, {reached} reached the rule; RSS before \
         {before:.1} MiB, all live {live:.1} MiB ({per_series:.0} B per series), after expiry \
         {after:.1} MiB ({:+.0} %)",
        sent_in.as_secs_f64(),
        100.0 * (after - before) / before
    );
    for line in medic
        .log()
        .lines()
        .filter(|l| l.contains("dropped"))
        .take(3)
    {
        println!("medic: {line}");
    }
    assert!(
        reached * 100 >= series * 99,
        "only {reached} of {series} values reached the rule"
    );
    assert!(
        live < BUDGET_MIB,
        "over budget: {live:.1} MiB with {series} live series (budget {BUDGET_MIB} MiB)"
    );
    assert!(
        after <= before * 1.2,
        "memory not given back: {after:.1} MiB after expiry, {before:.1} MiB before"
    );
}
