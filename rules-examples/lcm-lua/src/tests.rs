use medic_rules::testing::Tester;
use medic_rules::{
    Action, Batch, CommandResult, Event, Identifier, LogLevel, Notification, Sample, Severity,
    Value,
};

use super::*;

const MEMORY: &str = include_str!("../scripts/memory.lua");

fn config(scripts: &[(&str, &str)], extra: &str) -> String {
    let list: Vec<Json> = scripts
        .iter()
        .map(|(file, text)| serde_json::json!({"file": file, "text": text}))
        .collect();
    let mut config = serde_json::json!({ "scripts": list });
    if !extra.is_empty() {
        let extra: Json = serde_json::from_str(extra).unwrap();
        config
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
    }
    config.to_string()
}

fn tester(scripts: &[(&str, &str)]) -> Tester<LcmLua> {
    Tester::new(&config(scripts, "")).unwrap()
}

fn runs(actions: &[Action]) -> Vec<(String, String, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Run(r) => Some((r.service.clone(), r.command.clone(), r.reason.clone())),
            _ => None,
        })
        .collect()
}

fn errors(t: &Tester<LcmLua>) -> Vec<String> {
    t.logs()
        .iter()
        .filter(|(l, _)| *l == LogLevel::Error)
        .map(|(_, m)| m.clone())
        .collect()
}

fn notification(plugin: &str, severity: Severity) -> Batch {
    Batch {
        events: vec![Event::Notification(Notification {
            severity,
            time: 1_700_000_000_500_000_000,
            message: "disk is gone".into(),
            identifier: Identifier {
                host: "web".into(),
                plugin: plugin.into(),
                plugin_instance: String::new(),
                type_: "disk".into(),
                type_instance: String::new(),
            },
        })],
        values: vec![],
    }
}

fn result(code: Option<i32>, output: &str, error: Option<&str>) -> Batch {
    Batch {
        events: vec![Event::CommandResult(CommandResult {
            action_id: 4711,
            service: "hello".into(),
            command: "exec".into(),
            code,
            signal: None,
            output: output.into(),
            error: error.map(Into::into),
            duration: 1_000_000,
        })],
        values: vec![],
    }
}

#[test]
fn the_memory_example_runs_its_command_from_the_handler_that_matches() {
    let mut t = tester(&[("/etc/lcm/memory.lua", MEMORY)]);
    assert_eq!(
        runs(&t.gauge("web/memory/memory-free", 5e9)),
        [(
            "hello".into(),
            "exec".into(),
            "/etc/lcm/memory.lua::metric::memory_free_is_under_10GB".into()
        )]
    );
    assert_eq!(
        runs(&t.gauge("web/memory/memory-free", 2e10))[0].2,
        "/etc/lcm/memory.lua::metric::memory_free_is_over_10GB"
    );
    assert!(t.gauge("web/memory/memory-used", 5e9).is_empty());
    let failure = t.feed(notification("disk", Severity::Failure));
    assert_eq!(
        runs(&failure)[0].2,
        "/etc/lcm/memory.lua::notification::failure"
    );
    assert!(
        t.logs()
            .iter()
            .any(|(_, m)| m.ends_with("::notification::failure: failure from disk: disk is gone")),
        "{:?}",
        t.logs()
    );
    assert!(t.feed(notification("disk", Severity::Okay)).is_empty());
    assert!(
        t.feed(notification(PLUGIN, Severity::Failure)).is_empty(),
        "its own notifications never reach handlers"
    );
}

