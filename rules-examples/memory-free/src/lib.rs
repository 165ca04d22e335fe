//! lua-collectd-monitor's local example, as a medic rule: when free memory drops below a level,
//! run the `hello`/`exec` command (both configurable). Fires once per low-memory episode; the
//! episode ends when free memory is back above the level plus 10 %.

use medic_rules::{Config, Ctx, Rule, Subscriptions, Values, export_rule};
use serde::Deserialize;
use std::collections::HashSet;

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
    /// Hosts currently in a low-memory episode.
    low: HashSet<String>,
}

impl Rule for MemoryFree {
    fn init(config: Config, _ctx: &mut Ctx) -> Result<Self, String> {
        let settings: Settings = config.parse()?;
        if settings.below.is_nan() || settings.below <= 0.0 {
            return Err(format!(
                "`below` must be a positive number of bytes, got {}",
                settings.below
            ));
        }
        Ok(Self {
            settings,
            low: HashSet::new(),
        })
    }

    fn subscriptions(&self) -> Subscriptions {
        Subscriptions::new().values("*/memory/memory-free")
    }

    fn on_values(&mut self, values: Values<'_>, ctx: &mut Ctx) {
        let Some(free) = values.first() else { return };
        let host = &values.identifier().host;
        if free < self.settings.below {
            if self.low.insert(host.clone()) {
                let reason = format!("{host}: {free:.0} bytes free < {:.0}", self.settings.below);
                ctx.run(&self.settings.service, &self.settings.command, reason);
            }
        } else if free > self.settings.below * 1.1 {
            self.low.remove(host);
        }
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
}
