//! `GET /status` latency with 20 rules loaded, on the release `medic`, while values flow and
//! with a history of recorded decisions behind it: each of 20 copies of `threshold` watches
//! its own series, fed by PUTVAL throughout; one rule keeps asking for a (cooling-down)
//! command, so the policy gate and the history are busy too. Then the page (`GET /`, which also
//! reads the last 50 decisions) and `/metrics` for comparison.
//!
//! Budget (issue 8): `/status` < 10 ms. `cargo bench -p medic-benches --bench status_http`
//! (MEDIC_STATUS_REQUESTS overrides the 1 000 requests per endpoint). Needs
//! target/rules/threshold.wasm.

use medic_integration::bench::{env_or, percentile};
use std::time::{Duration, Instant};

use medic_integration::{Site, free_tcp_port, http_get};

const RULES: usize = 20;
const BUDGET: Duration = Duration::from_millis(10);

fn main() {
    let requests = env_or("MEDIC_STATUS_REQUESTS", 1000);
    let http = free_tcp_port();
    let site = Site::new();
    let mut config = format!("[http]\nlisten = \"127.0.0.1:{http}\"\n");
    for i in 0..RULES {
        site.add_rule("threshold", &format!("t{i}"));
        config.push_str(&format!(
            "[rules.config.t{i}]\npattern = \"bench/load{i}/gauge\"\nabove = 10\nclear = 5\n\
             service = \"svc\"\ncommand = \"fix\"\n"
        ));
    }
    config.push_str("[services.svc.commands]\nfix = { run = \"true\", cooldown = \"1s\" }\n");
    site.write_config(&config);
    let medic = site.start_binary(&medic_integration::bench::release_medic(), "info");
    let addr = format!("127.0.0.1:{http}");

    // Values for every rule, crossing t0's level now and then, until the measurement ends.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = {
        let stop = stop.clone();
        let mut connection = medic.connect();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let lines: Vec<String> = (0..RULES)
                    .map(|i| format!("PUTVAL bench/load{i}/gauge N:{}", (n + i as u64) % 20))
                    .collect();
                connection.send_many(&lines);
                n += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            n * RULES as u64
        })
    };
    std::thread::sleep(Duration::from_secs(3));

    println!("status_http: {RULES} rules, {requests} sequential requests per endpoint");
    for path in ["/status", "/", "/metrics"] {
        let (code, body) = http_get(&addr, path, None);
        assert_eq!(code, 200, "{path}: {body}");
        if path == "/status" {
            let status: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(status["rules"].as_array().unwrap().len(), RULES);
        }
        let mut took: Vec<Duration> = (0..requests)
            .map(|_| {
                let start = Instant::now();
                let (code, _) = http_get(&addr, path, None);
                let t = start.elapsed();
                assert_eq!(code, 200);
                t
            })
            .collect();
        took.sort();
        let p99 = percentile(&took, 0.99);
        println!(
            "  GET {path:<9} p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms  ({} bytes){}",
            percentile(&took, 0.5).as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            took.last().unwrap().as_secs_f64() * 1e3,
            body.len(),
            if path == "/status" {
                format!(
                    "  budget < {} ms: {}",
                    BUDGET.as_millis(),
                    if p99 < BUDGET { "met" } else { "MISSED" }
                )
            } else {
                String::new()
            }
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let values = feeder.join().unwrap();
    let rows = site.history().len();
    println!("  meanwhile: {values} values through PUTVAL, {rows} decisions in the history");
    medic.stop();
}
