//! `medic replay` on real compiled rules: every example's recorded feed gives its expected
//! actions (twice: replays are deterministic), a changed rule fails `--expect` with a diff,
//! timers fire in virtual time, a trap is reported with the event that caused it, a broken feed
//! names its line, and collectd datagrams (a capture directory, or `medic decode`'s output)
//! replay like JSON lines.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use medic_integration::{Site, medic_bin, rule, workspace};

fn replay(args: &[&str]) -> Output {
    Command::new(medic_bin())
        .arg("replay")
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn lines(out: &Output) -> Vec<serde_json::Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// `rules-examples/<name>/tests/{medic.toml,feed.jsonl,expected.jsonl}` against the built rule.
fn replay_example(name: &str, extra: &[&str]) -> Output {
    let dir = workspace().join("rules-examples").join(name).join("tests");
    let path = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let wasm = rule(name);
    let mut args = vec![
        "--config".to_string(),
        path("medic.toml"),
        "--rules".to_string(),
        wasm.to_str().unwrap().to_string(),
        path("feed.jsonl"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    replay(&args)
}

#[test]
fn every_example_rule_replays_its_feed_as_expected_and_the_same_twice() {
    let examples = std::fs::read_dir(workspace().join("rules-examples")).unwrap();
    let mut tested = Vec::new();
    for example in examples {
        let dir = example.unwrap().path();
        if !dir.join("tests/feed.jsonl").exists() {
            continue;
        }
        let name = dir.file_name().unwrap().to_str().unwrap().to_string();
        let expected = dir.join("tests/expected.jsonl");
        let first = replay_example(&name, &["--expect", expected.to_str().unwrap()]);
        assert!(
            first.status.success(),
            "{name}: {}\n{}",
            text(&first.stdout),
            text(&first.stderr)
        );
        assert!(
            !lines(&first).is_empty(),
            "{name}: the feed must lead to actions"
        );
        let second = replay_example(&name, &[]);
        assert_eq!(
            text(&first.stdout),
            text(&second.stdout),
            "{name}: not deterministic ({}; stderr: {})",
            second.status,
            text(&second.stderr)
        );
        tested.push(name);
    }
    tested.sort();
    assert_eq!(
        tested,
        [
            "disk-fill",
            "influx-forward",
            "lcm-lua",
            "memory-free",
            "mqtt-watchdog",
            "notify-webhook",
            "service-health",
            "threshold"
        ]
    );
}

#[test]
fn a_changed_rule_fails_expect_with_a_readable_diff() {
    let site = Site::new();
    let original = workspace().join("rules-examples/threshold/tests/medic.toml");
    let config = std::fs::read_to_string(original)
        .unwrap()
        .replace("for = \"30s\"", "for = \"60s\"");
    std::fs::write(site.path("medic.toml"), config).unwrap();
    let feed = workspace().join("rules-examples/threshold/tests/feed.jsonl");
    let expected = workspace().join("rules-examples/threshold/tests/expected.jsonl");
    let out = replay(&[
        "--config",
        site.path("medic.toml").to_str().unwrap(),
        "--rules",
        rule("threshold").to_str().unwrap(),
        feed.to_str().unwrap(),
        "--expect",
        expected.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("the actions differ from"), "{err}");
    // Crossed 30 s later: the old decision is missing, the new one is there.
    assert!(
        err.contains(r#"- {"time":"2025-11-30T10:57:10Z","rule":"threshold","action":"run""#),
        "{err}"
    );
    assert!(
        err.contains(r#"+ {"time":"2025-11-30T10:57:40Z","rule":"threshold","action":"run""#),
        "{err}"
    );
}

#[test]
fn timers_fire_in_virtual_time_not_wall_time() {
    let out = replay_example("mqtt-watchdog", &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = lines(&out);
    // 20 minutes of feed, replayed in well under a second: the 90 s timeout fired three times
    // at the feed's times (last message + 90 s).
    let expiries: Vec<(&str, &str)> = lines
        .iter()
        .filter(|l| l["topic"] == "home/monitoring/expire/boiler")
        .map(|l| (l["time"].as_str().unwrap(), l["payload"].as_str().unwrap()))
        .collect();
    assert_eq!(
        expiries,
        [
            ("2025-11-30T10:57:50Z", "1764500180"),
            ("2025-11-30T11:01:40Z", "1764500410"),
            ("2025-11-30T11:09:50Z", "1764500900"),
        ]
    );
    let err = text(&out.stderr);
    assert!(err.contains("3 timers fired"), "{err}");
    // The policy gate counts the cooldown on the feed's clock too.
    let refused: Vec<_> = lines.iter().filter(|l| l["gate"] == "refused").collect();
    assert_eq!(refused.len(), 1, "{lines:?}");
    assert!(refused[0]["why"].as_str().unwrap().contains("cooling down"));
}

fn faulty_site(mode: &str) -> Site {
    let site = Site::new();
    site.add_rule("faulty", "faulty");
    site.write_config(&format!("[rules.config.faulty]\nmode = \"{mode}\"\n"));
    site
}

#[test]
fn a_rule_that_traps_is_reported_with_the_event_that_caused_it() {
    let site = faulty_site("trap");
    let feed = site.path("feed.jsonl");
    std::fs::write(
        &feed,
        "{\"kind\":\"clock\",\"time\":1764500000}\n\
         {\"host\":\"h\",\"plugin\":\"load\",\"type\":\"load\",\"time\":1764500010,\"interval\":10,\"dstypes\":[\"gauge\",\"gauge\",\"gauge\"],\"values\":[1,1,1]}\n\
         {\"host\":\"h\",\"plugin\":\"load\",\"type\":\"load\",\"time\":1764500020,\"interval\":10,\"dstypes\":[\"gauge\",\"gauge\",\"gauge\"],\"values\":[1,1,1]}\n",
    )
    .unwrap();
    let out = replay(&[
        "--config",
        site.path("medic.toml").to_str().unwrap(),
        feed.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let lines = lines(&out);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let origin = format!("{}:2", feed.display());
    assert_eq!(lines[0]["action"], "fault");
    assert_eq!(lines[0]["kind"], "trap");
    assert_eq!(lines[0]["events"], origin.as_str());
    assert_eq!(lines[0]["time"], "2025-11-30T10:53:30Z");
    assert!(
        lines[0]["error"].as_str().unwrap().contains("trapped"),
        "{lines:?}"
    );
    // A fresh instance takes the next batch, and traps on it too.
    assert_eq!(lines[1]["events"], format!("{}:3", feed.display()).as_str());
}

#[test]
fn a_broken_feed_line_is_named_and_stops_the_replay() {
    let site = faulty_site("print");
    let feed = site.path("feed.jsonl");
    std::fs::write(
        &feed,
        "{\"kind\":\"clock\",\"time\":1764500000}\n{\"kind\":\"values\",\"time\":1764500001,\"host\":\"h\"}\n",
    )
    .unwrap();
    let out = replay(&[
        "--config",
        site.path("medic.toml").to_str().unwrap(),
        feed.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:2: a value list needs `host`, `plugin` and `type`",
            feed.display()
        )),
        "{err}"
    );
}

#[test]
fn collectd_datagrams_replay_from_a_capture_directory_and_from_decode() {
    let site = Site::new();
    site.write_config(
        "[rules.config.threshold]\npattern = \"*/load/load\"\ndata_source = \"shortterm\"\n\
         above = 1.0\nservice = \"web\"\ncommand = \"restart\"\n\n\
         [services.web.commands]\nrestart = \"true\"\n",
    );
    let captures = site.path("captures");
    std::fs::create_dir(&captures).unwrap();
    let fixture = workspace().join("tests/fixtures/collectd/plain.bin");
    std::fs::copy(&fixture, captures.join("0001.bin")).unwrap();
    let config = site.path("medic.toml");
    let threshold = rule("threshold");
    let from_dir = replay(&[
        "--config",
        config.to_str().unwrap(),
        "--rules",
        threshold.to_str().unwrap(),
        captures.to_str().unwrap(),
    ]);
    assert!(from_dir.status.success(), "{}", text(&from_dir.stderr));
    let actions = lines(&from_dir);
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(actions[0]["action"], "run");
    assert_eq!(
        actions[0]["reason"],
        "collectd-fixture/load/load = 1.48291015625 > 1 for 0ns"
    );

    // `medic decode` prints a feed: piped in, the same actions.
    let decoded = Command::new(medic_bin())
        .args(["decode", "--types-db", "/usr/share/collectd/types.db"])
        .arg(&fixture)
        .output()
        .unwrap();
    assert!(decoded.status.success(), "{}", text(&decoded.stderr));
    let mut child = Command::new(medic_bin())
        .args(["replay", "--config", config.to_str().unwrap(), "--rules"])
        .arg(&threshold)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&decoded.stdout)
        .unwrap();
    let from_decode = child.wait_with_output().unwrap();
    assert!(
        from_decode.status.success(),
        "{}",
        text(&from_decode.stderr)
    );
    // The same decision; its time to the millisecond (decode prints seconds as a float).
    let same = |mut l: serde_json::Value| {
        let time = l["time"].as_str().unwrap()[..23].to_string();
        l["time"] = time.into();
        l
    };
    let decoded_actions: Vec<_> = lines(&from_decode).into_iter().map(same).collect();
    let dir_actions: Vec<_> = actions.into_iter().map(same).collect();
    assert_eq!(decoded_actions, dir_actions);
}

#[test]
fn new_rule_writes_a_crate_that_tests_builds_and_replays() {
    let site = Site::new();
    let dir = site.path("low_mem");
    let out = Command::new(medic_bin())
        .args(["new-rule", "low_mem", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A target directory of its own (the outer `cargo test` holds the workspace's), kept
    // between runs so only the first one compiles the SDK's dependencies.
    let target = medic_integration::target_dir().join("new-rule-test");
    let cargo = |args: &[&str]| {
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(args)
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cargo {args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    let tested = cargo(&["test", "--quiet"]);
    assert!(tested.contains("1 passed"), "{tested}");
    cargo(&["build", "--quiet", "--release", "--target", "wasm32-wasip2"]);
    let wasm = target.join("wasm32-wasip2/release/low_mem.wasm");
    let out = replay(&[
        "--config",
        dir.join("tests/medic.toml").to_str().unwrap(),
        "--rules",
        wasm.to_str().unwrap(),
        dir.join("tests/feed.jsonl").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let actions = lines(&out);
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(actions[0]["rule"], "low_mem");
    assert_eq!(actions[0]["gate"], "run");
}

#[test]
fn record_captures_what_the_sources_deliver_as_a_feed_replay_reads() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    let site = Site::new();
    site.add_rule("memory-free", "memory-free");
    site.write_config(
        "[rules.config.memory-free]\nbelow = 1e9\n\n[services.hello.commands]\nexec = \"true\"\n",
    );
    let config = site.path("medic.toml");
    let feed = site.path("recorded.jsonl");
    let mut recorder = Command::new(medic_bin())
        .args(["record", "--duration", "60s", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&feed)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(medic_integration::wait_until(
        Duration::from_secs(20),
        || { site.socket().exists() }
    ));
    let stream = UnixStream::connect(site.socket()).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    for (t, free) in [
        (1_764_500_000, 2e9),
        (1_764_500_010, 5e8),
        (1_764_500_020, 4e8),
    ] {
        writeln!(
            writer,
            "PUTVAL web/memory/memory-free interval=10 {t}:{free}"
        )
        .unwrap();
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        assert!(reply.starts_with("0 "), "{reply}");
    }
    drop((reader, writer));
    // Interrupted before its duration: what was delivered is written.
    Command::new("kill")
        .args(["-INT", &recorder.id().to_string()])
        .status()
        .unwrap();
    let status = recorder.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut recorder.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{err}");
    assert!(err.contains("3 events written"), "{err}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&feed).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let out = replay(&["--config", config.to_str().unwrap(), feed.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let actions = lines(&out);
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(actions[0]["time"], "2025-11-30T10:53:30Z");
    assert_eq!(
        actions[0]["reason"],
        "web: 500000000 bytes free < 1000000000"
    );
}

/// `MOfN`, `Missing` (its checks on a timer in virtual time), `Delta` and `Cooldown` through
/// the wasm boundary (`tests/rules/detectors`): each decision on the recorded feed, at its time.
#[test]
fn the_sdk_detectors_behave_the_same_through_the_wasm_boundary() {
    let dir = workspace().join("tests/fixtures/replay/detectors");
    let path = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let out = replay(&[
        "--config",
        &path("medic.toml"),
        "--rules",
        rule("detectors").to_str().unwrap(),
        &path("feed.jsonl"),
        "--expect",
        &path("expected.jsonl"),
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let messages: Vec<String> = lines(&out)
        .iter()
        .map(|l| {
            format!(
                "{} {}",
                &l["time"].as_str().unwrap()[11..19],
                l["message"].as_str().unwrap()
            )
        })
        .collect();
    // 5, 12, 8, 15: two of the last three above 10 at 15; 3, 4, 2: clear at 2.
    assert!(
        messages.contains(&"10:53:50 h/cpu/percent-active: 2 of 3 above 10".to_string()),
        "{messages:?}"
    );
    assert!(
        messages.contains(&"10:54:20 h/cpu/percent-active: 3 of 3 at or below 10".to_string()),
        "{messages:?}"
    );
    // Last seen at 10:53:40 with a 10 s interval: missing after two intervals, back at 10:55:10.
    assert!(
        messages.contains(&"10:54:00 h/memory/memory-free is missing".to_string()),
        "{messages:?}"
    );
    assert!(
        messages.contains(&"10:55:10 h/memory/memory-free is back".to_string()),
        "{messages:?}"
    );
    // Above 10 at 10:53:30 and 10:53:50: said once (a minute's cooldown).
    let said: Vec<_> = messages
        .iter()
        .filter(|m| m.contains("said once a minute"))
        .collect();
    assert_eq!(
        said,
        ["10:53:30 h/cpu/percent-active: above 10 (said once a minute)"]
    );
    // 100, 150, 120: the derive went down, a reset.
    assert!(
        messages.contains(
            &"10:53:40 h/processes/fork_rate: no increment (first value or reset)".to_string()
        ),
        "{messages:?}"
    );
}

/// With `--assume-exit`, admitted commands "end" at once with that status and the rule gets the
/// result: `service-health`'s escalation ladder climbs through the wasm boundary, in order.
#[test]
fn assumed_results_drive_an_escalation_ladder() {
    let failing = replay_example("service-health", &["--assume-exit", "1"]);
    assert!(failing.status.success(), "{}", text(&failing.stderr));
    let steps: Vec<String> = lines(&failing)
        .iter()
        .map(|l| match l["action"].as_str().unwrap() {
            "run" => format!(
                "run {}/{}",
                l["service"].as_str().unwrap(),
                l["command"].as_str().unwrap()
            ),
            _ => format!(
                "{} {}",
                l["severity"].as_str().unwrap(),
                l["message"].as_str().unwrap()
            ),
        })
        .collect();
    assert_eq!(
        steps,
        [
            "run nginx/restart",
            "run host/reboot",
            "failure probe web: every step failed: giving up until it passes",
            "okay probe web passes again",
        ]
    );
    let reboot = &lines(&failing)[1];
    assert_eq!(
        reboot["reason"],
        "web: step restart failed (exit 1); escalating"
    );
    // Exit 0: the restart works, nothing climbs.
    let working = replay_example("service-health", &["--assume-exit", "0"]);
    let runs = lines(&working)
        .iter()
        .filter(|l| l["action"] == "run")
        .count();
    assert_eq!(runs, 1);
}

/// lua-collectd-monitor's local script through the lcm-lua rule: each command's result comes
/// back as the notification lua-collectd-monitor sent (its plugin, the handler as type, the
/// JSON message with medic's action id as task id).
#[test]
fn lcm_lua_notifies_results_as_lua_collectd_monitor_did() {
    let out = replay_example("lcm-lua", &["--assume-exit", "0"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let notes: Vec<(String, String)> = lines(&out)
        .iter()
        .filter(|l| l["action"] == "notify")
        .map(|l| {
            (
                l["source"].as_str().unwrap().to_string(),
                l["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let handler = |h: &str| format!("lua-collectd-monitor-local/../scripts/memory.lua::{h}");
    assert_eq!(
        notes,
        [
            (
                handler("metric::memory_free_is_under_10GB"),
                r#"{"message":"","task_id":1,"code":0}"#.to_string()
            ),
            (
                handler("metric::memory_free_is_over_10GB"),
                r#"{"message":"","task_id":2,"code":0}"#.to_string()
            ),
            (
                handler("notification::failure"),
                r#"{"message":"","task_id":3,"code":0}"#.to_string()
            ),
        ]
    );

    // Without `[rules.grants.lcm-lua] notify_as`, the rule may not speak as that plugin: its
    // notifications say so and come from plugin `medic`.
    let site = Site::new();
    let example = workspace().join("rules-examples/lcm-lua");
    let config = std::fs::read_to_string(example.join("tests/medic.toml"))
        .unwrap()
        .replace("notify_as = [\"lua-collectd-monitor-local\"]", "")
        .replace(
            "../scripts/*.lua",
            example.join("scripts/*.lua").to_str().unwrap(),
        );
    std::fs::write(site.path("medic.toml"), config).unwrap();
    let feed = example.join("tests/feed.jsonl");
    let out = replay(&[
        "--config",
        site.path("medic.toml").to_str().unwrap(),
        "--rules",
        rule("lcm-lua").to_str().unwrap(),
        feed.to_str().unwrap(),
        "--assume-exit",
        "0",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let notes: Vec<serde_json::Value> = lines(&out)
        .into_iter()
        .filter(|l| l["action"] == "notify")
        .collect();
    assert_eq!(notes.len(), 3);
    for n in notes {
        assert!(n.get("source").is_none(), "{n}");
        assert!(
            n["why"]
                .as_str()
                .unwrap()
                .contains("(rules.grants.lcm-lua.notify_as): sent as plugin medic"),
            "{n}"
        );
    }
}

#[test]
fn record_takes_mqtt_messages_on_its_topic_filters() {
    use medic_integration::broker::Mosquitto;
    use std::time::Duration;

    let broker = Mosquitto::start(false);
    let site = Site::new();
    site.write_config(&broker.medic_section(&site));
    let feed = site.path("recorded.jsonl");
    let mut recorder = Command::new(medic_bin())
        .args([
            "record",
            "--duration",
            "60s",
            "--topic",
            "home/#",
            "--config",
        ])
        .arg(site.path("medic.toml"))
        .arg("--out")
        .arg(&feed)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let recorded = |payload: &str| {
        std::fs::read_to_string(&feed).is_ok_and(|t| t.contains(&format!("\"{payload}\"")))
    };
    // Subscribed once a probe shows up (the feed is flushed every second).
    assert!(medic_integration::wait_until(
        Duration::from_secs(20),
        || {
            broker.publish("home/probe", "probe");
            std::thread::sleep(Duration::from_millis(200));
            recorded("probe")
        }
    ));
    broker.publish("home/boiler/status", "online");
    broker.publish("elsewhere/x", "not recorded");
    assert!(medic_integration::wait_until(
        Duration::from_secs(20),
        || recorded("online")
    ));
    Command::new("kill")
        .args(["-INT", &recorder.id().to_string()])
        .status()
        .unwrap();
    assert!(recorder.wait().unwrap().success());
    let text = std::fs::read_to_string(&feed).unwrap();
    let line: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["topic"] == "home/boiler/status")
        .unwrap();
    assert_eq!(line["kind"], "mqtt");
    assert_eq!(line["payload"], "online");
    assert!(line["time"].as_f64().unwrap() > 1.7e9);
    assert!(!text.contains("not recorded"));
}

/// One feed through the daemon and through `medic replay`: the rule decides the same. The
/// threshold example's own feed and rule config, its times moved to just before now, go in as
/// PUTVAL lines to a running medic whose `restart` records its arguments; the same feed is
/// replayed with the same config. Both run the one rule driver; this holds them to it.
#[test]
fn the_daemon_and_replay_decide_the_same_on_one_feed() {
    let example = workspace().join("rules-examples/threshold/tests");
    let feed: Vec<serde_json::Value> = std::fs::read_to_string(example.join("feed.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = feed
        .iter()
        .map(|e| e["time"].as_f64().unwrap())
        .fold(0.0, f64::max);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // Whole seconds, so the feed's fractions stay as they are.
    let shift = (now - last - 1.0).floor();

    let site = Site::new();
    site.add_rule("threshold", "threshold");
    let example_config = std::fs::read_to_string(example.join("medic.toml")).unwrap();
    let rule_config = &example_config[example_config.find("[rules.config.threshold]").unwrap()
        ..example_config.find("[services").unwrap()];
    let runs = site.path("runs.log");
    site.write_config(&format!(
        "{rule_config}\n[services.web.commands]\nrestart = {{ run = [\"sh\", \"-c\", \
         \"echo \\\"$MEDIC_ORIGIN|$MEDIC_REASON\\\" >> {}\"], cooldown = \"5m\" }}\n",
        runs.display()
    ));
    let mut shifted = String::new();
    let mut putvals = Vec::new();
    for mut entry in feed {
        let time = entry["time"].as_f64().unwrap() + shift;
        entry["time"] = time.into();
        shifted.push_str(&format!("{entry}\n"));
        let values: Vec<String> = entry["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.to_string())
            .collect();
        putvals.push(format!(
            "PUTVAL {}/{}/{} interval={} {time}:{}",
            entry["host"].as_str().unwrap(),
            entry["plugin"].as_str().unwrap(),
            entry["type"].as_str().unwrap(),
            entry["interval"],
            values.join(":")
        ));
    }
    let feed_path = site.path("feed.jsonl");
    std::fs::write(&feed_path, shifted).unwrap();

    // Replay first: what the daemon must do.
    let out = replay(&[
        "--config",
        site.path("medic.toml").to_str().unwrap(),
        "--rules",
        rule("threshold").to_str().unwrap(),
        feed_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let replayed = lines(&out);
    let replayed_runs: Vec<(String, bool)> = replayed
        .iter()
        .filter(|l| l["action"] == "run")
        .map(|l| {
            (
                l["reason"].as_str().unwrap().to_string(),
                l["gate"] == "run",
            )
        })
        .collect();
    let replayed_notes: Vec<String> = replayed
        .iter()
        .filter(|l| l["action"] == "notify")
        .map(|l| {
            format!(
                "{}: {}",
                l["severity"].as_str().unwrap(),
                l["message"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(replayed_runs.len(), 2, "{replayed:?}");
    assert_eq!(replayed_notes.len(), 2, "{replayed:?}");

    let medic = site.start();
    let replies = medic.connect().send_many(&putvals);
    assert!(replies.iter().all(|r| r.starts_with('0')), "{replies:?}");
    let decided = || {
        let rows = site.history();
        let runs: Vec<&serde_json::Value> = rows.iter().filter(|r| r["service"] == "web").collect();
        let notes: Vec<&serde_json::Value> = rows
            .iter()
            .filter(|r| r["kind"] == "notification")
            .collect();
        runs.len() >= replayed_runs.len() && notes.len() >= replayed_notes.len()
    };
    assert!(
        medic_integration::wait_until(std::time::Duration::from_secs(30), decided),
        "{:?}\n{}",
        site.history(),
        medic.log()
    );
    let mut rows = site.history();
    rows.sort_by_key(|r| r["action_id"].as_u64());
    let served_runs: Vec<(String, bool)> = rows
        .iter()
        .filter(|r| r["service"] == "web")
        .map(|r| {
            (
                r["reason"].as_str().unwrap().to_string(),
                r["state"] != "refused",
            )
        })
        .collect();
    let served_notes: Vec<String> = rows
        .iter()
        .filter(|r| r["kind"] == "notification")
        .map(|r| r["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(served_runs, replayed_runs, "{rows:?}");
    assert_eq!(served_notes, replayed_notes, "{rows:?}");
    // The admitted run ran, with the decision's own words.
    let ran: Vec<String> = replayed_runs
        .iter()
        .filter(|(_, admitted)| *admitted)
        .map(|(reason, _)| format!("threshold|{reason}"))
        .collect();
    let recorded = || {
        std::fs::read_to_string(&runs)
            .map(|t| t.lines().map(String::from).collect::<Vec<_>>() == ran)
            .unwrap_or(false)
    };
    assert!(
        medic_integration::wait_until(std::time::Duration::from_secs(30), recorded),
        "{:?} != {ran:?}",
        std::fs::read_to_string(&runs)
    );
}
