//! lua-collectd-monitor's local Lua handlers in medic, on real parts: a real collectd sends its
//! values to medic's network listener and takes medic's notifications on its unixsock plugin,
//! a real mosquitto carries them too, and the scripts run in the compiled `lcm-lua` rule.

use std::time::Duration;

use medic_integration::broker::Mosquitto;
use medic_integration::{Collectd, Medic, Site, free_udp_port, wait_until, workspace};

const WAIT: Duration = Duration::from_secs(30);

/// A site running lcm-lua on the scripts of `local/` (written by the caller), fed by a real
/// collectd (memory plugin every second) that also logs the notifications medic hands it.
struct Setup {
    site: Site,
    collectd: Collectd,
    medic: Medic,
}

/// `grant`: whether the rule may send its notifications as lua-collectd-monitor's plugin.
fn start(
    rule_config: &str,
    grant: bool,
    broker: Option<&Mosquitto>,
    scripts: &[(&str, &str)],
) -> Setup {
    let site = Site::new();
    site.add_rule("lcm-lua", "lcm-lua");
    let local = site.path("local");
    std::fs::create_dir_all(&local).unwrap();
    for (name, text) in scripts {
        std::fs::write(local.join(name), text).unwrap();
    }
    let port = free_udp_port();
    let sock = site.path("collectd.sock");
    let mqtt = broker.map(|b| b.medic_section(&site));
    site.write_config(&format!(
        r#"
[ingest.network]
listen = ["127.0.0.1:{port}"]

[notify]
collectd_socket = "{sock}"

[rules.config.lcm-lua]
scripts = {{ files = "local/*.lua" }}
{rule_config}

[rules.grants.lcm-lua]
notify_as = {notify_as}

[services.hello.commands]
exec = {{ run = "echo Hello World!", cooldown = "1h" }}
edited = "echo edited"

{mqtt}
"#,
        sock = sock.display(),
        mqtt = mqtt.unwrap_or_default(),
        notify_as = if grant {
            r#"["lua-collectd-monitor-local"]"#
        } else {
            "[]"
        },
    ));
    let collectd = Collectd::start(
        site.dir.path(),
        &format!(
            "<LoadPlugin network>\n  FlushInterval 1\n</LoadPlugin>\n<Plugin network>\n  \
             <Server \"127.0.0.1\" \"{port}\">\n  </Server>\n</Plugin>\n\
             LoadPlugin unixsock\n<Plugin unixsock>\n  SocketFile \"{}\"\n  DeleteSocket true\n\
             </Plugin>\n",
            sock.display()
        ),
    );
    assert!(
        wait_until(WAIT, || sock.exists()),
        "collectd made no socket"
    );
    let medic = site.start();
    Setup {
        site,
        collectd,
        medic,
    }
}

fn memory_script() -> String {
    std::fs::read_to_string(workspace().join("rules-examples/lcm-lua/scripts/memory.lua")).unwrap()
}

/// History rows of `hello/<command>` runs lcm-lua asked for and medic ran (not refused),
/// the handler named as their reason.
fn asked(site: &Site, command: &str) -> Vec<serde_json::Value> {
    site.history()
        .into_iter()
        .filter(|r| r["origin"] == "lcm-lua" && r["command"] == command && r["state"] != "refused")
        .collect()
}

#[test]
fn local_scripts_act_on_a_real_collectds_values_and_report_as_lua_collectd_monitor() {
    let broker = Mosquitto::start(false);
    let notes = broker.watch("medic/test/notify", None);
    let memory = memory_script();
    let s = start("", true, Some(&broker), &[("memory.lua", &memory)]);
    assert!(
        wait_until(WAIT, || !asked(&s.site, "exec").is_empty()),
        "{}",
        s.medic.log()
    );
    let row = &asked(&s.site, "exec")[0];
    let reason = row["reason"].as_str().unwrap();
    // Free memory on this machine is under or over 10 GB: exactly one of the two fires.
    let handler = reason.strip_prefix("local/memory.lua::metric::").unwrap();
    assert!(
        handler == "memory_free_is_under_10GB" || handler == "memory_free_is_over_10GB",
        "{reason}"
    );
    let task_id = row["action_id"].as_u64().unwrap();

    // collectd's logfile plugin logs the notification lua-collectd-monitor would have sent.
    let expected = format!(
        "Notification: severity = OKAY, host = test, plugin = lua-collectd-monitor-local, \
         type = {reason}, message = {{\"message\":\"Hello World!\",\"task_id\":{task_id},\"code\":0}}"
    );
    assert!(
        wait_until(WAIT, || std::fs::read_to_string(&s.collectd.log)
            .unwrap_or_default()
            .contains(&expected)),
        "{expected}\n{}\n{}",
        std::fs::read_to_string(&s.collectd.log).unwrap_or_default(),
        s.medic.log()
    );
    s.medic.expect_log(
        &format!("Succeeded to run a recovery command of {reason}"),
        WAIT,
    );
    // The same notification on MQTT, with its source.
    assert!(
        wait_until(WAIT, || notes
            .json()
            .iter()
            .any(|n| n["plugin"] == "lua-collectd-monitor-local"
                && n["type"] == reason
                && n["severity"] == "okay")),
        "{:?}",
        notes.lines()
    );
    // The history keeps the notification with its source.
    let noted = format!(
        "okay from lua-collectd-monitor-local/{reason}: \
         {{\"message\":\"Hello World!\",\"task_id\":{task_id},\"code\":0}}"
    );
    assert!(
        wait_until(WAIT, || s.site.history().iter().any(|r| r["kind"]
            == "notification"
            && r["reason"] == noted.as_str())),
        "{noted}\n{:?}",
        s.site.history()
    );
    // The cooldown holds further runs back: refused, logged, never notified.
    s.medic.expect_log("hello/exec not run", WAIT);
    let notified = std::fs::read_to_string(&s.collectd.log)
        .unwrap()
        .matches("plugin = lua-collectd-monitor-local")
        .count();
    assert_eq!(notified, 1);
    s.medic.stop();
}

