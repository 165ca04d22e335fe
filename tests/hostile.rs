//! Hostile input against a running medic: each bad input is refused with a clear reason, medic
//! stays up, and ordinary values keep reaching the rules afterwards.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use medic_integration::packet::{HOST, SIGNATURE, VALUES, part};
use medic_integration::{Medic, Site, free_udp_port, max_seen, wait_until, workspace};

const BOUND: Duration = Duration::from_secs(20);

/// The highest `seen=` count the counter rule `rule` has logged.
fn seen(medic: &Medic, rule: &str) -> u64 {
    let lines = medic.log_lines_with(&format!("rule=\"{rule}\""));
    max_seen(lines.iter().map(String::as_str))
}

/// A site with the counter rule `load` on every host's load.
fn load_site() -> Site {
    let site = Site::new();
    site.add_rule("counter", "load");
    site.write_config(
        r#"
[rules.config.load]
pattern = "*/load/load"
"#,
    );
    site
}

/// medic still serves: a PUTVAL is taken and reaches the `load` rule.
fn a_value_reaches_the_load_rule(medic: &Medic) {
    assert_eq!(
        medic.putval(&["PUTVAL h/load/load N:1:1:1"]),
        vec!["0 Success: 1 value has been dispatched."]
    );
    assert!(
        wait_until(BOUND, || seen(medic, "load") >= 1),
        "{}",
        medic.log()
    );
}

/// A datagram of nested signature parts (the decoder used to recurse once per part and
/// overflow its stack), one with a 200-byte host name, one claiming 4 000 values.
fn bombs() -> Vec<Vec<u8>> {
    let mut sign = vec![0u8; 32];
    sign.extend(b"fixture-user");
    let one = part(SIGNATURE, &sign);
    let mut nested = Vec::new();
    while nested.len() + one.len() <= 65_507 {
        nested.extend(&one);
    }
    let mut long_host = vec![b'h'; 200];
    long_host.push(0);
    let mut wide = 4000u16.to_be_bytes().to_vec();
    wide.extend(std::iter::repeat_n(1u8, 4000 * 9));
    vec![nested, part(HOST, &long_host), part(VALUES, &wide)]
}

#[test]
fn udp_bombs_are_refused_and_values_keep_flowing() {
    let port = free_udp_port();
    let site = Site::new();
    site.add_rule("counter", "fixture");
    site.write_config(&format!(
        r#"
[rules.config.fixture]
pattern = "collectd-fixture/**"

[ingest.network]
listen = ["127.0.0.1:{port}"]
"#
    ));
    let mut medic = site.start();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for bomb in bombs() {
        socket.send_to(&bomb, ("127.0.0.1", port)).unwrap();
    }
    medic.expect_log(
        "datagram refused: signature or encryption part at offset 48 inside signed or encrypted data",
        BOUND,
    );
    medic.expect_log(
        "datagram refused: part 0x0000 at offset 0 is 200 bytes long; at most 127 are allowed",
        BOUND,
    );
    medic.expect_log(
        "datagram refused: values part at offset 0 has 4000 values; at most 128 are allowed",
        BOUND,
    );
    assert!(medic.is_running(), "{}", medic.log());
    // Ordinary traffic still flows: a real collectd packet of 6 value lists.
    let packet =
        std::fs::read(workspace().join("tests/fixtures/collectd/plain-small.bin")).unwrap();
    socket.send_to(&packet, ("127.0.0.1", port)).unwrap();
    assert!(
        wait_until(BOUND, || seen(&medic, "fixture") >= 6),
        "{}",
        medic.log()
    );
    medic.stop();
}

