//! Centreon's "forward to InfluxDB" stream connector as a medic rule: the values of the series
//! matching `patterns` become lines of Influx line protocol (measurement = plugin; tags host,
//! plugin_instance, type, type_instance; a field per data source — a gauge's value, or the rate
//! medic computed for a counter; the value list's own time, in ns) for a sink of medic's.
//!
//! ```toml
//! [rules.config.influx-forward]
//! patterns = ["*/load/load", "*/memory/*"]
//! sink = "vm"
//!
//! [rules.grants.influx-forward]
//! sinks = ["vm"]
//! ```

use std::fmt::Write as _;

use medic_rules::{Config, Ctx, Rule, Subscriptions, Values, export_rule};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    patterns: Vec<String>,
    sink: String,
}

pub struct InfluxForward {
    settings: Settings,
    line: String,
}

impl Rule for InfluxForward {
    fn init(config: Config, _ctx: &mut Ctx) -> Result<Self, String> {
        let settings: Settings = config.parse()?;
        if settings.patterns.is_empty() {
            return Err("`patterns` needs at least one glob".into());
        }
        Ok(Self {
            settings,
            line: String::new(),
        })
    }

    fn subscriptions(&self) -> Subscriptions {
        (self.settings.patterns.iter()).fold(Subscriptions::new(), |s, p| s.values(p.clone()))
    }

    fn on_values(&mut self, values: Values<'_>, ctx: &mut Ctx) {
        if line_protocol(&values, &mut self.line) {
            ctx.emit(&self.settings.sink, self.line.as_bytes());
        }
    }
}

/// The value list as one line into `out`; false when it has no finite value to send.
fn line_protocol(values: &Values<'_>, out: &mut String) -> bool {
    let id = values.identifier();
    out.clear();
    escape(out, &id.plugin, ", ");
    for (key, tag) in [
        ("host", &id.host),
        ("plugin_instance", &id.plugin_instance),
        ("type", &id.type_),
        ("type_instance", &id.type_instance),
    ] {
        if !tag.is_empty() {
            let _ = write!(out, ",{key}=");
            escape(out, tag, ",= ");
        }
    }
    let mut separator = ' ';
    for (name, value) in values.iter() {
        let Some(v) = value.current().filter(|v| v.is_finite()) else {
            continue;
        };
        out.push(separator);
        separator = ',';
        escape(out, name, ",= ");
        let _ = write!(out, "={v:?}");
    }
    let _ = write!(out, " {}", values.list.time);
    separator == ','
}

/// Line protocol's escaping: a backslash before each of `special`. Control characters are
/// dropped: line protocol has no escape for a newline, which would start a line of the
/// sender's choosing.
fn escape(out: &mut String, text: &str, special: &str) {
    for c in text.chars() {
        if c.is_control() {
            continue;
        }
        if special.contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
}

export_rule!(InfluxForward);

#[cfg(test)]
mod tests {
    use super::*;
    use medic_rules::testing::Tester;
    use medic_rules::{Action, Sample, Value};

    fn gauge(v: f64) -> Value {
        Value {
            sample: Sample::Gauge(v),
            rate: None,
        }
    }

    fn emitted(actions: &[Action]) -> Vec<(String, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Emit(e) => {
                    Some((e.sink.clone(), String::from_utf8_lossy(&e.record).into()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn values_become_line_protocol_with_their_own_time() {
        let mut t = Tester::<InfluxForward>::new(
            r#"{"patterns": ["*/load/load", "*/cpu-*/*"], "sink": "vm"}"#,
        )
        .unwrap();
        let now = t.now_ns();
        let a = t.values(
            "web 1/load/load",
            &[
                ("shortterm", gauge(0.5)),
                ("midterm", gauge(1.0)),
                ("longterm", gauge(f64::NAN)),
            ],
        );
        assert_eq!(
            emitted(&a),
            [(
                "vm".to_string(),
                format!("load,host=web\\ 1,type=load shortterm=0.5,midterm=1.0 {now}")
            )]
        );
        let a = t.values(
            "db/cpu-0/percent-idle",
            &[(
                "value",
                Value {
                    sample: Sample::Derive(7),
                    rate: Some(2.5),
                },
            )],
        );
        assert_eq!(
            emitted(&a)[0].1,
            format!(
                "cpu,host=db,plugin_instance=0,type=percent,type_instance=idle value=2.5 {now}"
            )
        );
        // A newline in an identifier (PUTVAL's quoted form allows one) cannot start a line of
        // its own.
        let a = t.values("web\nevil x=1/load/load", &[("shortterm", gauge(0.5))]);
        let record = &emitted(&a)[0].1;
        assert!(!record.contains('\n'), "{record}");
        assert!(
            record.starts_with("load,host=webevil\\ x\\=1,type=load "),
            "{record}"
        );
        // Nothing finite (a counter's first value has no rate yet): nothing sent.
        let a = t.values(
            "db/cpu-1/percent-idle",
            &[(
                "value",
                Value {
                    sample: Sample::Derive(7),
                    rate: None,
                },
            )],
        );
        assert!(emitted(&a).is_empty());
    }
}
