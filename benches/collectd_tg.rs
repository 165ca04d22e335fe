//! Bursts from collectd's own traffic generator, side by side: Debian's `collectd-tg` sends the
//! same traffic to the release medic (the shipped `conf/medic.toml` and its rules, plus a
//! network listener with no `receive_buffer`: the defaults) and to a real collectd 5.12
//! (network plugin `Listen`, defaults), in the same run. `collectd-tg -i 1` sends every value
//! list once a second, as one burst.
//!
//! Reported per receiver: datagrams lost in the kernel (the socket's drop counter in
//! /proc/net/udp), values received (medic's `medic_values_received_total`), CPU time, CPU per
//! value. Budget (issue 15): `-n 100000 -H 1000 -p 20 -i 1` for 60 s loses 0 datagrams at medic.
//!
//! `cargo bench -p medic-benches --bench collectd_tg` (MEDIC_TG_SECS overrides the 60 s per run).
//! Needs `scripts/build-rules.sh` (target/rules) and collectd-core + collectd-utils.

use medic_integration::bench::{cpu_seconds, env_or};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use medic_integration::{Collectd, Site, free_tcp_port, free_udp_port, http_get, wait_until};

/// The kernel's drop counter of the UDP socket bound to `port` (IPv4), from /proc/net/udp.
fn socket_drops(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = u16::from_str_radix(f.get(1)?.split(':').nth(1)?, 16).ok()?;
            (local_port == port).then(|| f.last()?.parse::<u64>().ok())?
        })
        .sum()
}

/// Something listens on UDP `port`.
fn socket_bound(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let hex = format!(":{port:04X} ");
    table.lines().any(|l| {
        l.split_whitespace()
            .nth(1)
            .is_some_and(|a| format!("{a} ").contains(&hex))
    })
}

/// The sum of the samples whose line starts with `prefix`.
fn sample(metrics: &str, prefix: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// The shipped config, with its state, rules and sockets in `site` and a network listener.
fn shipped_config(site: &Site, udp: u16, http: u16) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shipped = std::fs::read_to_string(root.join("conf/medic.toml")).unwrap();
    let config = shipped
        .replace("../target/demo-state/putval.sock", "putval.sock")
        .replace("../target/demo-state", "state")
        .replace("../target/demo-rules", "rules")
        .replace("127.0.0.1:9105", &format!("127.0.0.1:{http}"));
    std::fs::write(
        site.path("medic.toml"),
        format!("{config}\n[ingest.network]\nlisten = [\"127.0.0.1:{udp}\"]\n"),
    )
    .unwrap();
    for rule in ["threshold", "memory-free"] {
        std::fs::copy(
            medic_integration::rule(rule),
            site.rules_dir().join(format!("{rule}.wasm")),
        )
        .expect("run scripts/build-rules.sh first");
    }
}

/// collectd-tg sending to `port`, and a thread reading its progress lines as they come (it
/// prints one per time step: left in the pipe, they would stall it).
struct Traffic {
    child: Child,
    sent: std::thread::JoinHandle<u64>,
}

fn traffic(n: u64, hosts: u64, port: u16) -> Traffic {
    let mut child = Command::new("collectd-tg")
        .args([
            "-n",
            &n.to_string(),
            "-H",
            &hosts.to_string(),
            "-p",
            "20",
            "-i",
            "1",
        ])
        .args(["-d", "127.0.0.1", "-D", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("collectd-tg is missing: apt-get install collectd-utils");
    let stdout = child.stdout.take().unwrap();
    let sent = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| l.strip_suffix(" values have been sent.")?.parse().ok())
            .max()
            .unwrap_or(0)
    });
    Traffic { child, sent }
}

/// SIGTERM (collectd-tg stops and sends what it holds), then how many values it sent.
fn stop(mut tg: Traffic) -> u64 {
    // SAFETY: kill(2) on our own child.
    unsafe { libc_kill(tg.child.id() as i32, 15) };
    let _ = tg.child.wait();
    tg.sent.join().unwrap()
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn run(n: u64, hosts: u64, secs: u64) {
    let (udp, collectd_udp, http) = (free_udp_port(), free_udp_port(), free_tcp_port());
    let site = Site::new();
    shipped_config(&site, udp, http);
    let medic = site.start_binary(&medic_integration::bench::release_medic(), "info");
    let collectd = Collectd::start(
        site.dir.path(),
        &format!(
            "LoadPlugin network\n<Plugin network>\n  Listen \"127.0.0.1\" \"{collectd_udp}\"\n\
             </Plugin>\n"
        ),
    );
    let collectd_pid = collectd.pid();
    assert!(
        wait_until(Duration::from_secs(10), || socket_bound(collectd_udp)),
        "collectd did not start listening"
    );
    let addr = format!("127.0.0.1:{http}");
    let (medic_cpu, collectd_cpu) = (cpu_seconds(medic.pid()), cpu_seconds(collectd_pid));
    let (medic_drops, collectd_drops) = (socket_drops(udp), socket_drops(collectd_udp));
    let started = Instant::now();
    let to_medic = traffic(n, hosts, udp);
    let to_collectd = traffic(n, hosts, collectd_udp);
    std::thread::sleep(Duration::from_secs(secs));
    let sent_medic = stop(to_medic);
    let sent_collectd = stop(to_collectd);
    let took = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let metrics = http_get(&addr, "/metrics", None).1;
    let received = sample(&metrics, "medic_values_received_total{source=\"network\"");
    let medic_cpu = cpu_seconds(medic.pid()) - medic_cpu;
    let collectd_cpu = cpu_seconds(collectd_pid) - collectd_cpu;
    let medic_lost = socket_drops(udp) - medic_drops;
    let collectd_lost = socket_drops(collectd_udp) - collectd_drops;
    println!(
        "collectd-tg -n {n} -H {hosts} -p 20 -i 1 for {:.0} s (\"sent\" is collectd-tg's count, \
         which includes the last packet it never sends: it does not flush at exit):",
        took.as_secs_f64()
    );
    println!(
        "  medic:    {sent_medic} values sent, {received} received, {medic_lost} datagrams lost \
         in the kernel, {} at the handoff, {} values dropped at the engine queue, {} refused by \
         the series table; CPU {medic_cpu:.1} s ({:.2} µs per value)",
        sample(&metrics, "medic_network_datagrams_dropped_total{").saturating_sub(medic_lost),
        sample(&metrics, "medic_ingest_dropped_total{source=\"network\""),
        sample(&metrics, "medic_series_refused_total"),
        medic_cpu * 1e6 / received.max(1) as f64
    );
    println!(
        "  collectd: {sent_collectd} values sent, {collectd_lost} datagrams lost in the kernel; \
         CPU {collectd_cpu:.1} s ({:.2} µs per value sent)",
        collectd_cpu * 1e6 / sent_collectd.max(1) as f64
    );
    drop(collectd);
    medic.stop();
}

fn main() {
    let secs = env_or("MEDIC_TG_SECS", 60);
    run(100_000, 1_000, secs);
    run(1_000_000, 10_000, secs);
}