#[test]
fn putval_refuses_what_collectd_would_and_keeps_serving() {
    let site = load_site();
    let mut medic = site.start();
    let long_host = "h".repeat(60_000);
    let many = vec!["1"; 200].join(":");
    let replies = medic.putval(&[
        &format!("PUTVAL {long_host}/load/load N:1:1:1"),
        &format!("PUTVAL h/load/load N:{many}"),
        &format!(
            "PUTNOTIF severity=okay time=1 host=h message={}",
            "m".repeat(300)
        ),
        "PUTVAL h/load/load N:1:1:1",
    ]);
    assert_eq!(
        replies[0],
        "-1 Identifier host too long (60000 bytes; at most 127)."
    );
    assert_eq!(replies[1], "-1 Too many values (200; at most 128).");
    assert_eq!(replies[2], "-1 Message too long (300 bytes; at most 255).");
    assert_eq!(replies[3], "0 Success: 1 value has been dispatched.");
    assert!(
        wait_until(BOUND, || seen(&medic, "load") >= 1),
        "{}",
        medic.log()
    );
    assert!(medic.is_running());
    medic.stop();
}

/// A unixsock peer that claims 2^40 values for a GETVAL (medic used to allocate for the claim
/// and abort) on the first connection, and answers properly on the next.
#[test]
fn a_lying_unixsock_peer_ends_one_poll_not_the_poller() {
    let site = Site::new();
    let path = site.path("collectd.sock");
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                let reply = if line.starts_with("LISTVAL") {
                    "1 Value found\n1700000000.000 fake/load/load\n".to_string()
                } else if n == 0 {
                    "1099511627776 Values found\n".to_string()
                } else {
                    "3 Values found\nshortterm=1\nmidterm=2\nlongterm=3\n".to_string()
                };
                if writer.write_all(reply.as_bytes()).is_err() {
                    break;
                }
                line.clear();
            }
        }
    });
    site.add_rule("counter", "load");
    site.write_config(
        r#"
[rules.config.load]
pattern = "fake/load/load"

[ingest.unixsock]
socket = "collectd.sock"
interval = "200ms"
"#,
    );
    let mut medic = site.start();
    medic.expect_log(
        "GETVAL fake/load/load announces 1099511627776 values; at most 128 are read",
        BOUND,
    );
    assert!(
        wait_until(BOUND, || seen(&medic, "load") >= 1),
        "{}",
        medic.log()
    );
    assert!(medic.is_running());
    medic.stop();
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Started under umask 000: medic's own files are private anyway, the commands it runs get the
/// umask medic was started with, and a compiled-rule cache file that others could have changed
/// is never loaded.
#[test]
fn files_are_private_whatever_the_umask_and_a_tampered_cache_is_not_run() {
    use std::os::unix::fs::PermissionsExt;
    let site = Site::new();
    site.add_rule("counter", "load");
    let made = site.path("made-by-command");
    site.write_config(&format!(
        r#"
[rules.config.load]
pattern = "*/load/load"
run = ["touch", "it"]

[services.touch.commands]
it = ["touch", "{made}"]
"#,
        made = made.display()
    ));
    let medic = site.start_with_umask(0);
    // medic's pid file too: `medic reload` signals what it names.
    assert_eq!(mode(&site.path("state/medic.pid")), 0o600);
    medic.putval(&["PUTVAL h/load/load N:1:1:1"]);
    assert!(wait_until(BOUND, || made.exists()), "{}", medic.log());
    // A new build serves from a quick compile; the optimized one is cached once it is made.
    medic.expect_log("rule tiered up: optimized build serving", BOUND);
    medic.stop();
    let state = site.path("state");
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("medic.db")), 0o600);
    let cache = state.join("cache");
    assert_eq!(mode(&cache), 0o700);
    let cached: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert_eq!(mode(&cached[0]), 0o600);
    // The command's file was made with the umask medic was started with (000), not medic's own.
    assert_eq!(mode(&made), 0o666);

    // Someone else could have written it: not loaded, compiled afresh.
    std::fs::set_permissions(&cached[0], std::fs::Permissions::from_mode(0o666)).unwrap();
    let medic = site.start();
    medic.expect_log("cached compiled rule not used, recompiling", BOUND);
    medic.expect_log("is writable by group or others (mode 666)", BOUND);
    medic.expect_log("rule loaded rule=\"load\"", BOUND);
    medic.stop();
    // Changed behind medic's back: its digest no longer matches.
    let mut bytes = std::fs::read(&cached[0]).unwrap();
    assert_eq!(
        mode(&cached[0]),
        0o600,
        "the recompiled build was written privately"
    );
    bytes.push(0);
    std::fs::write(&cached[0], bytes).unwrap();
    let medic = site.start();
    medic.expect_log(
        "its content does not match the digest recorded at compile time",
        BOUND,
    );
    medic.expect_log("rule loaded rule=\"load\"", BOUND);
    medic.stop();
}

