//! What operators meet, on real parts: a running medic's HTTP side read the way people and
//! their tools read it. A real collectd feeds it, a compiled rule asks for a command that keeps
//! failing; `/status` and `medic status` show it, `/history` pages it, `promtool` accepts
//! `/metrics` and its counters move, a real Atom parser reads `/feed.atom`, and a headless
//! Chromium renders the page with the rule and the command on it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use medic_integration::{
    Collectd, Site, free_tcp_port, free_udp_port, http_get, medic_bin, wait_until,
};

const WAIT: Duration = Duration::from_secs(20);

/// A site with the `flaky` counter rule asking for `svc/fix` (which fails) on every batch of
/// `*/flaky/*` values, a network listener on `udp` and the HTTP side on `http`, plus `extra`.
fn site(udp: u16, http: u16, extra: &str) -> Site {
    let site = Site::named("web-1");
    site.add_rule("counter", "flaky");
    site.write_config(&format!(
        r#"
[ingest.network]
listen = ["127.0.0.1:{udp}"]

[http]
listen = "127.0.0.1:{http}"
{extra}

[rules.config.flaky]
pattern = "*/flaky/*"
run = ["svc", "fix"]
every_batch = true

[services.svc.commands]
fix = {{ run = "echo cannot fix; exit 1", breaker = {{ failures = 2, within = "1m", open_for = "1h" }} }}
"#
    ));
    site
}

