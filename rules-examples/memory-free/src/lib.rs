//! lua-collectd-monitor's local example, as a medic rule: when free memory drops below a level,
//! run the `hello`/`exec` command (both configurable). Fires once per low-memory episode of a
//! host; the episode ends when free memory is back above the level plus 10 %. Open episodes
//! survive a reload or restart.

use std::time::Duration;

use medic_rules::detect::{Change, Crossing, Direction, Level, Persist};
use medic_rules::{Config, Ctx, Rule, Subscriptions, Values, export_rule};
use serde::Deserialize;

fn default_service() -> String {
    "hello".into()
}
fn default_command() -> String {
    "exec".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Bytes of free memory under which the command runs.
    below: f64,
    #[serde(default = "default_service")]
    service: String,
    #[serde(default = "default_command")]
    command: String,
}

pub struct MemoryFree {
    settings: Settings,
    low: Level,
}

const EPISODES: &str = "episodes";

impl Rule for MemoryFree {
    fn init(config: Config, _ctx: &mut Ctx) -> Result<Self, String> {
        let settings: Settings = config.parse()?;
        if settings.below.is_nan() || settings.below <= 0.0 {
            return Err(format!(
                "`below` must be a positive number of bytes, got {}",
                settings.below
            ));
        }
        let crossing = Crossing::new(
            Direction::Below,
            settings.below,
            Some(settings.below * 1.1),
            Duration::ZERO,
        )?;
        Ok(Self {
            settings,
            low: Level::new(crossing),
        })
    }

    fn subscriptions(&self) -> Subscriptions {
        Subscriptions::new().values("*/memory/memory-free")
    }

    fn on_values(&mut self, values: Values<'_>, ctx: &mut Ctx) {
        let Some(free) = values.first() else { return };
        if self.low.observe(&values, free) == Some(Change::Fired) {
            let host = &values.identifier().host;
            let reason = format!("{host}: {free:.0} bytes free < {:.0}", self.settings.below);
            ctx.run(&self.settings.service, &self.settings.command, reason);
        }
    }

    fn persisted(&mut self) -> Vec<(&'static str, &mut dyn Persist)> {
        vec![(EPISODES, &mut self.low)]
    }
}

export_rule!(MemoryFree);

#[cfg(test)]
mod tests {
    use super::*;
    use medic_rules::Action;
    use medic_rules::testing::Tester;

    #[test]
    fn runs_hello_exec_once_per_episode_per_host() {
        let mut t = Tester::<MemoryFree>::new(r#"{"below": 1000}"#).unwrap();
        let a = t.gauge("web/memory/memory-free", 500.0);
        assert!(matches!(&a[..], [Action::Run(r)] if r.service == "hello" && r.command == "exec"));
        assert!(t.gauge("web/memory/memory-free", 400.0).is_empty());
        assert_eq!(
            t.gauge("db/memory/memory-free", 400.0).len(),
            1,
            "other host"
        );
        assert!(
            t.gauge("web/memory/memory-free", 1050.0).is_empty(),
            "within 10 %"
        );
        assert!(
            t.gauge("web/memory/memory-free", 900.0).is_empty(),
            "episode not over"
        );
        t.gauge("web/memory/memory-free", 2000.0);
        assert_eq!(
            t.gauge("web/memory/memory-free", 900.0).len(),
            1,
            "new episode"
        );
        assert!(Tester::<MemoryFree>::new(r#"{"below": -1}"#).is_err());
    }

    #[test]
    fn an_open_episode_survives_a_reload() {
        let mut t = Tester::<MemoryFree>::new(r#"{"below": 1000}"#).unwrap();
        assert_eq!(t.gauge("web/memory/memory-free", 500.0).len(), 1);
        let mut t = t.reload().unwrap();
        assert!(t.gauge("web/memory/memory-free", 400.0).is_empty());
    }
}