/// Idle clients cannot take every descriptor: past `max_clients` a new client is told so and
/// closed, idle ones are dropped after `idle_timeout`, and a second medic never takes over a
/// socket the first still answers on.
#[test]
fn putval_clients_are_capped_and_idle_ones_closed() {
    use std::io::Read;
    let site = load_site();
    site.set("ingest.putval", "max_clients = 3\nidle_timeout = \"1s\"");
    let config = site.path("medic.toml");
    let mut medic = site.start();
    let idle: Vec<_> = (0..3)
        .map(|_| std::os::unix::net::UnixStream::connect(site.socket()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut extra = std::os::unix::net::UnixStream::connect(site.socket()).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reply = String::new();
    extra.read_to_string(&mut reply).unwrap();
    assert_eq!(
        reply,
        "-1 Too many clients (3; ingest.putval.max_clients).\n"
    );
    medic.expect_log("PUTVAL client refused: too many clients", BOUND);
    // The idle ones are closed by medic, and the socket serves again.
    for mut c in idle {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        assert_eq!(
            c.read_to_end(&mut rest).unwrap(),
            0,
            "closed without a word"
        );
    }
    a_value_reaches_the_load_rule(&medic);

    // A second medic on the same config must not take the live socket over.
    let second = std::process::Command::new(medic_integration::medic_bin())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("something already answers on"), "{err}");
    assert!(medic.is_running());
    assert_eq!(
        medic.putval(&["PUTVAL h/load/load N:2:2:2"]),
        vec!["0 Success: 1 value has been dispatched."]
    );
    medic.stop();
}

/// Peer text with a newline or ESC never starts a log line of its own.
#[test]
fn peer_text_cannot_forge_log_lines() {
    let port = free_udp_port();
    let site = Site::new();
    std::fs::write(site.path("passwd"), "fixture-user: fixture-secret\n").unwrap();
    site.write_config(&format!(
        r#"
[ingest.network]
listen = ["127.0.0.1:{port}"]
security_level = "sign"
auth_file = "passwd"
"#
    ));
    let medic = site.start();
    let mut sign = vec![0u8; 32];
    sign.extend(b"evil\nFAKE medic::daemon: medic stopped\x1b[2J");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .send_to(&part(0x0200, &sign), ("127.0.0.1", port))
        .unwrap();
    medic.expect_log(
        r"unknown user `evil\nFAKE medic::daemon: medic stopped\u{1b}[2J`",
        BOUND,
    );
    let log = medic.log();
    assert!(
        !log.lines().any(|l| l.starts_with("FAKE")) && !log.contains('\x1b'),
        "{log}"
    );
    medic.stop();
}

/// A corrupt state database does not keep medic from starting: it is moved aside, the loss is
/// logged, and values and commands are served as usual.
#[test]
fn a_corrupt_state_database_is_moved_aside_and_medic_serves() {
    let site = load_site();
    std::fs::create_dir_all(site.path("state")).unwrap();
    std::fs::write(site.path("state/medic.db"), b"garbage ".repeat(1000)).unwrap();
    let mut medic = site.start();
    medic.expect_log("state database is corrupt", BOUND);
    medic.expect_log("lost: rule state keys: unreadable", BOUND);
    a_value_reaches_the_load_rule(&medic);
    assert!(medic.is_running());
    medic.stop();
    let moved = std::fs::read_dir(site.path("state"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("medic.db.corrupt-")
        })
        .count();
    assert_eq!(moved, 1);
}

/// The series table is bounded: past `ingest.max_series` new series are refused (known ones
/// still flow), and a value stamped far in the future is refused rather than kept "fresh".
/// Series that fall silent expire, which makes room for new ones.
#[test]
fn new_series_past_the_cap_and_far_future_values_are_refused_until_some_expire() {
    let site = Site::new();
    site.add_rule("counter", "load");
    let path = site.write_config(
        r#"
[rules.config.load]
pattern = "*/load/load"
"#,
    );
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen(
            "[ingest]\n",
            "[ingest]\nmax_series = 3\nseries_timeout = 1\n",
            1,
        ),
    )
    .unwrap();
    let mut medic = site.start();
    let lines: Vec<String> = (0..5)
        .map(|i| format!("PUTVAL h{i}/load/load interval=1 N:1:1:1"))
        .collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    medic.putval(&lines);
    medic.expect_log(
        "a new series, and 3 series are known already (ingest.max_series)",
        BOUND,
    );
    medic.putval(&["PUTVAL h0/load/load interval=1 4102444800:1:1:1"]);
    medic.expect_log("in the future (at most 3 intervals ahead are taken)", BOUND);
    medic.putval(&["PUTVAL h1/load/load interval=1 N:2:2:2"]);
    assert!(
        wait_until(BOUND, || seen(&medic, "load") == 4),
        "{}",
        medic.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(seen(&medic, "load"), 4, "{}", medic.log());
    // h0..h2 stated a 1 s interval and `series_timeout = 1`: silent for 2 s, they are forgotten
    // and h4 is taken.
    medic.expect_log(" live=0", BOUND);
    assert_eq!(
        medic.putval(&["PUTVAL h4/load/load interval=1 N:1:1:1"]),
        vec!["0 Success: 1 value has been dispatched."]
    );
    assert!(
        wait_until(BOUND, || seen(&medic, "load") == 5),
        "{}",
        medic.log()
    );
    assert!(medic.is_running());
    medic.stop();
}

/// Unmounts the test's tmpfs however the test ends.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A full disk under `state_dir`: rules keep deciding and commands keep running, the failed
/// writes are said once (not once per write), and the rule's state changes, kept meanwhile,
/// are written once there is room: none is lost.
/// Needs root for the tmpfs (CI runs as root); elsewhere it says so and stops.
#[test]
fn a_full_disk_is_reported_once_and_medic_recovers_when_space_returns() {
    use std::io::Write;
    let site = Site::new();
    let state = site.path("state");
    std::fs::create_dir_all(&state).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"])
        .arg(&state)
        .status();
    if !mounted.is_ok_and(|s| s.success()) {
        eprintln!("cannot mount a tmpfs (not root?): the disk-full test needs one");
        return;
    }
    let _guard = Mounted(state.clone());
    site.add_rule("counter", "load");
    site.write_config(
        r#"
[rules.config.load]
pattern = "*/load/load"
run = ["hello", "exec"]

[services.hello.commands]
exec = "echo still acting"
"#,
    );
    let medic = site.start();
    medic.putval(&["PUTVAL h/load/load N:1:1:1"]);
    medic.expect_log("counter v1 seen=1", BOUND);
    // Fill the disk.
    let mut filler = std::fs::File::create(state.join("filler")).unwrap();
    let chunk = vec![0u8; 4096];
    while filler
        .write_all(&chunk)
        .and_then(|()| filler.sync_all())
        .is_ok()
    {}
    for i in 0..20 {
        medic.putval(&[&format!("PUTVAL h/load/load N:{i}:1:1")]);
    }
    // The rule's state goes to the store's writer thread, which says it cannot write.
    medic.expect_log("nor rule and policy state (kept", BOUND);
    medic.expect_log(
        r#"counter result hello/exec code=Some(0) output="still acting\n""#,
        BOUND,
    );
    std::thread::sleep(Duration::from_millis(500));
    // Once a minute for each kind of write (the writer's transactions, the outbox...), not once
    // per write.
    let log = medic.log();
    let kinds: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("(disk full?)"))
        .filter_map(|l| l.split("state database: ").nth(1)?.split(": ").next())
        .collect();
    let distinct: std::collections::BTreeSet<&str> = kinds.iter().copied().collect();
    assert_eq!(
        kinds.len(),
        distinct.len(),
        "said once a minute per kind, not once per write:\n{log}"
    );
    assert!(
        distinct.contains(
            "audit history cannot be written, nor rule and policy state (kept, retried every \
             second)"
        ),
        "{distinct:?}"
    );
    // Room again: what the rule set while the disk was full was kept in memory and is written
    // now, with the next values.
    drop(filler);
    std::fs::remove_file(state.join("filler")).unwrap();
    for i in 0..2 {
        medic.putval(&[&format!("PUTVAL h/load/load N:{i}:9:9")]);
        std::thread::sleep(Duration::from_millis(200));
    }
    medic.stop();
    let medic = site.start();
    medic.expect_log("counter v1 starting at seen=", BOUND);
    let stored = max_seen(
        medic
            .log_lines_with("starting at seen=")
            .last()
            .map(String::as_str),
    );
    assert_eq!(
        stored,
        23,
        "1 before the disk filled, 20 while it was full, 2 after it emptied:\n{}",
        medic.log()
    );
    medic.stop();
}

