//! iotmonitor's watchdog as a medic rule: devices and agents are watched by the MQTT topics
//! they publish on, each with its own timeout. A device silent for longer gets
//! `<expire_topic>/<device>` published (payload: when it was last seen, Unix seconds), its
//! restart command run, and a warning; when it speaks again, the state it last published on
//! its `state` topics is published back (retained), so a restarted device gets its state.
//!
//! ```toml
//! [rules.config.mqtt-watchdog]
//! expire_topic = "home/monitoring/expire"   # the default
//!
//! [rules.config.mqtt-watchdog.devices.boiler]
//! watch = ["home/boiler/#"]        # any message here means alive
//! timeout = "90s"
//! state = ["home/boiler/set/#"]    # saved, and re-published when it returns
//! service = "boiler-agent"         # optional: run on silence
//! command = "restart"
//!
//! [mqtt.grants]
//! mqtt-watchdog = ["home/monitoring/expire/#", "home/boiler/set/#"]
//!
//! [rules.grants.mqtt-watchdog]
//! subscribe = ["home/boiler/#"]    # what it may read: every `watch` and `state` filter
//! ```
//! The rule must be granted the expire topics and the state topics it re-publishes, and the
//! topics it reads.
//! Every device is watched from medic's start (one never heard of is reported `never` after its
//! timeout); what was last seen and saved survives reloads and restarts, and a device's
//! deadline still counts from its last message across them.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use medic_rules::topic_matches;
use medic_rules::{Config, Ctx, MqttMessage, Rule, Severity, Subscriptions, export_rule};
use serde::{Deserialize, Serialize};