const FAILING: &str = "local handlers = {}\n\
    function handlers.broken(metric)\n\
    \x20 if metric.plugin == \"memory\" then\n\
    \x20   return metric.nothing.here\n\
    \x20 end\n\
    end\n\
    return handlers\n";

const LOOPING: &str = "return { spin = function(metric)\n\
    \x20 if metric.type_instance == \"free\" then while true do end end\n\
    end }\n";

const EDITED: &str = "return function(metric)\n\
    \x20 if metric.plugin == \"memory\" then return { service = \"hello\", command = \"edited\" } end\n\
    end\n";

#[test]
fn failing_looping_and_edited_scripts_while_collectd_keeps_sending() {
    let memory = memory_script();
    let s = start(
        "max_instructions = 100000",
        true,
        None,
        &[
            ("broken.lua", FAILING),
            ("loop.lua", LOOPING),
            ("memory.lua", &memory),
        ],
    );
    // The failing and the looping handler are named with script and line; the memory
    // handler still runs on the same values.
    s.medic.expect_log(
        "local/broken.lua::metric::broken failed: local/broken.lua:4: attempt to index",
        WAIT,
    );
    s.medic.expect_log(
        "local/loop.lua::metric::spin stopped after 100000 Lua instructions; event skipped",
        WAIT,
    );
    assert!(
        wait_until(WAIT, || !asked(&s.site, "exec").is_empty()),
        "{}",
        s.medic.log()
    );
    assert!(
        !s.medic.log().contains("faulted"),
        "no rule fault: {}",
        s.medic.log()
    );

    // A script edited while medic runs is a hot reload.
    let local = s.site.path("local");
    std::fs::write(local.join("memory.lua.new"), EDITED).unwrap();
    std::fs::rename(local.join("memory.lua.new"), local.join("memory.lua")).unwrap();
    s.medic
        .expect_log("rule re-initialised with its new files", WAIT);
    assert!(
        wait_until(WAIT, || !asked(&s.site, "edited").is_empty()),
        "{}",
        s.medic.log()
    );
    assert_eq!(
        asked(&s.site, "edited")[0]["reason"],
        "local/memory.lua::metric"
    );

    // A broken edit is refused: the scripts that work keep running.
    std::fs::write(
        local.join("memory.lua"),
        "return function(m)\n  x = = 1\nend\n",
    )
    .unwrap();
    s.medic.expect_log(
        "new files refused: init refused its config: local/memory.lua:2: unexpected symbol",
        WAIT,
    );
    let before = asked(&s.site, "edited").len();
    assert!(
        wait_until(WAIT, || asked(&s.site, "edited").len() > before + 1),
        "the old scripts keep serving: {}",
        s.medic.log()
    );
    // A new script dropped into the directory is loaded too, once the broken one is mended.
    std::fs::write(local.join("memory.lua"), EDITED).unwrap();
    std::fs::write(
        local.join("zz-more.lua"),
        "return nil, function(n) collectd.log_info('seen ' .. n.plugin) end\n",
    )
    .unwrap();
    s.medic.expect_log(
        "4 scripts loaded: 3 metric and 1 notification handlers",
        WAIT,
    );
    s.medic.stop();
}

/// With no instruction budget of its own, a looping handler is stopped by medic's call
/// deadline like any rule: the batch is lost, the rule restarts, and values after it are
/// handled again. Without `notify_as` granted, results come from plugin `medic`.
#[test]
fn without_a_budget_the_call_deadline_stops_a_looping_handler() {
    let memory = memory_script();
    let s = start(
        "max_instructions = 0",
        false,
        None,
        &[
            ("memory.lua", &memory),
            (
                "spin.lua",
                "return function(m) if m.plugin == 'spin' then while true do end end end\n",
            ),
        ],
    );
    assert!(
        wait_until(WAIT, || !asked(&s.site, "exec").is_empty()),
        "{}",
        s.medic.log()
    );
    s.medic.expect_log(
        "plugin `lua-collectd-monitor-local` is not granted to this rule as a notification \
         source (rules.grants.lcm-lua.notify_as): sent as plugin medic",
        WAIT,
    );
    assert!(
        wait_until(WAIT, || std::fs::read_to_string(&s.collectd.log)
            .unwrap_or_default()
            .contains(
                "plugin = medic, plugin_instance = lcm-lua, message = {\"message\":"
            )),
        "{}",
        std::fs::read_to_string(&s.collectd.log).unwrap_or_default()
    );
    s.medic.putval(&["PUTVAL h/spin/gauge N:1"]);
    s.medic.expect_log("ran past its 50ms deadline", WAIT);
    let faults = || {
        s.site
            .history()
            .into_iter()
            .filter(|r| r["kind"] == "fault" && r["origin"] == "lcm-lua")
            .count()
    };
    assert!(wait_until(WAIT, || faults() >= 1));
    // Still serving: the memory handler keeps asking (refused by the cooldown, and logged).
    let refusals = s.medic.log_lines_with("hello/exec not run").len();
    assert!(
        wait_until(WAIT, || s.medic.log_lines_with("hello/exec not run").len()
            > refusals + 2),
        "{}",
        s.medic.log()
    );
    s.medic.stop();
}