/// 3 000 half-sent HTTP requests, without a token, against a medic whose open-files limit is
/// 1 024: the connection cap refuses what does not fit, the PUTVAL socket still takes values
/// and a recovery command still runs while they are held, and the header timeout closes them.
#[test]
fn an_http_flood_under_1024_open_files_leaves_putval_and_commands_working() {
    use std::io::Read;
    use std::net::TcpStream;
    const FLOOD: usize = 3000;
    let own = medic_integration::raise_own_open_files();
    assert!(
        own > FLOOD as u64 + 100,
        "this test needs {FLOOD}+ descriptors; it has {own}"
    );
    let site = Site::new();
    site.add_rule("threshold", "threshold");
    let port = medic_integration::free_tcp_port();
    site.write_config(&format!(
        r#"
[rules.config.threshold]
pattern = "*/memory/memory-free"
below = 100
clear = 200
service = "fix"
command = "mark"

[services.fix.commands]
mark = {{ run = ["sh", "-c", "echo ran >> '{marker}'; echo marked"] }}

[http]
listen = "127.0.0.1:{port}"
header_timeout = "10s"
max_connections = 4096
"#,
        marker = site.path("marker").display()
    ));
    let mut medic = site.start_with_open_files(1024);
    medic.expect_log("http.max_connections lowered", BOUND);
    let addr = format!("127.0.0.1:{port}");
    let flood: Vec<TcpStream> = (0..FLOOD)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            // Never finished: the head stops inside a header line.
            let _ = s.write_all(b"GET /history?limit=1000 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
            s
        })
        .collect();
    medic.expect_log(
        "HTTP connection closed at once: http.max_connections are open",
        BOUND,
    );

    // While they are held: values are taken and a recovery command runs.
    assert_eq!(
        medic.putval(&[
            "PUTVAL web/memory/memory-free N:500",
            "PUTVAL web/memory/memory-free N:50",
        ]),
        vec!["0 Success: 1 value has been dispatched."; 2]
    );
    let marker = site.path("marker");
    assert!(
        wait_until(BOUND, || medic_integration::marker_count(&marker) == 1),
        "{}",
        medic.log()
    );
    medic.expect_log(r#"output="marked""#, BOUND);

    // Every flood connection ends without an answer: at once past the cap, by the header
    // timeout below it.
    let mut ended = 0;
    for mut s in flood {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut answer = Vec::new();
        match s.read_to_end(&mut answer) {
            Ok(_) => assert!(
                !String::from_utf8_lossy(&answer).contains(" 200 "),
                "a half-sent request was answered"
            ),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
        ended += 1;
    }
    assert_eq!(ended, FLOOD);
    assert!(
        !medic.log().contains("Too many open files"),
        "{}",
        medic.log()
    );
    // Served again once they are gone, and the counts tell what happened.
    let (code, metrics) = medic_integration::http_get(&addr, "/metrics", None);
    assert_eq!(code, 200, "{metrics}");
    let count = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
    };
    let refused = count("medic_http_connections_refused_total");
    let timed_out = count("medic_http_connections_closed_total{reason=\"header_timeout\"}");
    assert!(refused >= 1.0, "{metrics}");
    assert!(timed_out >= 1.0, "{metrics}");
    assert!(
        refused + timed_out >= FLOOD as f64,
        "every flood connection is accounted for: {refused} refused, {timed_out} timed out"
    );
    assert!(medic.is_running());
    medic.stop();
}

