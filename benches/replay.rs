//! `medic replay` throughput: a day of 100 series at 10 s intervals (864 000 value lists, the
//! issue's budget: under 5 s), as JSON lines parsed and replayed through the real `threshold`
//! rule (compiled by Cranelift) subscribed to every series. Measured on a quarter of the day
//! per iteration; events/s is the figure, the day is 864 000 / that.
//!
//! Needs target/rules/threshold.wasm (scripts/build-rules.sh). Run:
//! `cargo bench -p medic-benches --bench replay`

use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use medic::config::Config;
use medic::replay::Replay;
use medic::replay::feed::read_lines;

const SERIES: usize = 100;
const INTERVAL_S: u64 = 10;
/// A quarter of a day per iteration.
const STEPS: u64 = 24 * 3600 / INTERVAL_S / 4;

const CONFIG: &str = r#"
[daemon]
node = "bench"
state_dir = "/nonexistent"

[rules.config.threshold]
pattern = "**"
above = 90.0
clear = 80.0
for = "5m"
service = "web"
command = "restart"

[services.web.commands]
restart = { run = ["true"], cooldown = "10m" }
"#;

/// 100 hosts' CPU use, mostly low, each above 90 % for a while once in the quarter day.
fn feed() -> String {
    let mut out = String::new();
    let t0 = 1_764_500_000u64;
    for step in 0..STEPS {
        let t = t0 + step * INTERVAL_S;
        for s in 0..SERIES {
            let busy = (step as usize + s * 20) % 2000 < 60;
            let value = if busy { 95.0 } else { 10.0 + (step % 7) as f64 };
            out.push_str(&format!(
                "{{\"kind\":\"values\",\"host\":\"host{s}\",\"plugin\":\"cpu\",\"plugin_instance\":\"\",\
                 \"type\":\"percent\",\"type_instance\":\"active\",\"time\":{t},\"interval\":10.0,\
                 \"dsnames\":[\"value\"],\"dstypes\":[\"gauge\"],\"values\":[{value}]}}\n"
            ));
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let rule = medic_integration::rule("threshold");
    let config = Config::parse(CONFIG, Path::new("bench.toml"), Path::new("/")).unwrap();
    let feed = feed();
    let events = STEPS * SERIES as u64;
    let mut g = c.benchmark_group("replay");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(30))
        .throughput(Throughput::Elements(events));
    g.bench_function("quarter-day-100-series", |b| {
        b.iter(|| {
            let mut replay = Replay::new(config.clone(), &rule, Default::default()).unwrap();
            for entry in read_lines(feed.as_bytes(), "feed".into()) {
                replay.entry(entry.unwrap()).unwrap();
            }
            let (lines, summary) = replay.finish();
            assert_eq!(summary.value_lists, events);
            assert!(!lines.is_empty());
            lines.len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
