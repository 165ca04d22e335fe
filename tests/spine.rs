//! The spine end to end, on real parts: the `medic` binary, compiled wasm rules, the PUTVAL
//! socket, and real commands.

use std::time::Duration;

use medic_integration::{Site, marker_count, rule, wait_until};

/// Bound for things that take milliseconds on an idle machine; generous for a loaded CI box.
const WAIT: Duration = Duration::from_secs(15);

/// threshold rule config plus a command that appends to a marker file.
fn threshold_config(site: &Site, cooldown: &str) -> String {
    format!(
        r#"
[rules.config.threshold]
pattern = "*/memory/memory-free"
below = 100
clear = 200
service = "fix"
command = "mark"

[services.fix.commands]
mark = {{ run = ["sh", "-c", "echo ran >> '{marker}'; echo marked"], cooldown = "{cooldown}" }}
"#,
        marker = site.path("marker").display()
    )
}

#[test]
fn putval_makes_the_threshold_rule_run_its_command_once_per_cooldown() {
    let site = Site::new();
    site.add_rule("threshold", "threshold");
    site.write_config(&threshold_config(&site, "1h"));
    let medic = site.start();

    let replies = medic.putval(&[
        "PUTVAL web/memory/memory-free N:500",
        "PUTVAL web/memory/memory-free N:50",
    ]);
    assert_eq!(replies, vec!["0 Success: 1 value has been dispatched."; 2]);
    let marker = site.path("marker");
    assert!(
        wait_until(WAIT, || marker_count(&marker) == 1),
        "{}",
        medic.log()
    );
    medic.expect_log("command succeeded", WAIT);
    assert!(
        medic.log().contains(r#"output="marked""#),
        "{}",
        medic.log()
    );

    // Recovery then a new episode: the rule asks again, the host's cooldown refuses.
    medic.putval(&[
        "PUTVAL web/memory/memory-free N:300",
        "PUTVAL web/memory/memory-free N:40",
    ]);
    medic.expect_log("is cooling down for another", WAIT);
    // Other hosts are other series, but the same command: also inside its cooldown.
    medic.putval(&["PUTVAL db/memory/memory-free N:10"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        marker_count(&marker),
        1,
        "the command ran again inside its cooldown"
    );
    assert_eq!(medic.log_lines_with("is cooling down for another").len(), 2);

    // Bad input gets collectd's error replies and changes nothing.
    let replies = medic.putval(&[
        "PUTVAL web/memory/nosuchtype N:1",
        "PUTVAL web/memory/memory-free N:1:2",
        "PUTVAL nohost N:1",
        "HELLO web/memory/memory-free",
        "PUTNOTIF severity=warning time=1700000000 message=\"disk full\"",
    ]);
    assert_eq!(
        replies,
        vec![
            "-1 1 Type `nosuchtype' isn't defined.",
            "-1 Parsing the values string failed.",
            "-1 Cannot parse identifier `nohost'.",
            "-1 Unknown command: HELLO",
            "0 Success",
        ]
    );
    medic.stop();
}

#[test]
fn hot_reload_swaps_versions_without_losing_a_value_and_state_survives_restart() {
    let site = Site::new();
    site.add_rule("counter", "counter");
    site.write_config("[rules.config.counter]\npattern = \"*/load/load\"\n");
    let medic = site.start();
    medic.expect_log("counter v1 starting at seen=0", WAIT);

    // Stream values while the rule is replaced by a new build, until the new one has served
    // for a while, and its optimized build (compiled in the background after a quick one
    // served first) has taken over and served too: two swaps under load.
    let mut conn = medic.connect();
    let mut sent = 0;
    let mut swapped_at = None;
    let mut optimized_at = None;
    loop {
        let lines: Vec<String> = (0..100)
            .map(|i| format!("PUTVAL h{}/load/load N:{}:1:1", (sent + i) % 7, sent + i))
            .collect();
        let replies = conn.send_many(&lines);
        assert!(
            replies.iter().all(|r| r.starts_with("0 Success")),
            "{replies:?}"
        );
        sent += lines.len();
        if sent == 1000 {
            site.deploy(&rule("counter-v2"), "counter");
        }
        if swapped_at.is_none() && medic.log().contains("counter v2 starting") {
            swapped_at = Some(sent);
        }
        // v2's tier-up (v1's, if it came at all, was before v2 started).
        let log = medic.log();
        if optimized_at.is_none()
            && log
                .find("counter v2 starting")
                .is_some_and(|at| log[at..].contains("rule tiered up"))
        {
            optimized_at = Some(sent);
        }
        if swapped_at.is_some_and(|at| sent >= at + 1000)
            && optimized_at.is_some_and(|at| sent >= at + 1000)
        {
            break;
        }
        assert!(
            sent < 200_000,
            "the new version never started:\n{}",
            medic.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let total = sent;
    medic.expect_log("rule reloaded: new version serving", WAIT);
    medic.expect_log(&format!("counter v2 seen={total}"), WAIT);
    assert!(
        medic.log().contains("counter v1 seen="),
        "v1 served before the swap"
    );
    assert!(!medic.log().contains("dropped"), "{}", medic.log());

    // A broken new version never replaces a working one.
    std::fs::write(site.path("broken.wasm"), b"\0asm\x0d\0\x01\0garbage").unwrap();
    site.deploy(&site.path("broken.wasm"), "counter");
    medic.expect_log("the previous version keeps serving", WAIT);
    medic.putval(&["PUTVAL h/load/load N:1:1:1"]);
    medic.expect_log(&format!("counter v2 seen={}", total + 1), WAIT);

    // State survives a restart.
    // (Re-deploying the serving build over the broken file is recognised as no change.)
    site.deploy(&rule("counter-v2"), "counter");
    medic.expect_log("rule file touched but unchanged", WAIT);
    medic.stop();
    let medic = site.start();
    medic.expect_log(&format!("counter v2 starting at seen={}", total + 1), WAIT);

    // Removing the file unloads the rule.
    std::fs::remove_file(site.rules_dir().join("counter.wasm")).unwrap();
    medic.expect_log("rule unloaded", WAIT);
    medic.putval(&["PUTVAL h/load/load N:1:1:1"]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!medic.log().contains(&format!("seen={}", total + 2)));
    medic.stop();
}

#[test]
fn broken_rules_are_contained_and_explained() {
    let site = Site::new();
    site.add_rule("threshold", "threshold");
    site.add_rule("faulty", "trap");
    site.add_rule("faulty", "spin");
    site.add_rule("faulty", "grow");
    site.add_rule("faulty", "refuses");
    std::fs::write(site.rules_dir().join("corrupt.wasm"), b"this is not wasm").unwrap();
    // A rule built with the SDK of medic:rules@0.1.0 (the counter test rule, kept as it was).
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/rules/counter-medic-rules-0.1.0.wasm"
        ),
        site.rules_dir().join("old.wasm"),
    )
    .unwrap();
    site.write_config(&format!(
        "{}\n[rules.config.trap]\nmode = \"trap\"\n[rules.config.spin]\nmode = \"loop\"\n\
         [rules.config.grow]\nmode = \"grow\"\n[rules.config.refuses]\nmode = \"init-error\"\n",
        threshold_config(&site, "0s")
    ));

    // `medic check` says why each bad rule cannot serve, and fails.
    let out = site.check();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no line for {name}:\n{stdout}"))
            .to_string()
    };
    assert!(line("threshold").contains(" ok "), "{stdout}");
    assert!(
        line("corrupt").contains("FAILED")
            && line("corrupt").contains("not a valid wasm component"),
        "{stdout}"
    );
    let rebuild = "the rule is built against medic:rules@0.1.0; this medic speaks \
                   medic:rules@0.4.0: rebuild the rule with the current medic rules SDK";
    assert!(
        line("old").contains("FAILED") && line("old").contains(rebuild),
        "{stdout}"
    );
    assert!(
        line("trap").contains("faulted on a `medic-check` timer: trapped"),
        "{stdout}"
    );
    assert!(
        line("spin").contains("ran past its 50ms deadline"),
        "{stdout}"
    );
    assert!(
        line("refuses").contains("init refused its config: faulty rule refuses to start"),
        "{stdout}"
    );

    // The daemon starts anyway, serves the good rule, and logs why the others fail.
    let medic = site.start();
    assert!(medic.log().contains("rule not loaded"), "{}", medic.log());
    let marker = site.path("marker");
    for round in 0..3 {
        medic.putval(&[
            "PUTVAL web/memory/memory-free N:500",
            "PUTVAL web/memory/memory-free N:50",
        ]);
        assert!(
            wait_until(WAIT, || marker_count(&marker) == round + 1),
            "round {round}: the good rule stopped working\n{}",
            medic.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    medic.expect_log("faulty rule trapped on a batch", WAIT);
    medic.expect_log("rule faulted: trapped", WAIT);
    medic.expect_log("rule faulted: ran past its 50ms deadline", WAIT);
    let grow = medic.log_lines_with("rule=\"grow\"");
    assert!(
        grow.iter()
            .any(|l| l.contains("rule faulted: went over its memory limit")),
        "{grow:?}"
    );
    medic.expect_log("rule re-instantiated after a fault", WAIT);
    let corrupt = medic.log_lines_with("rule=\"corrupt\"");
    assert!(
        corrupt
            .iter()
            .any(|l| l.contains("not a valid wasm component")),
        "{corrupt:?}"
    );
    let old = medic.log_lines_with("rule=\"old\"");
    assert!(old.iter().any(|l| l.contains(rebuild)), "{old:?}");
    // Every fault is on record too, with the build that faulted.
    medic.stop();
    let rows = site.history();
    let fault = |rule: &str, what: &str| {
        rows.iter().any(|r| {
            r["kind"] == "fault"
                && r["origin"] == rule
                && r["state"] == "faulted"
                && r["reason"].as_str().unwrap().contains(what)
        })
    };
    assert!(fault("trap", "faulted: trapped"), "{rows:?}");
    assert!(fault("spin", "ran past its 50ms deadline"), "{rows:?}");
    assert!(fault("corrupt", "not loaded: "), "{rows:?}");
    assert!(fault("refuses", "not loaded: "), "{rows:?}");
    let trap = rows.iter().find(|r| r["origin"] == "trap").unwrap();
    assert_eq!(trap["build"], site.build_of("trap").as_str());
}

#[test]
fn config_errors_point_at_line_and_column() {
    let site = Site::new();
    let path = site.write_config("[services.x.commands]\nbad = []\n");
    let out = site.check();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "{}:20:7: an argv array needs at least the program",
        path.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn command_results_and_timers_come_back_to_the_asking_rule() {
    let site = Site::new();
    site.add_rule("counter", "counter");
    site.write_config(
        r#"
[rules.config.counter]
pattern = "*/load/load"
run = ["hello", "exec"]

[services.hello.commands]
exec = "echo Hello World!; exit 3"
"#,
    );
    let medic = site.start();
    medic.putval(&["PUTVAL h/load/load N:1:1:1"]);
    medic.expect_log(
        r#"counter result hello/exec code=Some(3) output="Hello World!\n" error=None"#,
        WAIT,
    );
    medic.expect_log("counter timer tick fired", WAIT);
    medic.expect_log("notification: counter: result and timer both arrived", WAIT);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !medic.log().contains("timer cancelled fired"),
        "{}",
        medic.log()
    );
    medic.stop();
}

/// The shutdown order, seen from outside: a command still running at SIGTERM gets
/// `daemon.stop_timeout`, then its process group is killed and named; its result still reaches
/// the rule before the rules are suspended; medic exits 0.
#[test]
fn shutdown_kills_overdue_commands_and_hands_their_results_to_the_rules_first() {
    let site = Site::new();
    site.add_rule("counter", "counter");
    let pid_file = site.path("grandchild.pid");
    site.write_config(&format!(
        r#"
[rules.config.counter]
pattern = "*/load/load"
run = ["slow", "run"]

[services.slow.commands]
run = {{ run = "sleep 30 & echo $! > {pid_file}; wait", timeout = "60s", kill_grace = "1s" }}
"#,
        pid_file = pid_file.display()
    ));
    site.set("daemon", "stop_timeout = \"500ms\"");
    let medic = site.start();
    medic.putval(&["PUTVAL h/load/load N:1:1:1"]);
    medic.expect_log("running command", WAIT);
    let log = site.path("medic.log");
    let (status, took) = medic.stop_status();
    let log = std::fs::read_to_string(log).unwrap();
    assert!(status.success(), "medic exited {status}; log:\n{log}");
    assert!(
        took < Duration::from_secs(20),
        "stop took {took:?}; log:\n{log}"
    );
    let position = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in the log:\n{log}"))
    };
    let killed = position("process groups killed");
    assert!(
        log[killed..].lines().next().unwrap().contains("slow/run"),
        "{log}"
    );
    let result = position(
        r#"counter result slow/run code=None output="" error=Some("medic is stopping: process group killed")"#,
    );
    let suspended = position("rules suspended");
    let stopped = position("medic stopped");
    // The result may reach the rule as soon as the kill ends the command; the rules are
    // suspended only after both.
    assert!(
        killed < suspended && result < suspended && suspended < stopped,
        "{log}"
    );
    // The whole group went, the command's own child included (gone, or a zombie to be reaped).
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let alive = || {
        std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
            .is_ok_and(|stat| !stat.contains(") Z "))
    };
    assert!(
        wait_until(Duration::from_secs(5), || !alive()),
        "child {pid} of the killed command still runs"
    );
    // The audit history says so, naming the rule's build.
    let rows = site.history();
    let row = rows
        .iter()
        .find(|r| r["service"] == "slow")
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert_eq!(row["state"], "interrupted", "{row}");
    assert_eq!(row["origin"], "counter");
    assert_eq!(row["build"], site.build_of("counter").as_str());
    assert_eq!(row["error"], "medic is stopping: process group killed");
}

/// A medic killed mid-command (SIGKILL: no clean stop) leaves the command's audit row
/// `running`; the next start marks it `interrupted`, and `medic history` shows it, also as a
/// table for people and filtered to what failed.
#[test]
fn a_command_cut_short_by_a_crash_is_recorded_as_interrupted() {
    let site = Site::new();
    site.add_rule("counter", "counter");
    site.write_config(
        r#"
[rules.config.counter]
pattern = "*/load/load"
run = ["slow", "run"]

[services.slow.commands]
run = { run = "sleep 30", timeout = "60s" }
"#,
    );
    let mut medic = site.start();
    medic.putval(&["PUTVAL h/load/load N:1:1:1"]);
    medic.expect_log("running command", WAIT);
    let running = || {
        site.history()
            .iter()
            .any(|r| r["service"] == "slow" && r["state"] == "running")
    };
    assert!(wait_until(WAIT, running), "{:?}", site.history());
    medic.signal(9);
    assert!(wait_until(WAIT, || !medic.is_running()));
    let medic = site.start();
    medic.expect_log("recorded as interrupted", WAIT);
    let rows = site.history();
    let row = rows.iter().find(|r| r["service"] == "slow").unwrap();
    assert_eq!(row["state"], "interrupted", "{rows:?}");
    assert_eq!(row["build"], site.build_of("counter").as_str());
    let table = std::process::Command::new(medic_integration::medic_bin())
        .args(["history", "--failed", "--since", "1h", "--config"])
        .arg(site.path("medic.toml"))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    let line = table
        .lines()
        .find(|l| l.contains("slow/run"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        line.contains("interrupted") && line.contains("counter"),
        "{table}"
    );
    medic.stop();
}

/// SIGHUP (`medic reload`): a rule's new `[rules.config.NAME]` and a new allow-list take effect
/// without a restart and without losing the rule's state; a change that cannot apply live is
/// named; a broken config is refused with its line and column, and the old one keeps serving.
#[test]
fn reload_applies_rule_configs_and_the_allow_list_live() {
    let site = Site::new();
    site.add_rule("counter", "counter");
    let config = |pattern: &str, say: &str| {
        format!(
            r#"
[rules.config.counter]
pattern = "{pattern}"
run = ["hello", "exec"]

[services.hello.commands]
exec = "echo {say}"
"#
        )
    };
    site.write_config(&config("*/load/load", "one"));
    let mut medic = site.start();
    medic.putval(&["PUTVAL h/load/load N:1:1:1"]);
    medic.expect_log(
        r#"counter result hello/exec code=Some(0) output="one\n""#,
        WAIT,
    );

    let path = site.write_config(&config("*/memory/*", "two"));
    site.set("daemon", "stop_timeout = \"3s\"");
    let reload = std::process::Command::new(medic_integration::medic_bin())
        .args(["reload", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(reload.status.success(), "{reload:?}");
    assert!(
        String::from_utf8_lossy(&reload.stdout)
            .contains(&format!("medic (pid {}) asked to reload", medic.pid())),
        "{reload:?}"
    );
    medic.expect_log("config reloaded file=", WAIT);
    medic.expect_log(r#"take effect at the next start sections=["daemon"]"#, WAIT);
    medic.expect_log("rule re-initialised with its new config", WAIT);
    // The state survived the re-initialisation.
    medic.expect_log("counter v1 starting at seen=1", WAIT);
    medic.putval(&["PUTVAL h/memory/memory-free N:5"]);
    medic.expect_log(
        r#"counter result hello/exec code=Some(0) output="two\n""#,
        WAIT,
    );
    medic.expect_log("counter v1 seen=2", WAIT);

    // A broken config: `medic reload` says where, and does not signal; a bare SIGHUP is
    // refused by medic, which keeps serving with what it has.
    std::fs::write(&path, "[daemon\n").unwrap();
    let reload = std::process::Command::new(medic_integration::medic_bin())
        .args(["reload", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!reload.status.success());
    let err = String::from_utf8_lossy(&reload.stderr);
    assert!(err.contains("medic.toml:1:"), "{err}");
    medic.signal(1);
    medic.expect_log("config not reloaded: ", WAIT);
    assert!(
        medic
            .log_lines_with("config not reloaded")
            .iter()
            .any(|l| l.contains("medic.toml:1:"))
    );
    medic.putval(&["PUTVAL h/memory/memory-free N:6"]);
    medic.expect_log("counter v1 seen=3", WAIT);
    assert!(medic.is_running());
    medic.stop();
}

/// A command's cooldown survives a restart: medic does not run it again just because it was
/// restarted (a crash loop must not turn into a restart loop of what it guards).
#[test]
fn cooldowns_survive_a_restart() {
    let site = Site::new();
    site.add_rule("counter", "counter");
    site.write_config(
        r#"
[rules.config.counter]
pattern = "*/load/load"
run = ["web", "restart"]

[services.web.commands]
restart = { run = "echo restarted", cooldown = "1h" }
"#,
    );
    let medic = site.start();
    medic.putval(&["PUTVAL h/load/load N:1:1:1"]);
    medic.expect_log(
        r#"counter result web/restart code=Some(0) output="restarted\n""#,
        WAIT,
    );
    medic.stop();
    let medic = site.start();
    medic.putval(&["PUTVAL h/load/load N:1:1:1"]);
    medic.expect_log("`web`/`restart` is cooling down for another", WAIT);
    medic.stop();
}

/// The host bounds what a rule asks for: a command that keeps failing opens its breaker (then
/// refused with `circuit open`), one trial run after `open_for` closes it again, and a command
/// asked for too often is refused by its rate limit. Each decision is in the history, with the
/// rule's build; the breaker's changes are too.
#[test]
fn the_breaker_and_the_rate_limit_bound_what_rules_ask_for() {
    let site = Site::new();
    site.add_rule("counter", "flaky");
    site.add_rule("counter", "eager");
    let fixed = site.path("fixed");
    site.write_config(&format!(
        r#"
[rules.config.flaky]
pattern = "*/flaky/*"
run = ["svc", "fix"]
every_batch = true

[rules.config.eager]
pattern = "*/eager/*"
run = ["svc", "ping"]
every_batch = true

[services.svc.commands]
fix = {{ run = "test -e {fixed}", breaker = {{ failures = 3, within = "1m", open_for = "2s" }} }}
ping = {{ run = "true", max_runs = {{ count = 2, within = "1h" }} }}
"#,
        fixed = fixed.display()
    ));
    let medic = site.start();
    // One value at a time: each request is answered before the next is asked.
    let ask = |plugin: &str, i: usize, answered: &str, n: usize| {
        medic.putval(&[&format!("PUTVAL h/{plugin}/gauge N:{i}")]);
        assert!(
            wait_until(WAIT, || medic.log_lines_with(answered).len() >= n),
            "no {n}th {answered:?}:\n{}",
            medic.log()
        );
    };
    for i in 1..=3 {
        ask("flaky", i, "counter result svc/fix code=Some(1)", i);
    }
    medic.expect_log(
        "circuit opened: `svc`/`fix` failed 3 times within 60s",
        WAIT,
    );
    ask(
        "flaky",
        4,
        r#"error=Some("circuit open: `svc`/`fix` failed too often"#,
        1,
    );
    std::fs::write(&fixed, "").unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    ask("flaky", 5, "counter result svc/fix code=Some(0)", 1);
    medic.expect_log(
        "circuit closed: the trial run of `svc`/`fix` succeeded",
        WAIT,
    );

    for i in 1..=2 {
        ask("eager", i, "counter result svc/ping code=Some(0)", i);
    }
    ask(
        "eager",
        3,
        r#"error=Some("rate limit: `svc`/`ping` started 2 times within 3600s")"#,
        1,
    );

    let rows = site.history();
    let fix: Vec<&str> = rows
        .iter()
        .rev()
        .filter(|r| r["command"] == "fix")
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        fix,
        ["failed", "failed", "failed", "refused", "succeeded"],
        "{rows:?}"
    );
    let build = site.build_of("flaky");
    assert!(
        rows.iter()
            .filter(|r| r["command"] == "fix")
            .all(|r| r["origin"] == "flaky" && r["build"] == build.as_str())
    );
    let breaker: Vec<&str> = rows
        .iter()
        .rev()
        .filter(|r| r["origin"] == "policy")
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert!(
        breaker.len() == 2
            && breaker[0].starts_with("failure: circuit opened")
            && breaker[1].starts_with("okay: circuit closed"),
        "{breaker:?}"
    );
    let refused = rows
        .iter()
        .find(|r| r["command"] == "ping" && r["state"] == "refused")
        .unwrap();
    assert!(
        refused["refusal"]
            .as_str()
            .unwrap()
            .starts_with("rate limit")
    );
    medic.stop();
}

/// `user = "nobody"`: the command runs with nobody's uid and group and no supplementary
/// groups, and learns who asked from its environment. Needs root (CI is root); elsewhere medic
/// must refuse the config at start, which is checked instead.
#[test]
fn a_command_runs_as_its_configured_user() {
    let site = Site::new();
    site.add_rule("counter", "counter");
    site.write_config(
        r#"
[rules.config.counter]
pattern = "*/load/load"
run = ["who", "ami"]

[services.who.commands]
ami = { run = "echo $(id -u) $(id -G) $MEDIC_ORIGIN", user = "nobody", cwd = "/" }
"#,
    );
    if !std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    {
        let out = site.check();
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("medic must run as root"),
            "{out:?}"
        );
        return;
    }
    let medic = site.start();
    medic.putval(&["PUTVAL h/load/load N:1:1:1"]);
    medic.expect_log(
        r#"counter result who/ami code=Some(0) output="65534 65534 counter\n""#,
        WAIT,
    );
    let rows = site.history();
    let row = rows.iter().find(|r| r["service"] == "who").unwrap();
    assert_eq!(row["state"], "succeeded", "{rows:?}");
    medic.stop();
}

/// What a rule prints reaches medic's log with the rule's name and stream, and a rule that
/// prints in a loop cannot flood the log.
#[test]
fn what_rules_print_is_logged_with_their_name_and_bounded() {
    let site = Site::new();
    site.add_rule("faulty", "printer");
    site.add_rule("faulty", "flood");
    site.add_rule("faulty", "trap");
    site.write_config(
        "[rules.config.printer]\nmode = \"print\"\n[rules.config.flood]\nmode = \"flood\"\n\
         [rules.config.trap]\nmode = \"trap\"\n",
    );
    let mut medic = site.start();
    medic.putval(&["PUTVAL h/load/load N:1:1:1"]);
    medic.expect_log("rule printed: faulty prints a batch of 1", WAIT);
    let printed = medic.log_lines_with("faulty prints a batch of 1");
    assert!(
        printed
            .iter()
            .all(|l| l.contains("rule=\"printer\"") && l.contains("stream=\"stdout\"")),
        "{printed:?}"
    );
    // A panic's message is logged as the rule's own error (the SDK's panic hook), once.
    medic.expect_log("faulty rule trapped on a batch of 1", WAIT);
    let panic = medic.log_lines_with("faulty rule trapped on a batch of 1");
    assert!(
        panic[0].contains("rule panicked: panicked at") && panic[0].contains("rule=\"trap\""),
        "{panic:?}"
    );
    // 1 000 lines in one batch: at most 50 a second reach the log, the rest are counted.
    medic.putval(&["PUTVAL h/load/load N:2:1:1"]);
    medic.expect_log("rule printed more than 50 lines a second", WAIT);
    let flood = medic.log_lines_with("flood line");
    assert!(flood.len() <= 100, "{} flood lines logged", flood.len());
    assert!(
        flood
            .iter()
            .all(|l| l.contains("rule=\"flood\"") && l.contains("stream=\"stderr\"")),
        "{flood:?}"
    );
    assert!(medic.is_running());
    medic.stop();
}

/// A burst many batches long (`rules.max_batch = 4`, 2 000 value lists pipelined on one PUTVAL
/// connection) reaches the rule whole: the dispatcher cuts each rule's chunk at the batch size,
/// and the worker takes what it has already received before it waits for more.
#[test]
fn a_burst_many_batches_long_reaches_the_rule_whole() {
    let site = Site::new();
    site.add_rule("counter", "counter");
    site.write_config("[rules.config.counter]\npattern = \"burst/load/*\"\n");
    site.set("rules", "max_batch = 4");
    let medic = site.start();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let lines: Vec<String> = (0..2000u64)
        .map(|i| {
            let time = now - 2000 + i;
            format!("PUTVAL burst/load/gauge-{} interval=1 {time}:{i}", i % 50)
        })
        .collect();
    let replies = medic.connect().send_many(&lines);
    assert!(replies.iter().all(|r| r.starts_with('0')), "{replies:?}");
    let all = || {
        let log = medic.log();
        medic_integration::max_seen(log.lines()) == 2000
    };
    assert!(
        wait_until(WAIT, all),
        "seen {}",
        medic_integration::max_seen(medic.log().lines())
    );
}