/// A rule config's files are read as if their directory were hostile: a link (to
/// `/proc/kallsyms`) is not followed and a FIFO does not hang the registry; each is refused by
/// name, the rule keeps serving with what it had, and a good edit afterwards is taken.
#[test]
fn rule_config_files_are_never_read_through_links_nor_from_fifos() {
    let site = Site::new();
    site.add_rule("lcm-lua", "lcm-lua");
    let local = site.path("local");
    std::fs::create_dir_all(&local).unwrap();
    let memory =
        std::fs::read_to_string(workspace().join("rules-examples/lcm-lua/scripts/memory.lua"))
            .unwrap();
    std::fs::write(local.join("memory.lua"), &memory).unwrap();
    site.write_config("[rules.config.lcm-lua]\nscripts = { files = \"local/*.lua\" }\n");
    let mut medic = site.start();
    medic.expect_log("rule loaded rule=\"lcm-lua\"", BOUND);

    std::os::unix::fs::symlink("/proc/kallsyms", local.join("k.lua")).unwrap();
    medic.expect_log("k.lua is a symbolic link: not followed", BOUND);
    medic.expect_log("the rule keeps running with its old files", BOUND);
    std::fs::remove_file(local.join("k.lua")).unwrap();

    let fifo = local.join("f.lua");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    medic.expect_log("f.lua is not a regular file", BOUND);
    std::fs::remove_file(&fifo).unwrap();

    // Still watching and reading: an edit is taken.
    std::fs::write(local.join("memory.lua"), format!("{memory}\n-- edited\n")).unwrap();
    medic.expect_log("rule re-initialised with its new files", BOUND);
    assert!(medic.is_running());
    medic.stop();
}

