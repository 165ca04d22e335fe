//! collectd's notifications as JSON objects for a webhook (an `http` sink with
//! `format = "json"`: each batch is a JSON array of them) — Centreon's webhook connector.
//!
//! ```toml
//! [rules.config.notify-webhook]
//! patterns = ["**"]            # which notifications (globs over their identifier)
//! severities = ["failure"]     # the default: failures and warnings
//! sink = "webhook"
//!
//! [rules.grants.notify-webhook]
//! sinks = ["webhook"]
//! ```

use medic_rules::{Config, Ctx, Notification, Rule, Severity, Subscriptions, export_rule};
use serde::Deserialize;

fn default_severities() -> Vec<String> {
    vec!["failure".into(), "warning".into()]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    patterns: Vec<String>,
    #[serde(default = "default_severities")]
    severities: Vec<String>,
    sink: String,
}

pub struct NotifyWebhook {
    settings: Settings,
}

fn name(s: Severity) -> &'static str {
    match s {
        Severity::Failure => "failure",
        Severity::Warning => "warning",
        Severity::Okay => "okay",
    }
}

impl Rule for NotifyWebhook {
    fn init(config: Config, _ctx: &mut Ctx) -> Result<Self, String> {
        let settings: Settings = config.parse()?;
        if let Some(bad) = (settings.severities.iter())
            .find(|s| !["failure", "warning", "okay"].contains(&s.as_str()))
        {
            return Err(format!("unknown severity `{bad}` (failure, warning, okay)"));
        }
        Ok(Self { settings })
    }

    fn subscriptions(&self) -> Subscriptions {
        (self.settings.patterns.iter())
            .fold(Subscriptions::new(), |s, p| s.notifications(p.clone()))
    }

    fn on_notification(&mut self, n: &Notification, ctx: &mut Ctx) {
        let severity = name(n.severity);
        if !self.settings.severities.iter().any(|s| s == severity) {
            return;
        }
        let id = &n.identifier;
        let record = serde_json::json!({
            "severity": severity,
            "message": n.message,
            "time": n.time as f64 / 1e9,
            "host": id.host,
            "plugin": id.plugin,
            "plugin_instance": id.plugin_instance,
            "type": id.type_,
            "type_instance": id.type_instance,
        });
        ctx.emit(&self.settings.sink, record.to_string());
    }
}

export_rule!(NotifyWebhook);

#[cfg(test)]
mod tests {
    use super::*;
    use medic_rules::testing::Tester;
    use medic_rules::{Action, Batch, Event, Identifier};

    fn notification(severity: Severity, message: &str) -> Batch {
        Batch {
            events: vec![Event::Notification(Notification {
                severity,
                time: 1_764_500_000_000_000_000,
                message: message.into(),
                identifier: Identifier {
                    host: "web".into(),
                    plugin: "ping".into(),
                    plugin_instance: String::new(),
                    type_: "ping".into(),
                    type_instance: "gw".into(),
                },
            })],
            values: vec![],
        }
    }

    #[test]
    fn failures_and_warnings_become_json_records() {
        let mut t =
            Tester::<NotifyWebhook>::new(r#"{"patterns": ["**"], "sink": "webhook"}"#).unwrap();
        let a = t.feed(notification(Severity::Failure, "gateway down"));
        let [Action::Emit(e)] = &a[..] else {
            panic!("{a:?}")
        };
        assert_eq!(e.sink, "webhook");
        let json: serde_json::Value = serde_json::from_slice(&e.record).unwrap();
        assert_eq!(json["severity"], "failure");
        assert_eq!(json["message"], "gateway down");
        assert_eq!(json["host"], "web");
        assert_eq!(json["type_instance"], "gw");
        assert_eq!(json["time"], 1_764_500_000.0);
        assert!(t.feed(notification(Severity::Okay, "back")).is_empty());
        assert!(
            Tester::<NotifyWebhook>::new(r#"{"patterns": [], "sink": "w", "severities": ["bad"]}"#)
                .is_err()
        );
    }
}
