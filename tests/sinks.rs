//! Rules as stream connectors, on real parts: the compiled `influx-forward` rule turns values
//! that reach medic's PUTVAL socket into Influx line protocol for a `file` sink; a rule not
//! granted the sink is refused; the file is reopened on SIGHUP after logrotate moved it; what
//! is queued is written before medic stops.

use std::time::Duration;

use medic_integration::{Site, wait_until};

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn emitted_records_reach_a_file_sink_only_from_granted_rules() {
    let site = Site::new();
    site.add_rule("influx-forward", "influx-forward");
    site.add_rule("influx-forward", "rogue");
    let out = site.path("records.log");
    let http = format!("127.0.0.1:{}", medic_integration::free_tcp_port());
    site.write_config(&format!(
        r#"
[rules.config.influx-forward]
patterns = ["*/load/load"]
sink = "archive"

[rules.config.rogue]
patterns = ["*/memory/*"]
sink = "archive"

[rules.grants.influx-forward]
sinks = ["archive"]

[sinks.archive]
kind = "file"
path = {path:?}

[http]
listen = "{http}"
"#,
        path = out.display().to_string()
    ));
    let medic = site.start();
    let replies = medic.putval(&[
        "PUTVAL web/load/load interval=10 1764500000:0.5:1:1.5",
        "PUTVAL web/memory/memory-free interval=10 1764500000:1000",
        "PUTVAL web/load/load interval=10 1764500010.25:0.75:1:1.5",
    ]);
    assert!(replies.iter().all(|r| r.starts_with("0 ")), "{replies:?}");
    let lines = || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert!(wait_until(WAIT, || lines().len() >= 2), "{:?}", lines());
    assert_eq!(
        lines(),
        [
            "load,host=web,type=load shortterm=0.5,midterm=1.0,longterm=1.5 1764500000000000000",
            "load,host=web,type=load shortterm=0.75,midterm=1.0,longterm=1.5 1764500010250000000",
        ]
    );
    medic.expect_log(
        "emit refused: sink `archive` is not granted to this rule (rules.grants.rogue.sinks)",
        WAIT,
    );
    // /status shows the sink's deliveries and the refusal. The count is taken after the write
    // the file test above waited for: wait for it too.
    let status = || {
        let (code, body) = medic_integration::http_get(&http, "/status", None);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    assert!(
        wait_until(WAIT, || status()["sinks"][0]["delivered"] == 2),
        "{}",
        status()
    );
    let status = status();
    let sink = &status["sinks"][0];
    assert_eq!(sink["name"], "archive", "{status}");
    assert_eq!(sink["kind"], "file");
    assert_eq!(sink["delivered"], 2);
    assert_eq!(sink["refused"], 1);
    assert_eq!(sink["dropped"], 0);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&out).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // logrotate: move the file, SIGHUP; new records go to a new file of the same name.
    let rotated = site.path("records.log.1");
    std::fs::rename(&out, &rotated).unwrap();
    medic.signal(1);
    medic.expect_log("sink file reopened", WAIT);
    medic.putval(&["PUTVAL web/load/load interval=10 1764500020:2:1:1.5"]);
    assert!(wait_until(WAIT, || lines().len() == 1), "{:?}", lines());
    assert!(lines()[0].contains("shortterm=2.0"), "{:?}", lines());
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap().lines().count(),
        2
    );

    // Queued records are written before medic stops.
    medic.putval(&["PUTVAL web/load/load interval=10 1764500030:3:1:1.5"]);
    medic.stop();
    assert!(
        lines().iter().any(|l| l.contains("shortterm=3.0")),
        "{:?}",
        lines()
    );
}