/// A state directory others can write to is refused at start (they could swap the database or
/// put links where medic's files go); a sink name is never a path.
#[test]
fn a_shared_state_dir_and_a_sink_name_with_a_path_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let site = load_site();
    let state = site.path("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = std::process::Command::new(medic_integration::medic_bin())
        .args(["run", "--config"])
        .arg(site.path("medic.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("other users can write to medic's state directory"),
        "{err}"
    );
    assert_eq!(mode(&state), 0o777, "left as it was");

    site.write_config("[sinks.\"../../x\"]\nkind = \"file\"\npath = \"x.jsonl\"\n");
    let check = site.check();
    assert!(!check.status.success());
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(
        err.contains("a sink name may have only A-Z a-z 0-9 - _"),
        "{err}"
    );
}

/// `medic reload` reads a pid from the state directory: a stale file naming another process
/// gets that process no SIGHUP.
#[test]
fn reload_never_signals_a_process_that_is_not_medic() {
    let site = load_site();
    let state = site.path("state");
    std::fs::create_dir_all(&state).unwrap();
    let mut sleeper = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    std::fs::write(state.join("medic.pid"), format!("{}\n", sleeper.id())).unwrap();
    let out = std::process::Command::new(medic_integration::medic_bin())
        .args(["reload", "--config"])
        .arg(site.path("medic.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("which is not a running medic"), "{err}");
    assert!(
        sleeper.try_wait().unwrap().is_none(),
        "the sleeper got no SIGHUP"
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}
