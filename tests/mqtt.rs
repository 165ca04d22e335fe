//! MQTT end to end, on real parts: the `medic` binary, a real mosquitto with a password file
//! (and once with TLS), mosquitto-clients as the remote controller, and compiled rules.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use medic_integration::broker::{self, Mosquitto, request};
use medic_integration::{Site, marker_count, medic_bin, wait_until};

const WAIT: Duration = Duration::from_secs(20);

/// The `[mqtt]` section and services every test uses.
fn mqtt_config(site: &Site, broker: &Mosquitto, extra: &str) -> String {
    format!(
        r#"
{mqtt}max_reconnect_interval = "500ms"
max_age = "1h"
remote_timeout = "3s"

[mqtt.grants]
echo = ["granted/#"]

{extra}
"#,
        mqtt = broker.medic_section(site),
    )
}

fn services(site: &Site) -> String {
    format!(
        r#"
[services.hello.commands]
exec = "echo Hello World!"
count = "echo ran >> '{marker}'; echo counted"
slow = "sleep 2; echo slow done"
fail = "echo broken >&2; exit 3"
"#,
        marker = site.path("marker").display()
    )
}

/// `medic send` with the test credentials.
fn send(broker: &Mosquitto, node: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(medic_bin());
    cmd.arg("send")
        .args(args)
        .args(["--broker", &broker.url(), "--node", node])
        .args(["--user", broker::USER])
        .env("MEDIC_MQTT_PASSWORD", broker::PASSWORD);
    cmd.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn remote_commands_answer_like_lua_collectd_monitor() {
    let broker = Mosquitto::start(false);
    let site = Site::new();
    site.write_config(&mqtt_config(&site, &broker, &services(&site)));
    let status = broker.watch("medic/test/status", None);
    let medic = site.start();
    medic.expect_log("MQTT: subscribed", WAIT);
    assert!(wait_until(WAIT, || status
        .lines()
        .contains(&"online".into())));
    let results = broker.watch("medic/test/result", None);

    // A password in argv works, with a warning (everyone can read the process list).
    let out = Command::new(medic_bin())
        .args([
            "send",
            "hello",
            "exec",
            "--task-id",
            "100",
            "--broker",
            &broker.url(),
        ])
        .args([
            "--node",
            "test",
            "--user",
            broker::USER,
            "--password",
            broker::PASSWORD,
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "Hello World!\n", "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--password is visible to other users"),
        "{}",
        stderr(&out)
    );

    // `medic send` round trip: prints the message, exits with the code.
    let out = send(&broker, "test", &["hello", "exec", "--task-id", "1"]);
    assert_eq!(stdout(&out), "Hello World!\n", "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(0));
    let r = results.reply(1, WAIT);
    assert_eq!(r["code"], 0);
    let ts = r["timestamp"].as_str().unwrap();
    assert!(ts.len() == 20 && ts.ends_with('Z'), "{ts}");

    // lua-collectd-monitor's senders publish the JSON themselves.
    let cases: [(u64, String, i64); 8] = [
        (2, request(2, "nope", "exec"), 0x1002),
        (3, request(3, "hello", "nope"), 0x1003),
        (4, request(4, "hello", "fail"), 3),
        (5, r#"{"task_id": 5, "service": "hello", "#.into(), 0x1004),
        (6, r#"{"task_id": 6, "service": "hello"}"#.into(), 0x1004),
        (
            7,
            r#"{"task_id": 7, "timestamp": "2020-11-26T00:41:19Z", "service": "hello", "command": "exec"}"#.into(),
            0x1101,
        ),
        // Stamped far in the future: never fresh.
        (
            8,
            r#"{"task_id": 8, "timestamp": "2099-01-01T00:00:00Z", "service": "hello", "command": "exec"}"#.into(),
            0x1101,
        ),
        // A 200-byte service name is refused, not echoed back.
        (9, request(9, &"s".repeat(200), "exec"), 0x1004),
    ];
    for (_, payload, _) in &cases {
        broker.publish("medic/test/command", payload);
    }
    for (task_id, _, code) in &cases {
        let r = results.reply(*task_id, WAIT);
        assert_eq!(r["code"], *code, "task {task_id}: {r}");
        assert!(
            r["message"].is_string() && r["timestamp"].is_string(),
            "{r}"
        );
    }
    // lua-collectd-monitor's replies: output without its trailing newline, and its own words.
    assert_eq!(results.replies(4)[0]["message"], "broken");
    assert_eq!(
        results.replies(2)[0]["message"],
        "Cannot find the service settings for: nope"
    );

    // No task id to answer: a log line, and nothing published.
    broker.publish("medic/test/command", "not json at all");
    medic.expect_log(
        "invalid remote command dropped (no task id to answer)",
        WAIT,
    );

    // `medic send` reports codes that do not fit an exit status on stderr.
    let out = send(&broker, "test", &["nope", "exec"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("code 4098 (unknown service)"),
        "{}",
        stderr(&out)
    );

    // Nobody answers: 124 and a message.
    let out = send(&broker, "nobody", &["hello", "exec", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(124));
    assert!(
        stderr(&out).contains("no result for task"),
        "{}",
        stderr(&out)
    );

    // A node with no services at all.
    let empty = Site::named("empty");
    empty.write_config(&mqtt_config(&empty, &broker, ""));
    let empty_medic = empty.start();
    empty_medic.expect_log("MQTT: subscribed", WAIT);
    let out = send(&broker, "empty", &["hello", "exec"]);
    assert!(stderr(&out).contains("code 4097"), "{}", stderr(&out));

    // A clean stop leaves the retained status `offline`.
    medic.stop();
    assert!(
        wait_until(WAIT, || status.lines().last().map(String::as_str)
            == Some("offline")),
        "{:?}",
        status.lines()
    );
}

#[test]
fn duplicate_task_ids_get_the_recorded_result_and_run_once() {
    let broker = Mosquitto::start(false);
    let site = Site::new();
    site.write_config(&mqtt_config(&site, &broker, &services(&site)));
    let medic = site.start();
    medic.expect_log("MQTT: subscribed", WAIT);
    let results = broker.watch("medic/test/result", None);

    let first = send(&broker, "test", &["hello", "count", "--task-id", "10"]);
    assert_eq!(stdout(&first), "counted\n", "{}", stderr(&first));
    let again = send(&broker, "test", &["hello", "count", "--task-id", "10"]);
    assert_eq!(stdout(&again), "counted\n");
    assert!(wait_until(WAIT, || results.replies(10).len() == 2));
    let replies = results.replies(10);
    assert_eq!(
        replies[0], replies[1],
        "the recorded result, timestamp and all"
    );
    assert_eq!(marker_count(&site.path("marker")), 1);
    medic.expect_log("remote command seen before", WAIT);

    // The record survives a restart.
    medic.stop();
    let medic = site.start();
    medic.expect_log("MQTT: subscribed", WAIT);
    let third = send(&broker, "test", &["hello", "count", "--task-id", "10"]);
    assert_eq!(stdout(&third), "counted\n");
    assert_eq!(marker_count(&site.path("marker")), 1);

    // The same task id while it is still running: 0x1100, then the real result.
    broker.publish("medic/test/command", &request(11, "hello", "slow"));
    medic.expect_log("remote command received", WAIT);
    broker.publish("medic/test/command", &request(11, "hello", "slow"));
    assert!(
        wait_until(WAIT, || results.replies(11).len() == 2),
        "{:?}",
        results.lines()
    );
    let replies = results.replies(11);
    assert_eq!(replies[0]["code"], 0x1100);
    assert_eq!(replies[0]["message"], "Received duplicate task_id: 11");
    assert_eq!(replies[1]["code"], 0);
    assert_eq!(replies[1]["message"], "slow done");
}

#[test]
fn results_survive_broker_outages_and_medic_crashes_and_arrive_once() {
    let mut broker = Mosquitto::start(true);
    let site = Site::new();
    site.write_config(&mqtt_config(&site, &broker, &services(&site)));
    let medic = site.start();
    medic.expect_log("MQTT: subscribed", WAIT);
    // A persistent watcher: it is sent what was published while it was away.
    let results = broker.watch("medic/test/result", Some("watcher"));
    let answered = |medic: &medic_integration::Medic, n: usize| {
        wait_until(WAIT, || {
            medic.log_lines_with("remote command answered").len() >= n
        })
    };

    // The broker stops while the command runs: the result waits in the outbox.
    broker.publish("medic/test/command", &request(20, "hello", "slow"));
    medic.expect_log("remote command received", WAIT);
    broker.stop();
    assert!(answered(&medic, 1), "{}", medic.log());
    std::thread::sleep(Duration::from_millis(300));
    assert!(results.replies(20).is_empty());
    broker.resume();
    let r = results.reply(20, WAIT);
    assert_eq!(r["message"], "slow done");

    // Again, and medic is killed (SIGKILL) while the result is in the outbox.
    broker.publish("medic/test/command", &request(21, "hello", "slow"));
    medic.expect_log(r#"task_id="21" action_id"#, WAIT);
    broker.stop();
    assert!(answered(&medic, 2), "{}", medic.log());
    drop(medic);
    broker.resume();
    let medic = site.start();
    medic.expect_log("MQTT outbox holds messages from before", WAIT);
    let r = results.reply(21, WAIT);
    assert_eq!(r["message"], "slow done");

    // Killed while the command itself runs: the sender is told, not left waiting.
    broker.publish("medic/test/command", &request(22, "hello", "slow"));
    medic.expect_log(r#"task_id="22" action_id"#, WAIT);
    drop(medic);
    let medic = site.start();
    let r = results.reply(22, WAIT);
    assert_eq!(r["code"], 0x1102, "{r}");

    // Exactly once each, after everything settled.
    medic.expect_log("MQTT: subscribed", WAIT);
    std::thread::sleep(Duration::from_secs(1));
    for task in [20, 21, 22] {
        assert_eq!(
            results.replies(task).len(),
            1,
            "task {task}: {:?}",
            results.lines()
        );
    }
}

#[test]
fn tls_with_a_ca_the_test_makes() {
    let broker = Mosquitto::start_tls();
    let site = Site::new();
    site.write_config(&mqtt_config(&site, &broker, &services(&site)));
    let medic = site.start();
    medic.expect_log("MQTT: subscribed", WAIT);
    let ca = broker.tls.as_ref().unwrap().ca.display().to_string();
    let out = send(&broker, "test", &["hello", "exec", "--ca-file", &ca]);
    assert_eq!(stdout(&out), "Hello World!\n", "{}", stderr(&out));

    // Without the CA the broker's certificate is not trusted.
    let out = send(&broker, "test", &["hello", "exec", "--timeout", "2s"]);
    assert_eq!(out.status.code(), Some(124));
    assert!(
        stderr(&out).to_lowercase().contains("certificate"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn rules_get_their_topics_and_publish_only_where_granted() {
    let broker = Mosquitto::start(false);
    let site = Site::new();
    site.add_rule("counter", "echo");
    site.write_config(&mqtt_config(
        &site,
        &broker,
        r#"
[rules.config.echo]
pattern = "none/none/none"
topics = ["rules/in/#"]
publish = ["granted/out", "refused/out"]

[rules.grants.echo]
subscribe = ["rules/+/#"]

[rules.config.nosy]
pattern = "none/none/none"
topics = ["medic/+/command"]
"#,
    ));
    site.add_rule("counter", "nosy");
    let medic = site.start();
    medic.expect_log("rules/in/#", WAIT);
    // What a rule may read is granted: another node's commands are not every rule's.
    medic.expect_log(
        "MQTT topic `medic/+/command` is not granted: add it (or a filter covering it) to \
         [rules.grants.nosy] subscribe",
        WAIT,
    );
    let granted = broker.watch("granted/out", None);
    let refused = broker.watch("refused/out", None);
    broker.publish("rules/in/x", "ping");
    medic.expect_log("counter mqtt rules/in/x ping", WAIT);
    assert!(
        wait_until(WAIT, || granted.lines().contains(&"echo:ping".into())),
        "{:?}",
        granted.lines()
    );
    medic.expect_log(
        "publish refused: topic not granted to this rule (mqtt.grants.echo)",
        WAIT,
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        refused.lines().iter().all(|l| l == "probe"),
        "{:?}",
        refused.lines()
    );
}

/// mosquitto's own `$SYS` topics reach a rule subscribed to them, and never a rule subscribed
/// to `#` (MQTT keeps `$` topics from first-level wildcards): medic routes with the same matcher
/// the rules SDK uses, so what the broker delivers, medic hands on.
#[test]
fn a_rule_subscribed_to_sys_topics_gets_the_brokers_own_messages() {
    let broker = Mosquitto::start(false);
    let site = Site::new();
    site.add_rule("counter", "sys");
    site.add_rule("counter", "everything");
    site.write_config(&mqtt_config(
        &site,
        &broker,
        r##"
[rules.config.sys]
pattern = "none/none/none"
topics = ["$SYS/broker/version"]

[rules.grants.sys]
subscribe = ["$SYS/#"]

[rules.config.everything]
pattern = "none/none/none"
topics = ["#"]

[rules.grants.everything]
subscribe = ["#"]
"##,
    ));
    let medic = site.start();
    // mosquitto keeps `$SYS/broker/version` retained: the subscription alone brings it.
    medic.expect_log("counter mqtt $SYS/broker/version mosquitto version", WAIT);
    broker.publish("plain/topic", "x");
    medic.expect_log("counter mqtt plain/topic x", WAIT);
    let sys = medic.log_lines_with("counter mqtt $SYS");
    assert!(
        sys.iter().all(|l| l.contains(r#"rule="sys""#)),
        "only the rule that named $SYS gets it: {sys:#?}"
    );
}

/// `a` asks `b` (answered), `nobody` (no status: waits `remote_timeout`) and `c`, a medic that
/// stopped and so left `offline` as its retained status (refused at once).
#[test]
fn run_remote_between_two_medics() {
    let broker = Mosquitto::start(false);
    let b = Site::named("b");
    b.write_config(&mqtt_config(&b, &broker, &services(&b)));
    let medic_b = b.start();
    medic_b.expect_log("MQTT: subscribed", WAIT);
    let c = Site::named("c");
    c.write_config(&mqtt_config(&c, &broker, &services(&c)));
    let medic_c = c.start();
    medic_c.expect_log("MQTT: subscribed", WAIT);
    medic_c.stop();

    let a = Site::named("a");
    a.add_rule("counter", "asker");
    a.add_rule("counter", "lonely");
    a.add_rule("counter", "gone");
    a.write_config(&mqtt_config(
        &a,
        &broker,
        r#"
[rules.config.asker]
pattern = "*/asker/*"
remote = ["b", "hello", "exec"]

[rules.config.lonely]
pattern = "*/lonely/*"
remote = ["nobody", "hello", "exec"]

[rules.config.gone]
pattern = "*/gone/*"
remote = ["c", "hello", "exec"]
"#,
    ));
    let medic_a = a.start();
    medic_a.expect_log("MQTT: subscribed", WAIT);
    medic_a.putval(&["PUTVAL h/asker/gauge N:1", "PUTVAL h/lonely/gauge N:1"]);
    medic_a.expect_log(
        // Through another node: lua-collectd-monitor's message, without the last newline.
        r#"counter result hello/exec code=Some(0) output="Hello World!" error=None"#,
        WAIT,
    );
    medic_b.expect_log("remote command answered", WAIT);
    let asked = Instant::now();
    medic_a.putval(&["PUTVAL h/gone/gauge N:1"]);
    medic_a.expect_log(
        "node `c` is offline (its status on medic/c/status says so)",
        WAIT,
    );
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "refused at once, not after remote_timeout"
    );
    medic_a.expect_log("no result from node `nobody` within", WAIT);
}

#[test]
fn an_imported_lua_collectd_monitor_config_runs_as_it_is() {
    let broker = Mosquitto::start(false);
    let site = Site::new();
    let lcm = serde_json::json!({
        "Host": format!("127.0.0.1:{}", broker.port),
        "User": broker::USER,
        "Password": broker::PASSWORD,
        "Secure": false,
        "CleanSession": false,
        "ReconnectInterval": 1,
        "QoS": 2,
        "CommandTopic": "lcm/command",
        "CommandResultTopic": "lcm/result",
        "MonitorConfigPath": "/etc/collectd/monitor/config.json",
        "Services": {
            "hello": { "commands": { "exec": "/bin/echo \"Hello World!\"" } }
        }
    });
    std::fs::write(site.path("config.json"), lcm.to_string()).unwrap();
    let out = Command::new(medic_bin())
        .arg("import-lcm")
        .arg(site.path("config.json"))
        .arg("--state-dir")
        .arg(site.path("state"))
        .arg("--rules-dir")
        .arg(site.path("imported-rules"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let toml = stdout(&out);
    assert!(toml.contains("#   MonitorConfigPath:"), "{toml}");
    std::fs::write(site.path("medic.toml"), &toml).unwrap();
    let check = site.check();
    assert!(check.status.success(), "{}\n{toml}", stdout(&check));

    let medic = site.start();
    medic.expect_log("MQTT: subscribed", WAIT);
    let out = send(
        &broker,
        "unused",
        &[
            "hello",
            "exec",
            "--topic",
            "lcm/command",
            "--result-topic",
            "lcm/result",
        ],
    );
    assert_eq!(stdout(&out), "Hello World!\n", "{}", stderr(&out));
}

#[test]
fn mqtt_5_works_the_same() {
    let broker = Mosquitto::start(true);
    let site = Site::new();
    let config = mqtt_config(&site, &broker, &services(&site));
    site.write_config(&config.replace("[mqtt]\n", "[mqtt]\nprotocol = \"5\"\n"));
    let medic = site.start();
    medic.expect_log("MQTT: subscribed", WAIT);
    let results = broker.watch("medic/test/result", Some("watcher5"));

    let out = send(
        &broker,
        "test",
        &["hello", "exec", "--protocol", "5", "--task-id", "50"],
    );
    assert_eq!(stdout(&out), "Hello World!\n", "{}", stderr(&out));
    // A 3.1.1 sender talks to an MQTT 5 medic through the broker.
    let out = send(&broker, "test", &["hello", "count", "--task-id", "51"]);
    assert_eq!(stdout(&out), "counted\n", "{}", stderr(&out));

    // The session (with its expiry) survives a broker restart: a result from the outage
    // arrives once.
    broker.publish("medic/test/command", &request(52, "hello", "slow"));
    medic.expect_log(r#"task_id="52" action_id"#, WAIT);
    let mut broker = broker;
    broker.stop();
    medic.expect_log(r#"remote command answered task_id="52""#, WAIT);
    broker.resume();
    assert_eq!(results.reply(52, WAIT)["message"], "slow done");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(results.replies(52).len(), 1, "{:?}", results.lines());
}

/// A message over `mqtt.max_message_size` on the command topic is taken off the broker's hands
/// and dropped, once: no reconnect loop, also after a restart, and commands keep being answered.
#[test]
fn an_oversized_message_is_dropped_once_and_commands_keep_working() {
    let broker = Mosquitto::start(false);
    let site = Site::new();
    site.write_config(&mqtt_config(&site, &broker, &services(&site)));
    let medic = site.start();
    medic.expect_log("MQTT: subscribed", WAIT);
    let big = site.path("big.json");
    std::fs::write(
        &big,
        format!(r#"{{"task_id": 90, "pad": "{}"}}"#, "x".repeat(2 << 20)),
    )
    .unwrap();
    broker.publish_file("medic/test/command", &big);
    medic.expect_log(
        "MQTT message larger than mqtt.max_message_size dropped",
        WAIT,
    );
    let out = send(&broker, "test", &["hello", "exec", "--task-id", "91"]);
    assert_eq!(stdout(&out), "Hello World!\n", "{}", stderr(&out));
    // It was acknowledged: a restart does not get it again, and the link never dropped.
    medic.stop();
    let medic = site.start();
    medic.expect_log("MQTT: subscribed", WAIT);
    let out = send(&broker, "test", &["hello", "exec", "--task-id", "92"]);
    assert_eq!(stdout(&out), "Hello World!\n", "{}", stderr(&out));
    let log = medic.log();
    assert_eq!(
        log.matches("larger than mqtt.max_message_size").count(),
        1,
        "{log}"
    );
    assert!(!log.contains("MQTT connection down"), "{log}");
}

/// A rule's notification is published as JSON on `notify_topic` (besides the log and the
/// history), for people and other systems watching the broker.
#[test]
fn rule_notifications_are_published_on_the_notify_topic() {
    let broker = Mosquitto::start(false);
    let site = Site::named("notifier");
    site.add_rule("counter", "counter");
    site.write_config(&mqtt_config(
        &site,
        &broker,
        &format!(
            "{}\n[rules.config.counter]\npattern = \"*/load/load\"\nrun = [\"hello\", \"exec\"]\n",
            services(&site)
        ),
    ));
    let watcher = broker.watch("medic/notifier/notify", None);
    let medic = site.start();
    medic.expect_log("MQTT: subscribed", WAIT);
    medic.putval(&["PUTVAL h/load/load N:1:1:1"]);
    let published = || {
        watcher.json().into_iter().find(|n| {
            n["rule"] == "counter" && n["message"] == "counter: result and timer both arrived"
        })
    };
    assert!(
        wait_until(WAIT, || published().is_some()),
        "{:?}",
        watcher.lines()
    );
    let n = published().unwrap();
    assert_eq!(
        (n["node"].as_str(), n["severity"].as_str()),
        (Some("notifier"), Some("okay"))
    );
    assert!(n["timestamp"].as_u64().is_some(), "{n}");
    medic.stop();
}

/// A rule's `init` arms timers (the SDK hands them out with the empty call medic makes right
/// after a start): mqtt-watchdog reports a device it never heard from after its timeout, with
/// no event ever reaching the rule; and a device that speaks is restored when it returns.
#[test]
fn timers_armed_in_init_fire_without_any_event() {
    let broker = Mosquitto::start(false);
    let site = Site::new();
    site.add_rule("mqtt-watchdog", "mqtt-watchdog");
    let mut config = mqtt_config(
        &site,
        &broker,
        r#"
[rules.config.mqtt-watchdog.devices.sensor]
watch = ["home/sensor/#"]
timeout = "2s"
state = ["home/sensor/set/#"]

[rules.grants.mqtt-watchdog]
subscribe = ["home/sensor/#"]
"#,
    );
    config = config.replace(
        "[mqtt.grants]\n",
        "[mqtt.grants]\nmqtt-watchdog = [\"home/monitoring/expire/#\", \"home/sensor/set/#\"]\n",
    );
    site.write_config(&config);
    let expired = broker.watch("home/monitoring/expire/sensor", None);
    // Watching the state topic means probing it: done before medic subscribes, so the probe
    // never reaches the rule as the device's state (the rule would re-publish it when the
    // device returns, and that copy could come back after "eco" and be what it restores).
    let restored = broker.watch("home/sensor/set/mode", None);
    let medic = site.start();
    assert!(
        wait_until(WAIT, || expired.lines().contains(&"never".into())),
        "{:?}\n{}",
        expired.lines(),
        medic.log()
    );
    // It speaks: its saved state goes back out when it returns after another silence.
    broker.publish("home/sensor/set/mode", "eco");
    // Expired again, now with the time it was last seen.
    let seen_then = || expired.lines().iter().any(|l| l.parse::<u64>().is_ok());
    assert!(wait_until(WAIT, seen_then), "{:?}", expired.lines());
    broker.publish("home/sensor/status", "online");
    assert!(
        wait_until(WAIT, || restored
            .lines()
            .iter()
            .filter(|l| *l == "eco")
            .count()
            >= 2),
        "{:?}",
        restored.lines()
    );
}
