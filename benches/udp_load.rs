//! Sustained UDP ingest: a load generator on loopback sends collectd network-protocol datagrams
//! (plain, 40 gauge value lists each) to the release `medic` at a fixed rate; the `counter` rule
//! counts what reaches it. Reports values sent, received by the rule, lost, and medic's CPU time.
//!
//! `cargo bench -p medic-benches --bench udp_load` (100 k values/s for 60 s; override with
//! MEDIC_LOAD_RATE and MEDIC_LOAD_SECS). Needs target/rules/counter.wasm.
//!
//! `MEDIC_LOAD_RULES=20`: instead of `counter` (which writes its state and logs on every
//! batch), 20 copies of the `threshold` example subscribed to every value and never firing:
//! the data path's own cost (decode, series table, routing, batches, wasm calls) into 20 rules.
//! What reached each rule is read from `/metrics` (`medic_rule_events_total`).

use medic_integration::bench::{cpu_seconds, env_or};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use medic_integration::packet::load_datagram;

const PER_DATAGRAM: u64 = 40;

/// The kernel's count of UDP datagrams dropped for a full receive buffer (all sockets).
fn udp_rcvbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn seen(log: &Path) -> u64 {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    medic_integration::max_seen(text.lines())
}

/// The fewest events any of the `rules` threshold copies was handed, from `/metrics`.
fn least_delivered(http: &str, rules: usize) -> u64 {
    let Ok(mut stream) = std::net::TcpStream::connect(http) else {
        return 0;
    };
    use std::io::{Read, Write};
    let _ = write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    (1..=rules)
        .map(|i| {
            let prefix = format!("medic_rule_events_total{{rule=\"t-{i}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix)?.trim().parse::<f64>().ok())
                .unwrap_or(0.0) as u64
        })
        .min()
        .unwrap_or(0)
}

fn main() {
    let rate = env_or("MEDIC_LOAD_RATE", 100_000);
    let secs = env_or("MEDIC_LOAD_SECS", 60);
    let rules: usize = env_or("MEDIC_LOAD_RULES", 0);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    let free_port = || {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let port = free_port();
    let http = format!("127.0.0.1:{}", free_port());
    let mut rule_config = String::new();
    if rules == 0 {
        std::fs::copy(
            medic_integration::rule("counter"),
            dir.path().join("rules/counter.wasm"),
        )
        .expect("run scripts/build-rules.sh first");
        rule_config.push_str("[rules.config.counter]\npattern = \"load-gen/load/*\"\n");
    }
    for i in 1..=rules {
        std::fs::copy(
            medic_integration::rule("threshold"),
            dir.path().join(format!("rules/t-{i}.wasm")),
        )
        .expect("run scripts/build-rules.sh first");
        rule_config.push_str(&format!(
            "[rules.config.t-{i}]\npattern = \"load-gen/load/*\"\ndata_source = \"value\"\n\
             above = 1e300\nclear = 1e299\nservice = \"none\"\ncommand = \"never\"\n"
        ));
    }
    let config = dir.path().join("medic.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_dir = \"state\"\n[rules]\ndir = \"rules\"\nqueue_capacity = 262144\n\
             {rule_config}\
             [services.none.commands]\nnever = \"true\"\n\
             [http]\nlisten = \"{http}\"\n\
             [ingest]\ntypes_db = [\"/usr/share/collectd/types.db\"]\n\
             [ingest.network]\nlisten = [\"127.0.0.1:{port}\"]\nreceive_buffer = 8388608\n"
        ),
    )
    .unwrap();
    let seen = |log: &Path| {
        if rules == 0 {
            seen(log)
        } else {
            least_delivered(&http, rules)
        }
    };
    let log = dir.path().join("medic.log");
    let mut medic = Command::new(medic_integration::bench::release_medic())
        .args(["run", "--log-level", "info", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("medic running")
    {
        assert!(Instant::now() < deadline, "medic did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(("127.0.0.1", port)).unwrap();
    let datagrams_per_sec = rate / PER_DATAGRAM;
    let total = datagrams_per_sec * secs;
    let cpu_before = cpu_seconds(medic.id());
    let kernel_drops_before = udp_rcvbuf_errors();
    let start = Instant::now();
    for seq in 0..total {
        // Pace: datagram `seq` goes out at seq / datagrams_per_sec seconds.
        let due = Duration::from_secs_f64(seq as f64 / datagrams_per_sec as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        socket
            .send(load_datagram(seq, PER_DATAGRAM).bytes())
            .unwrap();
    }
    let took = start.elapsed();
    let sent = total * PER_DATAGRAM;
    let wait_until = Instant::now() + Duration::from_secs(20);
    while seen(&log) < sent && Instant::now() < wait_until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let cpu = cpu_seconds(medic.id()) - cpu_before;
    let got = seen(&log);
    let kernel_drops = udp_rcvbuf_errors() - kernel_drops_before;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    for line in text
        .lines()
        .filter(|l| l.contains("dropped") || l.contains("refused"))
        .take(5)
    {
        println!("medic: {line}");
    }
    let _ = medic.kill();
    let _ = medic.wait();
    println!(
        "UDP ingest into {}: {sent} values in {:.1} s ({:.0} values/s offered), seen by the \
         rule {got}, \
         lost {} (kernel receive-buffer drops: {kernel_drops} datagrams); \
         medic CPU {:.1} s ({:.1} % of one core)",
        if rules == 0 {
            "counter".to_string()
        } else {
            format!("{rules} threshold rules (the fewest events any of them got:)")
        },
        took.as_secs_f64(),
        sent as f64 / took.as_secs_f64(),
        sent.saturating_sub(got),
        cpu,
        100.0 * cpu / took.as_secs_f64()
    );
}
