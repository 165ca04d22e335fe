//! Records/s one `http` sink delivers to a real VictoriaMetrics on loopback (Debian's
//! `victoria-metrics`, started here on its own port and data directory): 300 000 lines of Influx
//! line protocol emitted at once, timed until the last batch is acknowledged (2xx). Budget:
//! ≥ 100 000 records/s, and emitting never waits. A load tool: it prints its figures.
//!
//! Run: `cargo bench -p medic-benches --bench sink_http`

use std::path::Path;
use std::time::{Duration, Instant};

use medic::config::Config;
use medic::effects::sinks::Sinks;
use medic::metrics::{SinkLabels, metrics};

const RECORDS: u64 = 300_000;

fn sink_count(sink: &str, outcome: &'static str) -> u64 {
    let labels = SinkLabels {
        sink: sink.into(),
        outcome,
    };
    metrics().sink_records.get_or_create(&labels).get()
}

fn main() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = tempfile::tempdir().unwrap();
    let mut vm = std::process::Command::new("victoria-metrics")
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg(format!("-storageDataPath={}", data.path().display()))
        .arg("-retentionPeriod=100y")
        .arg("-loggerLevel=ERROR")
        .spawn()
        .expect("apt-get install victoria-metrics");
    let up = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            up.elapsed() < Duration::from_secs(20),
            "victoria-metrics did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let state = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[daemon]
node = "bench"
state_dir = {state:?}

[rules.grants.bench]
sinks = ["vm"]

[sinks.vm]
kind = "http"
url = "http://127.0.0.1:{port}/write"
max_batch = 5000
max_age = "100ms"
queue = {RECORDS}
"#,
        state = state.path().display().to_string()
    );
    let config = Config::parse(&text, Path::new("bench.toml"), Path::new("/")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (sinks, tasks) = Sinks::start(&config).unwrap();
        let records: Vec<Vec<u8>> = (0..RECORDS)
            .map(|i| {
                format!(
                    "load,host=host{},type=load shortterm={}.5,midterm=1,longterm=1 {}",
                    i % 100,
                    i % 7,
                    1_764_500_000_000_000_000 + i * 1_000_000
                )
                .into_bytes()
            })
            .collect();
        let started = Instant::now();
        for r in records {
            sinks.emit("bench", "vm", r);
        }
        let emitted = started.elapsed();
        while sink_count("vm", "sent") < RECORDS {
            assert!(
                sink_count("vm", "dropped") == 0,
                "records dropped: the queue or the destination refused them"
            );
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "not delivered in time"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let delivered = started.elapsed();
        println!(
            "sink_http: {RECORDS} records emitted in {emitted:.2?} ({:.0} ns each, never waiting); \
             delivered to VictoriaMetrics in {delivered:.2?}: {:.0} records/s",
            emitted.as_nanos() as f64 / RECORDS as f64,
            RECORDS as f64 / delivered.as_secs_f64()
        );
        sinks.stop();
        for t in tasks {
            let _ = t.await;
        }
    });
    let _ = vm.kill();
    let _ = vm.wait();
}
