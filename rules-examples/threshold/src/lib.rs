//! Run a recovery command when a series crosses a level and stays there.
//!
//! ```toml
//! [rules.config.threshold]
//! pattern = "*/memory/memory-free"   # glob over host/plugin[-inst]/type[-inst]
//! data_source = "value"              # optional; default: the first one
//! below = 1e9                        # or `above = ...`
//! for = "30s"                        # how long it must stay crossed (default 0)
//! clear = 1.2e9                      # hysteresis: back to normal only past this level
//! service = "hello"
//! command = "exec"
//! ```
//! Counter, derive and absolute series are compared by their per-second rate.

use std::time::Duration;

use medic_rules::detect::{Change, Crossing, Direction, Level, Persist};
use medic_rules::{Config, Ctx, Rule, Severity, Subscriptions, Values, export_rule};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub pattern: String,
    #[serde(default)]
    pub data_source: Option<String>,
    #[serde(default)]
    pub above: Option<f64>,
    #[serde(default)]
    pub below: Option<f64>,
    #[serde(default, rename = "for", with = "medic_rules::duration::option")]
    pub for_: Option<Duration>,
    #[serde(default)]
    pub clear: Option<f64>,
    pub service: String,
    pub command: String,
}

pub struct Threshold {
    settings: Settings,
    level: Level,
}

/// Where the open episodes wait across a reload or restart.
const EPISODES: &str = "episodes";

impl Rule for Threshold {
    fn init(config: Config, _ctx: &mut Ctx) -> Result<Self, String> {
        let settings: Settings = config.parse()?;
        let (direction, level) = match (settings.above, settings.below) {
            (Some(a), None) => (Direction::Above, a),
            (None, Some(b)) => (Direction::Below, b),
            _ => return Err("set exactly one of `above` and `below`".into()),
        };
        let hold = settings.for_.unwrap_or_default();
        let level = Level::new(Crossing::new(direction, level, settings.clear, hold)?);
        Ok(Self { settings, level })
    }

    fn subscriptions(&self) -> Subscriptions {
        Subscriptions::new().values(&self.settings.pattern)
    }

    fn on_values(&mut self, values: Values<'_>, ctx: &mut Ctx) {
        let value = match &self.settings.data_source {
            Some(ds) => values.get(ds),
            None => values.values.first(),
        };
        let Some(v) = value.and_then(|v| v.current()) else {
            return;
        };
        let c = self.level.crossing;
        match self.level.observe(&values, v) {
            Some(Change::Fired) => {
                let op = if c.direction == Direction::Above {
                    ">"
                } else {
                    "<"
                };
                let reason = format!(
                    "{} = {v} {op} {} for {:?}",
                    values.identifier(),
                    c.level,
                    c.hold
                );
                ctx.run(&self.settings.service, &self.settings.command, reason);
            }
            Some(Change::Recovered) => {
                ctx.notify(
                    Severity::Okay,
                    format!("{} recovered: {v}", values.identifier()),
                );
            }
            None => {}
        }
    }

    fn persisted(&mut self) -> Vec<(&'static str, &mut dyn Persist)> {
        vec![(EPISODES, &mut self.level)]
    }
}

export_rule!(Threshold);

#[cfg(test)]
mod tests {
    use super::*;
    use medic_rules::testing::Tester;
    use medic_rules::{Action, Run};
    use std::time::Duration;