/// A real VictoriaMetrics (Debian's victoria-metrics) on loopback with its own data directory.
struct Victoria {
    child: Option<std::process::Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Victoria {
    fn start() -> Self {
        let mut vm = Victoria {
            child: None,
            port: medic_integration::free_tcp_port(),
            dir: tempfile::tempdir().unwrap(),
        };
        vm.resume();
        vm
    }

    /// (Re)start on the same port and data.
    fn resume(&mut self) {
        let child = std::process::Command::new("victoria-metrics")
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg(format!("-storageDataPath={}", self.dir.path().display()))
            // The points are from 2025: keep them (the default retention is a month).
            .arg("-retentionPeriod=100y")
            .arg("-loggerLevel=ERROR")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("victoria-metrics is missing: apt-get install victoria-metrics");
        self.child = Some(child);
        let addr = self.addr();
        assert!(
            wait_until(WAIT, || std::net::TcpStream::connect(&addr).is_ok()
                && medic_integration::http_get(&addr, "/health", None).0 == 200),
            "victoria-metrics did not come up"
        );
    }

    /// A clean stop (SIGTERM: it writes out what it holds in memory, as a service stop does).
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The timestamps (ms) of `metric`'s samples with their tags, every series together.
    fn samples(&self, metric: &str) -> Vec<(serde_json::Value, i64)> {
        let addr = self.addr();
        medic_integration::http_get(&addr, "/internal/force_flush", None);
        let (code, body) = medic_integration::http_get(
            &addr,
            &format!("/api/v1/export?match%5B%5D={metric}"),
            None,
        );
        assert_eq!(code, 200, "{body}");
        let mut out = Vec::new();
        for line in body.lines() {
            let series: serde_json::Value = serde_json::from_str(line).unwrap();
            for t in series["timestamps"].as_array().unwrap() {
                out.push((series["metric"].clone(), t.as_i64().unwrap()));
            }
        }
        out.sort_by_key(|s| s.1);
        out
    }
}

impl Drop for Victoria {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Answers every request with 400 (a destination that will never take the records).
fn refusing_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = [0u8; 65536];
            let _ = std::io::Read::read(&mut stream, &mut buf);
            let _ = std::io::Write::write_all(
                &mut stream,
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 3\r\nconnection: close\r\n\r\nno\n",
            );
        }
    });
    port
}

fn vm_site(vm: &Victoria, refusing: u16) -> Site {
    let site = Site::new();
    site.add_rule("influx-forward", "influx-forward");
    site.add_rule("influx-forward", "to-nowhere");
    site.write_config(&format!(
        r#"
[rules.config.influx-forward]
patterns = ["*/load/load"]
sink = "vm"

[rules.config.to-nowhere]
patterns = ["*/load/load"]
sink = "refusing"

[rules.grants.influx-forward]
sinks = ["vm"]

[rules.grants.to-nowhere]
sinks = ["refusing"]

[sinks.vm]
kind = "http"
url = "http://{vm}/write"
max_batch = 50
max_age = "200ms"
timeout = "2s"

[sinks.refusing]
kind = "http"
url = "http://127.0.0.1:{refusing}/write"
max_age = "200ms"
"#,
        vm = vm.addr()
    ));
    site
}

/// `count` load value lists from `first` (seconds), one a second of collectd time.
fn load_values(medic: &medic_integration::Medic, first: u64, count: u64) {
    let lines: Vec<String> = (first..first + count)
        .map(|t| format!("PUTVAL web/load/load interval=1 {t}.5:{}:1:1.5", t % 7))
        .collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let replies = medic.putval(&refs);
    assert!(replies.iter().all(|r| r.starts_with("0 ")), "{replies:?}");
}

/// The ms timestamps of `load_shortterm` from `first` for `count` seconds, as sent.
fn expected_ms(first: u64, count: u64) -> Vec<i64> {
    (first..first + count)
        .map(|t| (t * 1000 + 500) as i64)
        .collect()
}