fn cli(site: &Site, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(medic_bin())
        .args(args)
        .arg("--config")
        .arg(site.path("medic.toml"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The value of one sample line of the exposition (`name{labels} value`).
fn sample(metrics: &str, name_and_labels: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

#[test]
fn status_history_metrics_feed_and_page_over_http() {
    let (udp, http) = (free_udp_port(), free_tcp_port());
    let site = site(udp, http, "");
    let medic = site.start();
    let addr = format!("127.0.0.1:{http}");
    let _collectd = Collectd::start(
        site.dir.path(),
        &format!(
            "<LoadPlugin network>\n  FlushInterval 1\n</LoadPlugin>\n<Plugin network>\n  \
             <Server \"127.0.0.1\" \"{udp}\">\n  </Server>\n</Plugin>\n"
        ),
    );
    // Three requests: two failures open the breaker, the third is refused.
    for i in 1..=3 {
        medic.putval(&[&format!("PUTVAL h/flaky/gauge N:{i}")]);
        assert!(
            wait_until(WAIT, || medic
                .log_lines_with("counter result svc/fix")
                .len()
                >= i),
            "{}",
            medic.log()
        );
    }
    let garbage = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    garbage
        .send_to(b"not collectd", ("127.0.0.1", udp))
        .unwrap();

    // /status, and `medic status` reading it.
    let status = || {
        let (code, body) = http_get(&addr, "/status", None);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    assert!(
        wait_until(WAIT, || {
            let s = status();
            s["sources"].as_array().unwrap().iter().any(|src| {
                src["kind"] == "network"
                        && src["values"].as_u64() > Some(0)
                        // The garbage datagram may be read after collectd's first values.
                        && src["refused"]["malformed"] == 1
            })
        }),
        "collectd's values and the refused datagram never showed in /status: {}",
        status()
    );
    let s = status();
    assert_eq!(s["node"], "web-1");
    let rule = &s["rules"][0];
    assert_eq!(
        (rule["name"].as_str(), rule["state"].as_str()),
        (Some("flaky"), Some("serving"))
    );
    assert_eq!(rule["build"], site.build_of("flaky").as_str());
    let fix = &s["commands"][0];
    assert_eq!(fix["breaker"]["state"], "open", "{fix}");
    assert_eq!(fix["last"]["outcome"], "failed", "{fix}");
    let network = s["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|src| src["kind"] == "network")
        .unwrap();
    assert_eq!(network["refused"]["malformed"], 1, "{network}");

    let (ok, table, err) = cli(&site, &["status"]);
    assert!(ok, "{err}");
    assert!(
        table.contains("flaky") && table.contains("serving"),
        "{table}"
    );
    assert!(
        table.contains("svc/fix") && table.contains("OPEN"),
        "{table}"
    );
    let (ok, json, err) = cli(&site, &["status", "--json"]);
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&json).unwrap()["node"],
        "web-1"
    );

    // /history: every decision with the build, a page at a time; bad parameters are a 400.
    let (code, body) = http_get(&addr, "/history?failed=1&limit=2", None);
    assert_eq!(code, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    let states: Vec<&str> = page["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["refused", "failed"], "{body}");
    assert!(
        page["rows"][0]["refusal"]
            .as_str()
            .unwrap()
            .starts_with("circuit open")
    );
    assert_eq!(page["rows"][0]["build"], site.build_of("flaky").as_str());
    let next = page["next"]
        .as_str()
        .expect("a full page has a next cursor");
    let (_, body) = http_get(
        &addr,
        &format!("/history?failed=1&limit=2&before={next}"),
        None,
    );
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["rows"][0]["state"], "failed", "{body}");
    for bad in ["/history?since=yesterday", "/history?rules=flaky"] {
        let (code, body) = http_get(&addr, bad, None);
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(body.contains("\"error\""), "{body}");
    }

    // /metrics: promtool accepts it, and the counters tell what happened.
    let (code, metrics) = http_get(&addr, "/metrics", None);
    assert_eq!(code, 200);
    let file = site.path("metrics.txt");
    std::fs::write(&file, &metrics).unwrap();
    let check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("promtool is missing: apt-get install prometheus");
    assert!(
        check.status.success(),
        "promtool check metrics: {}{}\n{metrics}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let network = format!("{{source=\"network\",listener=\"127.0.0.1:{udp}\"}}");
    assert!(sample(&metrics, &format!("medic_values_received_total{network}")) > Some(0.0));
    let malformed = format!(
        "medic_ingest_refused_total{{source=\"network\",listener=\"127.0.0.1:{udp}\",reason=\"malformed\"}}"
    );
    assert_eq!(sample(&metrics, &malformed), Some(1.0), "{metrics}");
    let failed = "medic_commands_total{service=\"svc\",command=\"fix\",outcome=\"failed\"}";
    assert_eq!(sample(&metrics, failed), Some(2.0), "{metrics}");
    let refused = "medic_policy_refusals_total{reason=\"circuit_open\"}";
    assert_eq!(sample(&metrics, refused), Some(1.0), "{metrics}");
    let open = "medic_breaker_open{service=\"svc\",command=\"fix\"}";
    assert_eq!(sample(&metrics, open), Some(1.0), "{metrics}");
    let calls = "medic_rule_call_duration_seconds_count{rule=\"flaky\"}";
    assert!(sample(&metrics, calls) >= Some(3.0), "{metrics}");
    // They move with the traffic.
    medic.putval(&["PUTVAL h/other/gauge N:1"]);
    let putval = format!(
        "medic_values_received_total{{source=\"putval\",listener=\"{}\"}}",
        site.socket().display()
    );
    assert_eq!(
        sample(&http_get(&addr, "/metrics", None).1, &putval),
        Some(4.0)
    );

    // /feed.atom, read by a real feed parser.
    let (code, atom) = http_get(&addr, "/feed.atom", None);
    assert_eq!(code, 200);
    let feed = feed_rs::parser::parse(atom.as_bytes()).expect("a valid Atom feed");
    let titles: Vec<String> = feed
        .entries
        .iter()
        .map(|e| e.title.as_ref().unwrap().content.clone())
        .collect();
    assert_eq!(titles[0], "refused svc/fix", "{titles:?}");
    assert!(
        titles
            .iter()
            .any(|t| t.starts_with("failure: circuit opened")),
        "{titles:?}"
    );
    assert_eq!(
        titles
            .iter()
            .filter(|t| *t == "failed svc/fix (exit 1)")
            .count(),
        2,
        "{titles:?}"
    );

    // The page, in a real browser.
    let (dom, png) = chromium(&format!("http://{addr}/"), site.dir.path());
    for needle in [
        "medic on web-1",
        "flaky",
        "svc/fix",
        "circuit open",
        "refused",
    ] {
        assert!(dom.contains(needle), "{needle:?} not on the page:\n{dom}");
    }
    let shot = std::fs::metadata(&png).expect("a screenshot").len();
    assert!(shot > 10_000, "screenshot is only {shot} bytes");
    // To look at it: MEDIC_SCREENSHOT_DIR=/tmp cargo test --test operators
    if let Some(keep) = std::env::var_os("MEDIC_SCREENSHOT_DIR") {
        std::fs::copy(&png, Path::new(&keep).join("medic-page.png")).unwrap();
    }
    medic.stop();
}

/// With `token_file`, nothing answers without the token; `medic status` sends it.
#[test]
fn the_token_guards_every_endpoint() {
    let (udp, http) = (free_udp_port(), free_tcp_port());
    let site = site(udp, http, "token_file = \"token\"");
    let token = "0123456789abcdef0123456789abcdef";
    std::fs::write(site.path("token"), format!("{token}\n")).unwrap();
    let medic = site.start();
    let addr = format!("127.0.0.1:{http}");
    for path in ["/", "/status", "/history", "/metrics", "/feed.atom"] {
        assert_eq!(http_get(&addr, path, None).0, 401, "{path}");
        assert_eq!(http_get(&addr, path, Some("wrong")).0, 401, "{path}");
        assert_eq!(http_get(&addr, path, Some(token)).0, 200, "{path}");
    }
    let (ok, table, err) = cli(&site, &["status"]);
    assert!(ok && table.contains("flaky"), "{table}{err}");
    let url = format!("http://{addr}");
    let out = Command::new(medic_bin())
        .args(["status", "--url", &url])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("answered 401"),
        "{err}"
    );
    medic.stop();

    // A wider listen address without a token is refused at start, with the reason.
    site.set("http", "listen = \"0.0.0.0:9\"");
    std::fs::write(
        site.path("medic.toml"),
        std::fs::read_to_string(site.path("medic.toml"))
            .unwrap()
            .replace("token_file = \"token\"\n", "")
            .replace(&format!("listen = \"127.0.0.1:{http}\"\n"), ""),
    )
    .unwrap();
    let out = site.check();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("set http.token_file"),
        "{err}"
    );
}

/// Chromium loads `url` headless: the DOM it built, and a screenshot in `dir`.
fn chromium(url: &str, dir: &Path) -> (String, std::path::PathBuf) {
    let png = dir.join("page.png");
    let run = |extra: &[&str]| {
        let profile = tempfile::tempdir().unwrap();
        let out = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1200,1600",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(url)
            .output()
            .expect("chromium is missing: apt-get install chromium");
        assert!(
            out.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = run(&["--dump-dom"]);
    run(&[&format!("--screenshot={}", png.display())]);
    (dom, png)
}

/// Another process holds the history database's write lock (as a stuck backup or a full disk
/// would stop writes): medic logs and counts the failed audit writes, while values still reach
/// the rule and the command it asks for still runs; once the lock is gone, the decisions are
/// written after all.
#[test]
fn a_locked_history_is_counted_while_rules_and_commands_go_on() {
    let (udp, http) = (free_udp_port(), free_tcp_port());
    let site = site(udp, http, "");
    let marker = site.path("marker");
    let text = std::fs::read_to_string(site.path("medic.toml"))
        .unwrap()
        .replace(
            "fix = { run = \"echo cannot fix; exit 1\"",
            &format!("fix = {{ run = \"echo ran >> '{}'\"", marker.display()),
        );
    std::fs::write(site.path("medic.toml"), text).unwrap();
    let medic = site.start();
    let addr = format!("127.0.0.1:{http}");
    let db = site.path("state/medic.db");
    let mut locker = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             print('locked', flush=True)\n\
             time.sleep(float(sys.argv[2]))\n",
        ])
        .arg(&db)
        .arg("15")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs the locker");
    let mut said = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(locker.stdout.as_mut().unwrap()),
        &mut said,
    )
    .unwrap();
    assert_eq!(said.trim(), "locked");
    let locked_at = std::time::Instant::now();

    medic.putval(&["PUTVAL h/flaky/gauge N:1"]);
    assert!(
        wait_until(WAIT, || std::fs::read_to_string(&marker)
            .is_ok_and(|m| m == "ran\n")),
        "the command did not run while the history was locked:\n{}",
        medic.log()
    );
    for i in 2..=5 {
        medic.putval(&[&format!("PUTVAL h/flaky/gauge N:{i}")]);
    }
    assert!(
        wait_until(WAIT, || medic_integration::max_seen(medic.log().lines())
            >= 5),
        "values stopped reaching the rule:\n{}",
        medic.log()
    );
    assert!(
        locked_at.elapsed() < Duration::from_secs(15),
        "the lock was gone before the checks"
    );
    assert!(
        !medic.log().contains("rule faulted"),
        "a locked database made the rule miss its deadline:\n{}",
        medic.log()
    );
    medic.expect_log("audit history cannot be written", WAIT);
    let failures = "medic_history_write_failures_total";
    assert!(
        wait_until(WAIT, || sample(
            &http_get(&addr, "/metrics", None).1,
            failures
        ) >= Some(1.0)),
        "{}",
        http_get(&addr, "/metrics", None).1
    );
    let (code, status) = http_get(&addr, "/status", None);
    assert_eq!(code, 200);
    assert!(status.contains("\"write_failures\":"), "{status}");
    let _ = locker.kill();
    let _ = locker.wait();
    // The writes that failed are retried once the lock is gone: the decision is on record.
    assert!(
        wait_until(WAIT, || site
            .history()
            .iter()
            .any(|r| r["command"] == "fix" && r["state"] == "succeeded")),
        "{:?}\n{}",
        site.history(),
        medic.log()
    );
    medic.stop();
}

/// `medic history` beside a running daemon leaves the daemon's database to it. SQLite marks a
/// live connection with a shared POSIX lock on byte 128 of `medic.db-shm` (the "DMS" lock of
/// its unix VFS); a process that can take that byte exclusively believes it is the first
/// connection and truncates the shared memory. medic used to chmod its files after SQLite had
/// opened them, and closing that descriptor dropped every lock the process held on the file:
/// `medic history` then truncated the shared memory under the daemon, which died of SIGBUS
/// mid-run (seen in tests/lcm_lua.rs as a log that stops).
#[test]
fn medic_history_beside_the_daemon_leaves_its_database_alone() {
    let site = Site::new();
    site.add_rule("counter", "asker");
    site.write_config(
        r#"
[rules.config.asker]
pattern = "*/ask/*"
run = ["hello", "exec"]
every_batch = true

[services.hello.commands]
exec = "true"
"#,
    );
    let mut medic = site.start();
    let shm = site.path("state/medic.db-shm");
    assert!(wait_until(WAIT, || shm.exists()), "no {}", shm.display());
    assert_eq!(
        live_connection_lock(&shm),
        Some(medic.pid() as i32),
        "the daemon must hold SQLite's live-connection lock on {}",
        shm.display()
    );
    for i in 0..20 {
        medic.putval(&[&format!("PUTVAL h/ask/gauge N:{i}")]);
        site.history();
    }
    assert!(
        wait_until(WAIT, || site.history().len() >= 20),
        "{}",
        medic.log()
    );
    assert!(medic.is_running(), "medic died: {}", medic.log());
    assert_eq!(live_connection_lock(&shm), Some(medic.pid() as i32));
}

/// The process holding a lock that conflicts with an exclusive lock of byte 128 of a SQLite
/// `-shm` file (the live-connection lock), if any: asked with `F_GETLK`, which takes nothing.
fn live_connection_lock(shm: &Path) -> Option<i32> {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct Flock {
        l_type: i16,
        l_whence: i16,
        l_start: i64,
        l_len: i64,
        l_pid: i32,
    }
    unsafe extern "C" {
        fn fcntl(fd: i32, cmd: i32, ...) -> i32;
    }
    const F_GETLK: i32 = 5;
    const F_WRLCK: i16 = 1;
    const F_UNLCK: i16 = 2;
    let file = std::fs::File::open(shm).unwrap();
    let mut lock = Flock {
        l_type: F_WRLCK,
        l_whence: 0,
        l_start: 128,
        l_len: 1,
        l_pid: 0,
    };
    // SAFETY: F_GETLK reads and fills one `struct flock` (x86-64 Linux layout above) on an open
    // descriptor; it changes no lock.
    let asked = unsafe { fcntl(file.as_raw_fd(), F_GETLK, &mut lock as *mut Flock) };
    assert_eq!(asked, 0, "fcntl(F_GETLK) failed");
    (lock.l_type != F_UNLCK).then_some(lock.l_pid)
}
