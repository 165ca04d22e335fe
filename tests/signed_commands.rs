//! Signed remote commands on real parts: a real mosquitto, keys made by `openssl genpkey`,
//! `medic send --key` and a second sender written in Python (`cryptography` + `paho-mqtt`,
//! from README's format alone), against a medic with `[mqtt.auth] require_signed`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use medic_integration::broker::{self, Mosquitto};
use medic_integration::{Site, marker_count, medic_bin, wait_until, workspace};

const WAIT: Duration = Duration::from_secs(20);

/// An Ed25519 key pair in `dir` as operators make one: `NAME.pem` (0600) and `NAME.pub`.
fn key_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub"));
    let ok = |c: &mut Command| assert!(c.status().unwrap().success(), "{c:?}");
    ok(Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&private));
    ok(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    (private, public)
}

/// `medic send` to node `test` with the broker's credentials and `args`.
fn send(broker: &Mosquitto, args: &[&str]) -> Output {
    Command::new(medic_bin())
        .arg("send")
        .args(args)
        .args(["--broker", &broker.url(), "--user", broker::USER])
        .args(["--timeout", "20s"])
        .env("MEDIC_MQTT_PASSWORD", broker::PASSWORD)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The Python sender (tests/fixtures/senders/signed_sender.py).
fn python_send(broker: &Mosquitto, key: &Path, task: u64, expires_in: i64, times: u32) {
    let out = Command::new("python3")
        .arg(workspace().join("tests/fixtures/senders/signed_sender.py"))
        .args(["--port", &broker.port.to_string()])
        .args(["--user", broker::USER, "--password", broker::PASSWORD])
        .args(["--node", "test", "--sender", "py", "--key"])
        .arg(key)
        .args(["--task-id", &task.to_string()])
        .args(["--service", "fix", "--command", "mark"])
        .args(["--expires-in", &expires_in.to_string()])
        .args(["--times", &times.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn signed_unsigned_replayed_expired_wrong_node_and_out_of_scope_commands() {
    let broker = Mosquitto::start(false);
    let site = Site::named("test");
    let (ops_key, ops_pub) = key_pair(&site.path(""), "ops");
    let (py_key, py_pub) = key_pair(&site.path(""), "py");
    let marker = site.path("marker");
    site.write_config(&format!(
        r#"
{mqtt}max_reconnect_interval = "500ms"

[mqtt.auth]
require_signed = true

[mqtt.auth.senders.ops]
public_key_file = {ops_pub:?}
commands = ["fix/*"]

[mqtt.auth.senders.py]
public_key_file = {py_pub:?}
commands = ["fix/mark"]

[services.fix.commands]
mark = "echo ran >> '{marker}'; echo marked"

[services.other.commands]
cmd = "echo other"
"#,
        mqtt = broker.medic_section(&site),
        ops_pub = ops_pub.display().to_string(),
        py_pub = py_pub.display().to_string(),
        marker = marker.display(),
    ));
    // `medic check` reads the keys, and refuses one that others could swap.
    let check = site.check();
    assert!(
        text(&check.stdout).contains("mqtt.auth: 2 sender key(s), signatures required, ok"),
        "{}",
        text(&check.stdout)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = |m| std::fs::set_permissions(&ops_pub, std::fs::Permissions::from_mode(m));
    mode(0o666).unwrap();
    let check = site.check();
    assert!(!check.status.success());
    assert!(
        text(&check.stdout).contains("others may write it (mode 0666)"),
        "{}",
        text(&check.stdout)
    );
    mode(0o644).unwrap();

    let medic = site.start();
    medic.expect_log("MQTT: subscribed", WAIT);
    let results = broker.watch("medic/test/result", None);
    let requests = broker.watch("medic/test/command", None);
    let key = ops_key.display().to_string();
    let signed = ["--key", &key, "--sender", "ops", "--node", "test"];
    let code_of = |task: u64| results.reply(task, WAIT)["code"].as_i64().unwrap();

    // Signed: runs.
    let out = send(
        &broker,
        &[&["fix", "mark", "--task-id", "1"], &signed[..]].concat(),
    );
    assert_eq!(text(&out.stdout), "marked\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(marker_count(&marker), 1);

    // The same envelope again, as someone who captured it would send it: a replay.
    let captured = requests
        .lines()
        .into_iter()
        .find(|l| l.contains("\"signature\""))
        .expect("the signed request was seen on the command topic");
    let replay = site.path("replay.json");
    std::fs::write(&replay, &captured).unwrap();
    broker.publish_file("medic/test/command", &replay);
    assert!(wait_until(WAIT, || results.replies(1).len() == 2));
    assert_eq!(
        results.replies(1)[1]["code"],
        0x1202,
        "{:?}",
        results.lines()
    );

    // Unsigned, signed for another node, valid for longer than allowed, out of scope, and a
    // key the sender name does not match.
    let out = send(
        &broker,
        &["fix", "mark", "--node", "test", "--task-id", "2"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("unsigned request refused"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(code_of(2), 0x1201);
    let elsewhere = [
        "--key",
        &key,
        "--sender",
        "ops",
        "--node",
        "db-1",
        "--topic",
        "medic/test/command",
        "--result-topic",
        "medic/test/result",
    ];
    send(
        &broker,
        &[&["fix", "mark", "--task-id", "3"], &elsewhere[..]].concat(),
    );
    assert_eq!(code_of(3), 0x1204);
    send(
        &broker,
        &[
            &["fix", "mark", "--task-id", "4", "--valid-for", "1h"],
            &signed[..],
        ]
        .concat(),
    );
    assert_eq!(code_of(4), 0x1203);
    send(
        &broker,
        &[&["other", "cmd", "--task-id", "5"], &signed[..]].concat(),
    );
    assert_eq!(code_of(5), 0x1205);
    let py = py_key.display().to_string();
    let as_ops = ["--key", &py, "--sender", "ops", "--node", "test"];
    send(
        &broker,
        &[&["fix", "mark", "--task-id", "6"], &as_ops[..]].concat(),
    );
    assert_eq!(code_of(6), 0x1200);
    assert_eq!(marker_count(&marker), 1, "none of them ran");

    // A sender written with other libraries: runs, its replay and an expired one refused.
    python_send(&broker, &py_key, 7, 120, 2);
    assert!(wait_until(WAIT, || results.replies(7).len() == 2));
    let codes: Vec<i64> = results
        .replies(7)
        .iter()
        .map(|r| r["code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [0, 0x1202]);
    python_send(&broker, &py_key, 8, -60, 1);
    assert_eq!(code_of(8), 0x1203);
    assert_eq!(marker_count(&marker), 2);

    // The history names the sender of what ran and of what was refused.
    let history = site.history();
    let origins: Vec<&str> = history
        .iter()
        .filter_map(|r| r["origin"].as_str())
        .collect();
    for expected in [
        "mqtt:ops:1",
        "mqtt:py:7",
        "mqtt:2",
        "mqtt:ops:5",
        "mqtt:py:8",
    ] {
        assert!(origins.contains(&expected), "{expected} in {origins:?}");
    }
    let refused = history
        .iter()
        .find(|r| r["origin"] == "mqtt:ops:5")
        .unwrap();
    assert_eq!(refused["state"], "refused");
    assert_eq!(
        (&refused["service"], &refused["command"]),
        (&"other".into(), &"cmd".into())
    );
    assert!(
        refused["refusal"]
            .as_str()
            .unwrap()
            .contains("may not run other/cmd"),
        "{refused}"
    );
    medic.stop();

    // Nonces survive a restart: the captured request is still a replay.
    let medic = site.start();
    medic.expect_log("MQTT: subscribed", WAIT);
    broker.publish_file("medic/test/command", &replay);
    assert!(wait_until(WAIT, || results.replies(1).len() == 3));
    assert_eq!(results.replies(1)[2]["code"], 0x1202);
    assert_eq!(marker_count(&marker), 2);
    medic.stop();
}

/// A rule's `run-remote` to a node that takes only signed commands: signed with the asking
/// node's own key, it runs there, and the history there names the asking node.
#[test]
fn run_remote_between_medics_is_signed_with_the_node_key() {
    let broker = Mosquitto::start(false);
    let b = Site::named("b");
    let a = Site::named("a");
    let (a_key, a_pub) = key_pair(&a.path(""), "a");
    b.write_config(&format!(
        r#"
{mqtt}max_reconnect_interval = "500ms"

[mqtt.auth]
require_signed = true

[mqtt.auth.senders.a]
public_key_file = {a_pub:?}
commands = ["hello/exec"]

[services.hello.commands]
exec = "echo Hello World!"
"#,
        mqtt = broker.medic_section(&b),
        a_pub = a_pub.display().to_string(),
    ));
    let medic_b = b.start();
    medic_b.expect_log("MQTT: subscribed", WAIT);
    a.add_rule("counter", "asker");
    a.write_config(&format!(
        r#"
{mqtt}max_reconnect_interval = "500ms"

[mqtt.auth]
key_file = {a_key:?}

[rules.config.asker]
pattern = "*/asker/*"
remote = ["b", "hello", "exec"]
"#,
        mqtt = broker.medic_section(&a),
        a_key = a_key.display().to_string(),
    ));
    let medic_a = a.start();
    medic_a.expect_log("MQTT: subscribed", WAIT);
    medic_a.putval(&["PUTVAL h/asker/gauge N:1"]);
    medic_a.expect_log(
        r#"counter result hello/exec code=Some(0) output="Hello World!" error=None"#,
        WAIT,
    );
    let history = b.history();
    assert!(
        history.iter().any(|r| r["origin"]
            .as_str()
            .is_some_and(|o| o.starts_with("mqtt:a:"))
            && r["state"] == "succeeded"),
        "{history:?}"
    );
}