#[test]
fn an_http_sink_delivers_every_point_to_victoria_metrics_across_an_outage_and_a_crash() {
    let mut vm = Victoria::start();
    let refusing = refusing_server();
    let site = vm_site(&vm, refusing);
    let mut medic = site.start();
    let t0 = 1_764_500_000;

    // Every point, with its tags and its own time.
    load_values(&medic, t0, 20);
    let shortterm = |vm: &Victoria| vm.samples("load_shortterm");
    assert!(
        wait_until(WAIT, || shortterm(&vm).len() == 20),
        "{:?}",
        shortterm(&vm)
    );
    let got = shortterm(&vm);
    assert_eq!(got[0].0["host"], "web");
    assert_eq!(got[0].0["type"], "load");
    assert_eq!(
        got.iter().map(|s| s.1).collect::<Vec<_>>(),
        expected_ms(t0, 20)
    );
    // The refusing destination: dropped for good and said; the other sink kept flowing.
    medic.expect_log("sink refused a batch for good (HTTP 400 Bad Request)", WAIT);

    // VictoriaMetrics away for a while: records wait on disk, then all arrive, once each.
    vm.stop();
    load_values(&medic, t0 + 20, 20);
    medic.expect_log("keeping records on disk", WAIT);
    std::thread::sleep(Duration::from_secs(10));
    vm.resume();
    load_values(&medic, t0 + 40, 10);
    assert!(
        wait_until(Duration::from_secs(60), || shortterm(&vm).len() >= 50),
        "{:?}\n{}",
        shortterm(&vm).iter().map(|s| s.1).collect::<Vec<_>>(),
        medic.log_lines_with("sink").join("\n")
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        shortterm(&vm).iter().map(|s| s.1).collect::<Vec<_>>(),
        expected_ms(t0, 50),
        "every point once, in time order"
    );

    // medic killed while records wait on disk: they go out after the next start.
    vm.stop();
    load_values(&medic, t0 + 50, 10);
    medic.expect_log("keeping records on disk", WAIT);
    std::thread::sleep(Duration::from_millis(500));
    medic.signal(9);
    assert!(wait_until(WAIT, || !medic.is_running()));
    vm.resume();
    let medic = site.start();
    assert!(
        wait_until(Duration::from_secs(60), || shortterm(&vm).len() >= 60),
        "{}",
        medic.log()
    );
    assert_eq!(
        shortterm(&vm).iter().map(|s| s.1).collect::<Vec<_>>(),
        expected_ms(t0, 60)
    );
    medic.stop();
}

/// `[history] forward`: every audit record also goes to a sink as JSON, with no rule involved.
#[test]
fn audit_records_are_forwarded_to_a_sink() {
    let site = Site::new();
    site.add_rule("threshold", "threshold");
    let audit = site.path("audit.jsonl");
    site.write_config(&format!(
        r#"
[rules.config.threshold]
pattern = "*/load/load"
data_source = "shortterm"
above = 1.0
service = "hello"
command = "exec"

[services.hello.commands]
exec = "echo Hello World!"

[history]
forward = "audit"

[sinks.audit]
kind = "file"
path = {path:?}
"#,
        path = audit.display().to_string()
    ));
    let medic = site.start();
    medic.putval(&["PUTVAL web/load/load N:5:1:1"]);
    let records = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    assert!(
        wait_until(WAIT, || records().iter().any(|r| r["kind"] == "ended")),
        "{:?}\n{}",
        records(),
        medic.log()
    );
    let records = records();
    let asked = records.iter().find(|r| r["kind"] == "asked").unwrap();
    assert_eq!(asked["origin"], "threshold");
    assert_eq!(asked["service"], "hello");
    let ended = records.iter().find(|r| r["kind"] == "ended").unwrap();
    assert_eq!(ended["action_id"], asked["action_id"]);
    assert_eq!(ended["state"], "succeeded");
    assert_eq!(ended["output"], "Hello World!\n");
    medic.stop();
}

/// A webhook that keeps every request body it is sent, answering 204.
fn capturing_server() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let kept = kept.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                loop {
                    let mut length = 0;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    kept.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&body).into_owned());
                    if stream
                        .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (port, bodies)
}

