//! Remote-command round trip through a real local mosquitto: a client publishes
//! `{task_id, timestamp, service: "hello", command: "exec"}` (an argv `echo`) on medic's command
//! topic and waits for the result with that task id. Reports p50/p99/max over sequential
//! commands, commands/s with 16 in flight, and the wall time of the `medic send` command line.
//!
//! `cargo bench -p medic-benches --bench mqtt_roundtrip` (MEDIC_RT_COUNT commands, default 1000;
//! MEDIC_RT_SENDS `medic send` runs, default 100). Needs `mosquitto` on PATH.

use medic_integration::bench::{env_or, percentile};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use medic::config::BrokerUrl;
use medic::mqtt::lcm;
use medic::mqtt::link::{Backoff, Link, LinkEvent};
use medic::mqtt::options::Connect;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_broker(dir: &Path, port: u16) -> Killed {
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_inflight_messages 0\nmax_queued_messages 100000\nuser root\nset_tcp_nodelay true\n"
        ),
    )
    .unwrap();
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto is not installed");
    wait_for("mosquitto", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Killed(child)
}

fn start_medic(dir: &Path, port: u16) -> Killed {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    let config = dir.join("medic.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[daemon]
node = "bench"
state_dir = "state"
[rules]
dir = "rules"
[mqtt]
broker = "mqtt://127.0.0.1:{port}"
[services.hello.commands]
exec = {{ run = ["echo", "Hello World!"], concurrency = 32 }}
"#
        ),
    )
    .unwrap();
    let log = dir.join("medic.log");
    let child = Command::new(medic_integration::bench::release_medic())
        .args(["run", "--log-level", "warn", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn,medic::mqtt=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for("medic to subscribe", Duration::from_secs(60), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("MQTT: subscribed")
    });
    Killed(child)
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{what}: n={} p50={:.2?} p99={:.2?} max={:.2?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples.last().unwrap()
    );
}

struct Client {
    link: Link,
    next_task: u64,
}

impl Client {
    async fn connect(port: u16) -> Self {
        let connect = Connect {
            url: BrokerUrl::parse(&format!("mqtt://127.0.0.1:{port}")).unwrap(),
            protocol: medic::config::MqttProtocol::V311,
            client_id: format!("bench-{}", std::process::id()),
            credentials: None,
            ca_file: None,
            insecure: false,
            keepalive: Duration::from_secs(30),
            clean_session: true,
            last_will: None,
            max_message: 1 << 20,
        };
        let backoff = Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let mut link = Link::start(&connect, backoff, "bench").unwrap();
        loop {
            match link.events.recv().await.unwrap() {
                LinkEvent::Connected { .. } => {
                    link.client
                        .subscribe(&["medic/bench/result".to_string()], 2)
                        .unwrap();
                }
                LinkEvent::Subscribed => break,
                _ => {}
            }
        }
        Self {
            link,
            next_task: medic::cli::send::fresh_task_id(),
        }
    }

    fn send(&mut self) -> u64 {
        self.next_task += 1;
        let payload = lcm::command_payload(self.next_task, "hello", "exec");
        self.link
            .client
            .publish("medic/bench/command", 2, false, payload)
            .unwrap();
        self.next_task
    }

    /// The next result's task id (and that it succeeded).
    async fn result(&mut self) -> u64 {
        loop {
            if let LinkEvent::Message(p) = self.link.events.recv().await.unwrap() {
                self.link.client.ack(&p);
                let reply: lcm::Reply = serde_json::from_slice(&p.payload).unwrap();
                assert_eq!(reply.code, 0, "{}", reply.message);
                return reply.task_id.as_u64().unwrap();
            }
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run a short smoke.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let count = if smoke {
        20
    } else {
        env_or("MEDIC_RT_COUNT", 1000)
    };
    let sends = if smoke {
        3
    } else {
        env_or("MEDIC_RT_SENDS", 100)
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = start_broker(dir.path(), port);
    let _medic = start_medic(dir.path(), port);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = Client::connect(port).await;
        // Warm up: the first commands pay for SQLite pages and process-spawn caches.
        for _ in 0..20 {
            let id = client.send();
            assert_eq!(client.result().await, id);
        }
        let mut samples = Vec::with_capacity(count);
        for _ in 0..count {
            let started = Instant::now();
            let id = client.send();
            assert_eq!(client.result().await, id);
            samples.push(started.elapsed());
        }
        report("round trip, one at a time", samples);

        let in_flight = 16;
        let total = count.max(in_flight) * 2;
        let started = Instant::now();
        let mut outstanding = 0;
        let mut done = 0;
        let mut issued = 0;
        while done < total {
            while outstanding < in_flight && issued < total {
                client.send();
                issued += 1;
                outstanding += 1;
            }
            client.result().await;
            outstanding -= 1;
            done += 1;
        }
        let took = started.elapsed();
        println!(
            "throughput, {in_flight} in flight: {total} commands in {took:.2?} = {:.0} commands/s",
            total as f64 / took.as_secs_f64()
        );
    });

    let mut wall = Vec::with_capacity(sends);
    for _ in 0..sends {
        let started = Instant::now();
        let out = Command::new(medic_integration::bench::release_medic())
            .args(["send", "hello", "exec", "--node", "bench"])
            .args(["--broker", &format!("mqtt://127.0.0.1:{port}")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        wall.push(started.elapsed());
    }
    report("`medic send` command line (process start to exit)", wall);
}
