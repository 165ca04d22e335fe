//! SIGHUP: read the config file again. A broken one is refused with its `file:line:col` and
//! the config in effect keeps serving. A good one takes effect at once where that is safe
//! without a restart — the allow-list and per-command policy, the MQTT publish grants, and each
//! rule's `[rules.config.NAME]` (that rule is re-initialised with its state kept); the policy
//! gate's counters (cooldowns, running commands) carry over. Any other section that changed is
//! named in a warning: it takes effect at the next start. File sinks reopen their files
//! (logrotate's SIGHUP), whether the config could be read or not.

use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::effects::executor::ExecutorHandle;
use crate::effects::mqtt::Outbound;

/// Where the live parts of a reloaded config go.
pub(super) struct Targets {
    pub executor: ExecutorHandle,
    pub mqtt: Option<Outbound>,
    pub rules: crossbeam_channel::Sender<crate::config::Rules>,
    pub sinks: crate::effects::sinks::Sinks,
}

/// Reload `path` over `current` (what is in effect); returns what is in effect afterwards.
pub(super) fn apply(path: &Path, current: Config, to: &Targets) -> Config {
    to.sinks.reopen();
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("config not reloaded: {e}; the running config stays in effect");
            return current;
        }
    };
    let (effective, later) = merge(current, &new);
    if !later.is_empty() {
        tracing::warn!(
            sections = ?later,
            "config reloaded; these changes take effect at the next start"
        );
    }
    to.executor.reconfigure(Arc::new(effective.clone()));
    if let (Some(mqtt), Some(m)) = (&to.mqtt, &effective.mqtt) {
        mqtt.set_grants(m.grants.clone());
    }
    let _ = to.rules.send(effective.rules.clone());
    tracing::info!(file = %path.display(), "config reloaded");
    effective
}

/// What is in effect after reloading `new` over `current`, and the changed sections that
/// cannot change live.
fn merge(current: Config, new: &Config) -> (Config, Vec<&'static str>) {
    let mut effective = current;
    let mut later = Vec::new();
    effective.services = new.services.clone();
    // Probes keep the schedule they started with, and so their commands, until a restart.
    for name in new.probes.keys() {
        effective
            .services
            .remove(&crate::config::Probe::service(name));
    }
    effective.enlist_probes();
    if effective.probes != new.probes {
        later.push("probes");
    }
    effective.policy = new.policy.clone();
    effective.rules.config = new.rules.config.clone();
    let mut rules_rest = new.rules.clone();
    rules_rest.config = effective.rules.config.clone();
    if rules_rest != effective.rules {
        later.push("rules (other than rules.config)");
    }
    match (&mut effective.mqtt, &new.mqtt) {
        (Some(live), Some(m)) => {
            live.grants = m.grants.clone();
            if live != m {
                later.push("mqtt (other than mqtt.grants)");
            }
        }
        (None, None) => {}
        _ => later.push("mqtt"),
    }
    if effective.daemon != new.daemon {
        later.push("daemon");
    }
    if effective.ingest != new.ingest {
        later.push("ingest");
    }
    if effective.history != new.history {
        later.push("history");
    }
    if effective.notify != new.notify {
        later.push("notify");
    }
    if effective.http != new.http {
        later.push("http");
    }
    if effective.collectd != new.collectd {
        later.push("collectd");
    }
    if effective.sinks != new.sinks {
        later.push("sinks");
    }
    (effective, later)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("m.toml"), Path::new("/etc/medic")).unwrap()
    }

    #[test]
    fn live_parts_change_the_rest_waits_for_a_restart() {
        let old = parse(
            "[daemon]\nnode = \"a\"\n[rules.config.r]\nx = 1\n[services.s.commands]\nc = \"true\"\n\
             [mqtt]\nbroker = \"mqtt://h\"\n[mqtt.grants]\nr = [\"a/#\"]\n",
        );
        let new = parse(
            "[daemon]\nnode = \"b\"\n[rules.config.r]\nx = 2\n[services.t.commands]\nc = \"true\"\n\
             [mqtt]\nbroker = \"mqtt://h\"\n[mqtt.grants]\nr = [\"b/#\"]\n",
        );
        let (effective, later) = merge(old, &new);
        assert_eq!(later, vec!["daemon"]);
        assert_eq!(
            effective.daemon.node, "a",
            "the node name waits for a restart"
        );
        assert!(effective.services.contains_key("t") && !effective.services.contains_key("s"));
        assert_eq!(effective.rules.config["r"]["x"].as_integer(), Some(2));
        assert_eq!(effective.mqtt.unwrap().grants["r"], vec!["b/#".to_string()]);
        let (_, later) = merge(
            parse("[mqtt]\nbroker = \"mqtt://h\"\n"),
            &parse("[mqtt]\nbroker = \"mqtt://k\"\n"),
        );
        assert_eq!(later, vec!["mqtt (other than mqtt.grants)"]);
        let (_, later) = merge(parse(""), &parse("[http]\nlisten = \"127.0.0.1:1\"\n"));
        assert_eq!(later, vec!["http"]);
    }

    #[test]
    fn probes_keep_their_schedule_and_command_until_a_restart() {
        let old = parse("[probes.a]\nrun = \"true\"\nevery = \"5s\"\n");
        let new = parse(
            "[probes.b]\nrun = \"false\"\nevery = \"5s\"\n[services.s.commands]\nc = \"true\"\n",
        );
        let (effective, later) = merge(old, &new);
        assert_eq!(later, vec!["probes"]);
        // The running probe `a` keeps its command; `b` has no scheduler yet, so no command.
        assert!(effective.services.contains_key("probe-a"));
        assert!(!effective.services.contains_key("probe-b"));
        assert!(effective.services.contains_key("s"));
    }
}
