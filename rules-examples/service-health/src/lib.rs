//! Monit's "if failed N times then restart" on medic's probes: when a probe fails `failures`
//! checks in a row, climb the escalation ladder (`steps`, gentlest first: a step whose command
//! fails hands over to the next); when a step succeeded but the probe still fails `failures`
//! more checks, say that the fix did not work; when every step failed, say so. A passing check
//! ends it all. The policy gate still has the last word on every step.
//!
//! ```toml
//! [probes.web]
//! run = ["curl", "-fsS", "--max-time", "4", "http://127.0.0.1/health"]
//! every = "30s"
//!
//! [rules.config.service-health]
//! probes = ["web"]                  # [probes.<name>] to watch
//! failures = 3                      # failed checks in a row before acting (default 3)
//! steps = [["nginx", "restart"], ["nginx", "reboot-host"]]
//! ```

use std::collections::BTreeMap;

use medic_rules::detect::{Climb, Ladder, Persist};
use medic_rules::{CommandResult, Config, Ctx, Rule, Severity, Subscriptions, Values, export_rule};
use serde::{Deserialize, Serialize};

fn default_failures() -> u32 {
    3
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    probes: Vec<String>,
    #[serde(default = "default_failures")]
    failures: u32,
    steps: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
enum Phase {
    #[default]
    Healthy,
    /// A step was asked for; waiting for its result.
    Acting,
    /// A step succeeded: the next checks tell whether it fixed anything.
    Verifying,
    /// Said that nothing worked; waiting for a passing check.
    GaveUp,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Health {
    /// Failed checks in a row (since the last step, once one was taken).
    failing: u32,
    phase: Phase,
}

pub struct ServiceHealth {
    settings: Settings,
    ladder: Ladder,
    health: BTreeMap<String, Health>,
}

const HEALTH: &str = "health";
const LADDER: &str = "ladder";

impl Rule for ServiceHealth {
    fn init(config: Config, ctx: &mut Ctx) -> Result<Self, String> {
        let settings: Settings = config.parse()?;
        if settings.probes.is_empty() {
            return Err("`probes` needs at least one [probes.<name>]".into());
        }
        if settings.failures == 0 {
            return Err("`failures` must be at least 1".into());
        }
        let ladder = Ladder::new(settings.steps.clone())?;
        let health = ctx.state(HEALTH).unwrap_or_default();
        Ok(Self {
            settings,
            ladder,
            health,
        })
    }

    fn subscriptions(&self) -> Subscriptions {
        self.settings
            .probes
            .iter()
            .fold(Subscriptions::new(), |s, p| {
                s.values(format!("*/probe-{p}/probe"))
            })
    }

    fn on_values(&mut self, values: Values<'_>, ctx: &mut Ctx) {
        let probe = values.identifier().plugin_instance.clone();
        let Some(ok) = values.get("ok").and_then(|v| v.current()) else {
            return;
        };
        let h = self.health.entry(probe.clone()).or_default();
        if ok >= 1.0 {
            if h.phase != Phase::Healthy {
                ctx.notify(Severity::Okay, format!("probe {probe} passes again"));
                self.ladder.resolved(&probe);
            }
            *h = Health::default();
            return;
        }
        h.failing += 1;
        if h.failing < self.settings.failures {
            return;
        }
        match h.phase {
            Phase::Healthy => {
                let reason = format!("probe {probe} failed {} checks in a row", h.failing);
                self.ladder.trouble(&probe, &reason, ctx);
                *h = Health {
                    failing: 0,
                    phase: Phase::Acting,
                };
            }
            Phase::Verifying => {
                ctx.notify(
                    Severity::Failure,
                    format!(
                        "probe {probe} still fails {} checks after the fix: giving up until it passes",
                        h.failing
                    ),
                );
                h.phase = Phase::GaveUp;
            }
            Phase::Acting | Phase::GaveUp => {}
        }
    }

    fn on_command_result(&mut self, result: &CommandResult, ctx: &mut Ctx) {
        match self.ladder.result(result, ctx) {
            Some(Climb::Resolved { key }) => {
                self.health.insert(
                    key,
                    Health {
                        failing: 0,
                        phase: Phase::Verifying,
                    },
                );
            }
            Some(Climb::Exhausted { key }) => {
                ctx.notify(
                    Severity::Failure,
                    format!("probe {key}: every step failed: giving up until it passes"),
                );
                self.health.entry(key).or_default().phase = Phase::GaveUp;
            }
            Some(Climb::Escalated { .. }) | None => {}
        }
    }

    fn suspend(&mut self, ctx: &mut Ctx) {
        ctx.set_state(HEALTH, &self.health);
    }

    fn persisted(&mut self) -> Vec<(&'static str, &mut dyn Persist)> {
        vec![(LADDER, &mut self.ladder)]
    }
}

export_rule!(ServiceHealth);

#[cfg(test)]
mod tests {
    use super::*;
    use medic_rules::testing::Tester;
    use medic_rules::{Action, Sample, Value};

    const CONFIG: &str =
        r#"{"probes": ["web"], "failures": 2, "steps": [["web", "restart"], ["host", "reboot"]]}"#;

    fn check(t: &mut Tester<ServiceHealth>, ok: bool) -> Vec<Action> {
        let gauge = |v: f64| Value {
            sample: Sample::Gauge(v),
            rate: None,
        };
        t.values(
            "node/probe-web/probe",
            &[
                ("ok", gauge(if ok { 1.0 } else { 0.0 })),
                ("code", gauge(if ok { 0.0 } else { 1.0 })),
                ("seconds", gauge(0.1)),
            ],
        )
    }

    fn result(service: &str, command: &str, code: i32) -> CommandResult {
        CommandResult {
            action_id: 1,
            service: service.into(),
            command: command.into(),
            code: Some(code),
            signal: None,
            output: String::new(),
            error: None,
            duration: 0,
        }
    }

    fn feed_result(t: &mut Tester<ServiceHealth>, r: CommandResult) -> Vec<Action> {
        t.feed(medic_rules::Batch {
            events: vec![medic_rules::Event::CommandResult(r)],
            values: vec![],
        })
    }

    fn runs(actions: &[Action]) -> Vec<(String, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Run(r) => Some((r.service.clone(), r.command.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn failures_in_a_row_restart_and_a_failed_restart_escalates() {
        let mut t = Tester::<ServiceHealth>::new(CONFIG).unwrap();
        assert!(check(&mut t, false).is_empty());
        assert!(check(&mut t, true).is_empty(), "a pass resets the count");
        assert!(check(&mut t, false).is_empty());
        let a = check(&mut t, false);
        assert_eq!(runs(&a), [("web".into(), "restart".into())]);
        // Still failing while the restart runs: nothing more.
        assert!(check(&mut t, false).is_empty());
        assert!(check(&mut t, false).is_empty());
        let a = feed_result(&mut t, result("web", "restart", 1));
        assert_eq!(runs(&a), [("host".into(), "reboot".into())]);
        let a = feed_result(&mut t, result("host", "reboot", 1));
        assert!(a.iter().any(
            |a| matches!(a, Action::Notify(n) if n.severity == Severity::Failure && n.message.contains("every step failed"))
        ));
        let a = check(&mut t, true);
        assert!(
            a.iter()
                .any(|a| matches!(a, Action::Notify(n) if n.severity == Severity::Okay))
        );
    }

    #[test]
    fn a_restart_that_does_not_fix_it_is_said_once() {
        let mut t = Tester::<ServiceHealth>::new(CONFIG).unwrap();
        check(&mut t, false);
        check(&mut t, false);
        assert!(feed_result(&mut t, result("web", "restart", 0)).is_empty());
        assert!(check(&mut t, false).is_empty());
        let a = check(&mut t, false);
        assert!(a.iter().any(
            |a| matches!(a, Action::Notify(n) if n.message.contains("still fails 2 checks after the fix"))
        ));
        assert!(check(&mut t, false).is_empty());
        assert!(check(&mut t, false).is_empty());
    }

    #[test]
    fn an_open_climb_survives_a_reload() {
        let mut t = Tester::<ServiceHealth>::new(CONFIG).unwrap();
        check(&mut t, false);
        check(&mut t, false);
        let mut t = t.reload().unwrap();
        let a = feed_result(&mut t, result("web", "restart", 1));
        assert_eq!(runs(&a), [("host".into(), "reboot".into())]);
    }
}