/// notify-webhook → an `http` sink with `format = "json"`: a JSON array of notifications.
#[test]
fn notifications_reach_a_webhook_as_a_json_array() {
    let (port, bodies) = capturing_server();
    let site = Site::new();
    site.add_rule("notify-webhook", "notify-webhook");
    site.write_config(&format!(
        r#"
[rules.config.notify-webhook]
patterns = ["**"]
sink = "webhook"

[rules.grants.notify-webhook]
sinks = ["webhook"]

[sinks.webhook]
kind = "http"
url = "http://127.0.0.1:{port}/hook"
format = "json"
max_age = "100ms"
"#
    ));
    let medic = site.start();
    let replies = medic.putval(&[
        "PUTNOTIF severity=failure time=1764500000 host=web plugin=ping type=ping type_instance=gw message=\"gateway unreachable\"",
    ]);
    assert!(replies[0].starts_with("0 "), "{replies:?}");
    assert!(
        wait_until(WAIT, || !bodies.lock().unwrap().is_empty()),
        "{}",
        medic.log()
    );
    let body = bodies.lock().unwrap()[0].clone();
    let array: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(array[0]["severity"], "failure", "{body}");
    assert_eq!(array[0]["message"], "gateway unreachable");
    assert_eq!(array[0]["type_instance"], "gw");
    medic.stop();
}

/// A real collectd's values, through medic's network listener and `influx-forward`, reach
/// VictoriaMetrics: every line the same rule wrote to a file sink is a point there, with its
/// tags and time.
#[test]
fn a_real_collectds_values_all_reach_victoria_metrics() {
    let vm = Victoria::start();
    let site = Site::new();
    site.add_rule("influx-forward", "to-vm");
    site.add_rule("influx-forward", "to-file");
    let udp = medic_integration::free_udp_port();
    let lines_file = site.path("load.lines");
    site.write_config(&format!(
        r#"
[ingest.network]
listen = ["127.0.0.1:{udp}"]

[rules.config.to-vm]
patterns = ["*/load/load"]
sink = "vm"

[rules.config.to-file]
patterns = ["*/load/load"]
sink = "file"

[rules.grants.to-vm]
sinks = ["vm"]

[rules.grants.to-file]
sinks = ["file"]

[sinks.vm]
kind = "http"
url = "http://{vm}/write"
max_age = "200ms"

[sinks.file]
kind = "file"
path = {path:?}
"#,
        vm = vm.addr(),
        path = lines_file.display().to_string()
    ));
    let medic = site.start();
    let collectd = medic_integration::Collectd::start(
        site.dir.path(),
        &format!(
            "LoadPlugin network\n<Plugin network>\n  Server \"127.0.0.1\" \"{udp}\"\n</Plugin>\n"
        ),
    );
    let written = || {
        std::fs::read_to_string(&lines_file)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert!(wait_until(WAIT, || written().len() >= 4), "{}", medic.log());
    drop(collectd);
    // `load,host=medic-test,type=load shortterm=…,midterm=…,longterm=… <ns>`, in ms.
    let sent_ms = || {
        let mut ms: Vec<i64> = written()
            .iter()
            .map(|l| {
                assert!(
                    l.starts_with("load,host=medic-test,type=load shortterm="),
                    "{l}"
                );
                l.rsplit(' ').next().unwrap().parse::<i64>().unwrap() / 1_000_000
            })
            .collect();
        ms.sort();
        ms
    };
    let in_vm = || vm.samples("load_shortterm");
    // Every line written is a point in VictoriaMetrics, none more.
    assert!(
        wait_until(WAIT, || in_vm().iter().map(|s| s.1).collect::<Vec<_>>()
            == sent_ms()),
        "{:?} vs {:?}",
        in_vm(),
        sent_ms()
    );
    let got = in_vm();
    assert_eq!(got[0].0["host"], "medic-test");
    medic.stop();
}