#[test]
fn handlers_see_collectds_tables_field_for_field() {
    let script = r#"
        return function(m)
          assert(m.host == "web" and m.plugin == "interface" and m.plugin_instance == "eth0")
          assert(m.type == "if_octets" and m.type_instance == "")
          assert(m.dsnames[0] == "rx" and m.dsnames[1] == "tx" and m.dsnames[2] == nil)
          assert(m.dstypes[0] == "derive" and m.dstypes[1] == "counter")
          assert(math.type(m.values[1]) == "integer" and m.values[1] == -5)
          assert(m.values[2] == 12345678901)
          assert(m.interval == 10.0 and math.type(m.time) == "float")
          return { service = "ok", command = "yes" }
        end
    "#;
    let mut t = tester(&[("/s.lua", script)]);
    let actions = t.values(
        "web/interface-eth0/if_octets",
        &[
            (
                "rx",
                Value {
                    sample: Sample::Derive(-5),
                    rate: None,
                },
            ),
            (
                "tx",
                Value {
                    sample: Sample::Counter(12_345_678_901),
                    rate: None,
                },
            ),
        ],
    );
    assert_eq!(runs(&actions).len(), 1, "{:?}", t.logs());
}

#[test]
fn the_sandbox_offers_lua_but_not_the_machine() {
    let script = r#"
        return function(m)
          assert(io == nil and require == nil and load == nil and dofile == nil)
          assert(os.execute == nil and os.remove == nil and os.getenv == nil)
          assert(os.date("!%Y", 0) == "1970")
          assert(os.time() == CLOCK, os.time() .. " is not the rule's clock " .. CLOCK)
          assert(string.format("%.1f", 1.25) == "1.2" or string.format("%.1f", 1.25) == "1.3")
          assert(("memory-free"):match("^(%w+)%-") == "memory")
          assert(select(2, ("a,b,c"):gsub(",", ";")) == 2)
          table.sort({3, 1, 2})
          return { service = "ok", command = "yes" }
        end
    "#;
    let t = tester(&[("/s.lua", script)]);
    // os.time() is the rule's clock (the feed's in `medic replay`), not the machine's.
    let clock = t.now_ns() / 1_000_000_000;
    let script = script.replace("CLOCK", &clock.to_string());
    let mut t = tester(&[("/s.lua", &script)]);
    assert_eq!(runs(&t.gauge("a/b/c", 1.0)).len(), 1, "{:?}", t.logs());
}

#[test]
fn a_failing_handler_is_logged_with_its_line_and_the_others_run() {
    let failing = "local h = {}\nfunction h.broken(m)\n  return m.nothing.here\nend\nreturn h";
    let mut t = tester(&[("/a.lua", failing), ("/m.lua", MEMORY)]);
    let actions = t.gauge("web/memory/memory-free", 5e9);
    assert_eq!(runs(&actions).len(), 1, "the other script's handler ran");
    let errors = errors(&t);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("/a.lua::metric::broken failed: /a.lua:3: attempt to index"),
        "{}",
        errors[0]
    );
    assert!(errors[0].ends_with("event skipped"), "{}", errors[0]);
    // The same failure again within a minute is counted, not logged.
    t.gauge("web/memory/memory-free", 5e9);
    assert_eq!(super::tests::errors(&t).len(), 1);
    t.advance(Duration::from_secs(61));
    t.gauge("web/memory/memory-free", 5e9);
    let errors = super::tests::errors(&t);
    assert!(
        errors[1].contains("(1 more failures since the last report)"),
        "{errors:?}"
    );
}

#[test]
fn a_looping_handler_is_stopped_and_the_next_event_is_handled() {
    let looping =
        "return { spin = function(m) if m.values[1] > 100 then while true do end end end }";
    let mut t = Tester::<LcmLua>::new(&config(
        &[("/loop.lua", looping), ("/m.lua", MEMORY)],
        r#"{"max_instructions": 100000}"#,
    ))
    .unwrap();
    let actions = t.gauge("web/memory/memory-free", 5e9);
    assert_eq!(runs(&actions).len(), 1);
    assert!(
        errors(&t)[0].contains("/loop.lua::metric::spin stopped after 100000 Lua instructions"),
        "{:?}",
        errors(&t)
    );
    assert_eq!(runs(&t.gauge("web/memory/memory-free", 6e9)).len(), 1);
}