fn default_expire_topic() -> String {
    "home/monitoring/expire".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_expire_topic")]
    expire_topic: String,
    devices: BTreeMap<String, DeviceSettings>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceSettings {
    watch: Vec<String>,
    #[serde(with = "medic_rules::duration")]
    timeout: Duration,
    #[serde(default)]
    state: Vec<String>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    command: Option<String>,
}

/// What is remembered of a device across reloads and restarts.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
struct Seen {
    /// Nanoseconds since the Unix epoch.
    last_seen: Option<u64>,
    expired: bool,
    /// Last payload per state topic.
    saved: BTreeMap<String, Vec<u8>>,
}

pub struct Watchdog {
    settings: Settings,
    seen: BTreeMap<String, Seen>,
}

const STATE: &str = "devices";

impl Rule for Watchdog {
    fn init(config: Config, ctx: &mut Ctx) -> Result<Self, String> {
        let settings: Settings = config.parse()?;
        for (name, d) in &settings.devices {
            if d.watch.is_empty() {
                return Err(format!("devices.{name}: `watch` needs at least one topic"));
            }
            if d.timeout.is_zero() {
                return Err(format!("devices.{name}: `timeout` must be above zero"));
            }
            if d.service.is_some() != d.command.is_some() {
                return Err(format!(
                    "devices.{name}: set both `service` and `command`, or neither"
                ));
            }
            if name.contains(['/', '+', '#']) {
                return Err(format!(
                    "devices.{name}: a device name cannot contain / + #"
                ));
            }
        }
        let mut seen: BTreeMap<String, Seen> = ctx.state(STATE).unwrap_or_default();
        seen.retain(|name, _| settings.devices.contains_key(name));
        let now = now_ns(ctx);
        for (name, d) in &settings.devices {
            let s = seen.entry(name.clone()).or_default();
            if s.expired {
                continue; // Waiting for it to come back.
            }
            let silent = s.last_seen.map_or(0, |t| now.saturating_sub(t));
            ctx.set_timer(name, d.timeout.saturating_sub(Duration::from_nanos(silent)));
        }
        Ok(Self { settings, seen })
    }

    fn subscriptions(&self) -> Subscriptions {
        let mut subs = Subscriptions::new();
        for d in self.settings.devices.values() {
            for filter in d.watch.iter().chain(&d.state) {
                subs = subs.topics(filter.clone());
            }
        }
        subs
    }

    fn on_mqtt(&mut self, message: &MqttMessage, ctx: &mut Ctx) {
        let now = now_ns(ctx);
        for (name, d) in &self.settings.devices {
            let seen = self.seen.entry(name.clone()).or_default();
            if d.state.iter().any(|f| topic_matches(f, &message.topic)) {
                seen.saved
                    .insert(message.topic.clone(), message.payload.clone());
            }
            if !d.watch.iter().any(|f| topic_matches(f, &message.topic)) {
                continue;
            }
            if seen.expired {
                seen.expired = false;
                let silent = seen.last_seen.map_or(0, |t| now.saturating_sub(t)) / 1_000_000_000;
                ctx.notify(
                    Severity::Okay,
                    format!("{name} is back after {silent} s of silence"),
                );
                for (topic, payload) in &seen.saved {
                    ctx.publish(topic, payload.clone(), true);
                }
            }
            seen.last_seen = Some(now);
            ctx.set_timer(name, d.timeout);
        }
    }

    fn on_timer(&mut self, name: &str, ctx: &mut Ctx) {
        let (Some(d), Some(seen)) = (self.settings.devices.get(name), self.seen.get_mut(name))
        else {
            return;
        };
        if seen.expired {
            return;
        }
        seen.expired = true;
        let last = seen
            .last_seen
            .map_or_else(|| "never".to_string(), |t| (t / 1_000_000_000).to_string());
        let topic = format!("{}/{name}", self.settings.expire_topic);
        ctx.publish(&topic, last, false);
        let reason = format!(
            "{name}: nothing on {} for {:?}",
            d.watch.join(", "),
            d.timeout
        );
        ctx.notify(Severity::Warning, reason.clone());
        if let (Some(service), Some(command)) = (&d.service, &d.command) {
            ctx.run(service, command, reason);
        }
    }

    fn suspend(&mut self, ctx: &mut Ctx) {
        ctx.set_state(STATE, &self.seen);
    }
}

fn now_ns(ctx: &mut Ctx) -> u64 {
    ctx.now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

export_rule!(Watchdog);

#[cfg(test)]
mod tests {
    use super::*;
    use medic_rules::Action;
    use medic_rules::testing::Tester;

    const CONFIG: &str = r#"{
        "devices": {
            "boiler": {
                "watch": ["home/boiler/#"],
                "timeout": "90s",
                "state": ["home/boiler/set/#"],
                "service": "boiler-agent",
                "command": "restart"
            }
        }
    }"#;

    fn published(actions: &[Action]) -> Vec<(String, String, bool)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Publish(p) => Some((
                    p.topic.clone(),
                    String::from_utf8_lossy(&p.payload).into_owned(),
                    p.retain,
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn silence_expires_restarts_and_the_return_restores_state() {
        let mut t = Tester::<Watchdog>::new(CONFIG).unwrap();
        t.mqtt("home/boiler/set/temperature", b"21");
        let seen_at = t.now_ns() / 1_000_000_000;
        assert!(t.advance(Duration::from_secs(89)).is_empty());
        let a = t.advance(Duration::from_secs(2));
        assert_eq!(
            published(&a),
            vec![(
                "home/monitoring/expire/boiler".into(),
                seen_at.to_string(),
                false
            )]
        );
        assert!(a.iter().any(
            |a| matches!(a, Action::Run(r) if r.service == "boiler-agent" && r.command == "restart")
        ));
        // Once per silence.
        assert!(t.advance(Duration::from_secs(600)).is_empty());
        let back = t.mqtt("home/boiler/status", b"online");
        assert_eq!(
            published(&back),
            vec![("home/boiler/set/temperature".into(), "21".into(), true)]
        );
        assert!(
            back.iter()
                .any(|a| matches!(a, Action::Notify(n) if n.severity == Severity::Okay))
        );
    }

    #[test]
    fn messages_keep_a_device_alive() {
        let mut t = Tester::<Watchdog>::new(CONFIG).unwrap();
        for _ in 0..10 {
            t.mqtt("home/boiler/status", b"online");
            assert!(t.advance(Duration::from_secs(60)).is_empty());
        }
    }

    #[test]
    fn what_was_seen_survives_a_reload() {
        let mut t = Tester::<Watchdog>::new(CONFIG).unwrap();
        t.mqtt("home/boiler/set/mode", b"eco");
        t.advance(Duration::from_secs(91));
        let mut t = t.reload().unwrap();
        let back = t.mqtt("home/boiler/status", b"online");
        assert_eq!(
            published(&back),
            vec![("home/boiler/set/mode".into(), "eco".into(), true)]
        );
    }

    #[test]
    fn a_device_never_heard_of_is_reported_after_its_timeout() {
        let mut t = Tester::<Watchdog>::new(CONFIG).unwrap();
        assert!(t.advance(Duration::from_secs(89)).is_empty());
        let a = t.advance(Duration::from_secs(2));
        assert_eq!(
            published(&a),
            vec![(
                "home/monitoring/expire/boiler".into(),
                "never".into(),
                false
            )]
        );
    }

    #[test]
    fn the_deadline_counts_from_the_last_message_across_a_reload() {
        let mut t = Tester::<Watchdog>::new(CONFIG).unwrap();
        t.mqtt("home/boiler/status", b"online");
        t.advance(Duration::from_secs(60));
        let mut t = t.reload().unwrap();
        // 60 s were already silent: 30 more, not 90.
        assert!(t.advance(Duration::from_secs(29)).is_empty());
        assert_eq!(published(&t.advance(Duration::from_secs(2))).len(), 1);
    }

    #[test]
    fn bad_configs_are_refused_with_the_device_named() {
        for (config, why) in [
            (
                r#"{"devices": {"a": {"watch": [], "timeout": "1s"}}}"#,
                "devices.a: `watch`",
            ),
            (
                r#"{"devices": {"a": {"watch": ["x"], "timeout": "0s"}}}"#,
                "above zero",
            ),
            (
                r#"{"devices": {"a": {"watch": ["x"], "timeout": "1s", "service": "s"}}}"#,
                "both `service` and `command`",
            ),
            (
                r#"{"devices": {"a/b": {"watch": ["x"], "timeout": "1s"}}}"#,
                "cannot contain",
            ),
        ] {
            let err = Tester::<Watchdog>::new(config).err().unwrap();
            assert!(err.contains(why), "{config}: {err}");
        }
    }
}