    const CFG: &str = r#"{"pattern": "*/memory/memory-free", "below": 100, "clear": 150,
        "for": "20s", "service": "hello", "command": "exec"}"#;

    fn runs(actions: &[Action]) -> Vec<&Run> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Run(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn fires_once_after_the_hold_and_rearms_past_clear() {
        let mut t = Tester::<Threshold>::new(CFG).unwrap();
        assert_eq!(
            t.describe().values,
            vec!["*/memory/memory-free".to_string()]
        );
        let id = "h/memory/memory-free";
        assert!(t.gauge(id, 50.0).is_empty(), "crossed but not held yet");
        t.advance(Duration::from_secs(10));
        assert!(t.gauge(id, 40.0).is_empty());
        t.advance(Duration::from_secs(10));
        let a = t.gauge(id, 40.0);
        let r = runs(&a);
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].service.as_str(), r[0].command.as_str()),
            ("hello", "exec")
        );
        assert!(
            r[0].reason.contains("h/memory/memory-free = 40 < 100"),
            "{}",
            r[0].reason
        );
        t.advance(Duration::from_secs(10));
        assert!(t.gauge(id, 30.0).is_empty(), "fires once per episode");
        assert!(t.gauge(id, 120.0).is_empty(), "inside the hysteresis band");
        let a = t.gauge(id, 160.0);
        assert!(matches!(&a[..], [Action::Notify(n)] if n.severity == Severity::Okay));
        t.gauge(id, 10.0);
        t.advance(Duration::from_secs(25));
        assert_eq!(
            runs(&t.gauge(id, 10.0)).len(),
            1,
            "a new episode fires again"
        );
    }

    /// A hot reload (or the swap to a build's optimized compile) does not reopen an episode:
    /// the new instance knows the series has fired and does not fire again.
    #[test]
    fn an_open_episode_survives_a_reload() {
        let mut t = Tester::<Threshold>::new(CFG).unwrap();
        let id = "h/memory/memory-free";
        t.gauge(id, 50.0);
        t.advance(Duration::from_secs(20));
        assert_eq!(runs(&t.gauge(id, 40.0)).len(), 1);
        let mut t = t.reload().unwrap();
        t.advance(Duration::from_secs(30));
        assert!(t.gauge(id, 40.0).is_empty(), "fired before the reload");
        let a = t.gauge(id, 160.0);
        assert!(matches!(&a[..], [Action::Notify(n)] if n.severity == Severity::Okay));
    }

    #[test]
    fn series_are_independent_and_unknown_values_ignored() {
        let cfg = r#"{"pattern": "*/load/load", "data_source": "midterm", "above": 2,
            "service": "s", "command": "c"}"#;
        let mut t = Tester::<Threshold>::new(cfg).unwrap();
        let g = |v: f64| medic_rules::Value {
            sample: medic_rules::Sample::Gauge(v),
            rate: None,
        };
        let mut batch = medic_rules::Batch::default();
        t.push_values(
            &mut batch,
            "a/load/load",
            &[("shortterm", g(9.0)), ("midterm", g(1.0))],
        );
        t.push_values(
            &mut batch,
            "b/load/load",
            &[("shortterm", g(0.0)), ("midterm", g(3.0))],
        );
        let nan = g(f64::NAN);
        t.push_values(
            &mut batch,
            "c/load/load",
            &[("shortterm", g(0.0)), ("midterm", nan)],
        );
        let actions = t.feed(batch);
        let r = runs(&actions);
        assert_eq!(r.len(), 1);
        assert!(
            r[0].reason.starts_with("b/load/load = 3 > 2"),
            "{}",
            r[0].reason
        );
    }

    #[test]
    fn bad_config_is_refused_with_a_reason() {
        let e = Tester::<Threshold>::new(r#"{"pattern": "x", "service": "s", "command": "c"}"#)
            .err()
            .unwrap();
        assert!(e.contains("exactly one of `above` and `below`"), "{e}");
        let e = Tester::<Threshold>::new(
            r#"{"pattern": "x", "above": 5, "clear": 6, "service": "s", "command": "c"}"#,
        )
        .err()
        .unwrap();
        assert!(e.contains("must not be above"), "{e}");
        let e = Tester::<Threshold>::new(
            r#"{"pattern": "x", "above": 5, "for": "later", "service": "s", "command": "c"}"#,
        )
        .err()
        .unwrap();
        assert!(e.contains("invalid duration `later`"), "{e}");
    }
}