#[test]
fn bad_returns_and_bad_scripts_are_named() {
    let mut t = tester(&[("/r.lua", "return function(m) return { service = 1 } end")]);
    assert!(t.gauge("a/b/c", 1.0).is_empty());
    assert!(errors(&t)[0].contains("returned a table without string `service` and `command`"));

    let syntax = Tester::<LcmLua>::new(&config(
        &[("/bad.lua", "return function(m)\n  x = = 1\nend")],
        "",
    ));
    let err = syntax.err().unwrap();
    assert!(err.starts_with("/bad.lua:2:"), "{err}");
    let not_handlers = Tester::<LcmLua>::new(&config(&[("/n.lua", "return 42")], ""));
    assert!(
        not_handlers
            .err()
            .unwrap()
            .contains("/n.lua: returns a number as its metric handlers")
    );
    let raising = Tester::<LcmLua>::new(&config(&[("/e.lua", "error('no config here')")], ""));
    assert!(raising.err().unwrap().contains("/e.lua:1: no config here"));
    let plain = Tester::<LcmLua>::new(r#"{"scripts": "/etc/lcm/*.lua"}"#);
    assert!(plain.err().unwrap().contains("does not name files"));
}

#[test]
fn results_are_notified_as_lua_collectd_monitor_did() {
    let mut t = tester(&[("/m.lua", MEMORY)]);
    t.gauge("web/memory/memory-free", 5e9);
    let actions = t.feed(result(Some(0), "Hello World!\n", None));
    let [Action::Notify(n)] = &actions[..] else {
        panic!("{actions:?}")
    };
    assert_eq!(n.severity, Severity::Okay);
    assert_eq!(
        n.message,
        r#"{"message":"Hello World!","task_id":4711,"code":0}"#
    );
    let source = n.source.as_ref().unwrap();
    assert_eq!(source.plugin, "lua-collectd-monitor-local");
    assert_eq!(source.type_, "/m.lua::metric::memory_free_is_under_10GB");
    assert_eq!(source.plugin_instance, "");
    assert!(t.logs().iter().any(|(_, m)| m
        == "Succeeded to run a recovery command of /m.lua::metric::memory_free_is_under_10GB"));

    t.gauge("web/memory/memory-free", 2e10);
    let actions = t.feed(result(Some(3), &"x".repeat(200), None));
    let [Action::Notify(n)] = &actions[..] else {
        panic!("{actions:?}")
    };
    assert_eq!(n.severity, Severity::Failure);
    assert_eq!(
        n.message,
        r#"{"message":"Omitted due to exceeding max message length!","task_id":4711,"code":3}"#
    );
    assert_eq!(
        n.source.as_ref().unwrap().type_,
        "/m.lua::metric::memory_free_is_over_10GB"
    );

    t.gauge("web/memory/memory-free", 5e9);
    let refused = t.feed(result(
        None,
        "",
        Some("refused: hello/exec is cooling down"),
    ));
    assert!(refused.is_empty(), "nothing ran, nothing to notify");
    assert!(t.logs().iter().any(|(l, m)| *l == LogLevel::Warn
        && m.ends_with("hello/exec not run: refused: hello/exec is cooling down")));
}

#[test]
fn who_asked_survives_a_reload() {
    let mut t = tester(&[("/m.lua", MEMORY)]);
    t.gauge("web/memory/memory-free", 5e9);
    let mut t = t.reload().unwrap();
    let actions = t.feed(result(Some(0), "ok\n", None));
    let [Action::Notify(n)] = &actions[..] else {
        panic!("{actions:?}")
    };
    assert_eq!(
        n.source.as_ref().unwrap().type_,
        "/m.lua::metric::memory_free_is_under_10GB"
    );
}

#[test]
fn subscriptions_follow_the_handlers() {
    let t = tester(&[("/m.lua", "return function(m) end")]);
    let s = t.describe();
    assert_eq!(s.values, ["**"]);
    assert!(s.notifications.is_empty());
}

#[test]
fn results_that_never_come_do_not_grow_the_waiting_list() {
    let mut t = tester(&[("/m.lua", MEMORY)]);
    for _ in 0..100 {
        t.gauge("web/memory/memory-free", 5e9);
    }
    let t = t.reload().unwrap();
    let pending: BTreeMap<String, VecDeque<String>> = t.state(PENDING).unwrap();
    assert_eq!(pending["hello/exec"].len(), MAX_PENDING);
}
