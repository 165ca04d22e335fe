//! Memory per rule: the release medic with 0, 1, 20 and 100 rules loaded (copies of
//! `threshold` under different names, each with its own config), idle; RSS and PSS from
//! /proc/PID/smaps_rollup, and what each rule adds.
//!
//! Budget (issue 9): < 40 MiB RSS with 20 rules. `cargo bench -p medic-benches --bench rule_memory`.
//! Needs target/rules/threshold.wasm (scripts/build-rules.sh).

use std::time::Duration;

use medic_integration::{Medic, Site};

/// `field` of /proc/PID/smaps_rollup, in MiB.
fn rollup_mib(medic: &Medic, field: &str) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", medic.pid())).unwrap();
    let kib: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("the field in smaps_rollup");
    kib / 1024.0
}

fn measure(rules: usize) -> (f64, f64, f64) {
    let site = Site::new();
    let mut config = String::new();
    for i in 0..rules {
        site.add_rule("threshold", &format!("t{i}"));
        config.push_str(&format!(
            "[rules.config.t{i}]\npattern = \"bench/load{i}/gauge\"\nabove = 10\nclear = 5\n\
             service = \"svc\"\ncommand = \"fix\"\n"
        ));
    }
    config.push_str("[services.svc.commands]\nfix = \"true\"\n");
    site.write_config(&config);
    // Twice: the second start loads every build from the compile cache, as a restart does. A
    // new build is cached once its optimized compile (in the background) is done.
    let first = site.start_binary(&medic_integration::bench::release_medic(), "info");
    if rules > 0 {
        first.expect_log("rule tiered up", Duration::from_secs(60));
    }
    first.stop();
    let medic = site.start_binary(&medic_integration::bench::release_medic(), "info");
    medic.putval(&["PUTVAL bench/load0/gauge N:1"]);
    std::thread::sleep(Duration::from_secs(2));
    let measured = (
        rollup_mib(&medic, "Rss"),
        rollup_mib(&medic, "Pss"),
        rollup_mib(&medic, "Anonymous"),
    );
    medic.stop();
    measured
}

fn main() {
    println!("rule_memory: release medic, idle, rules loaded from the compile cache");
    let (base, _, _) = measure(0);
    for rules in [0, 1, 20, 100] {
        let (rss, pss, anon) = measure(rules);
        let per_rule = if rules > 0 {
            format!("  (+{:.2} MiB RSS per rule)", (rss - base) / rules as f64)
        } else {
            String::new()
        };
        println!(
            "  {rules:>3} rules: RSS {rss:6.1} MiB  PSS {pss:6.1} MiB  anonymous {anon:6.1} MiB{per_rule}"
        );
    }
}
