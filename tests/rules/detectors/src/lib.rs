//! Test-only rule: the SDK's detectors that no example uses, driven through the wasm boundary
//! by `medic replay` (tests/replay.rs): `MOfN` on gauges (2 of the last 3 above 10), `Missing`
//! on every series (2 intervals, checked from a timer), `Delta` on counters and derives (a
//! reset is said), `Cooldown` (a gauge above 10 is said at most once a minute per series).
//! Each decision is a notification, so the replay's output shows it.

use std::time::{Duration, UNIX_EPOCH};

use medic_rules::detect::{Change, Cooldown, Delta, MOfN, Missing};
use medic_rules::{Config, Ctx, Rule, Sample, Severity, Subscriptions, Values, export_rule};

pub struct Detectors {
    m_of_n: MOfN,
    missing: Missing,
    delta: Delta,
    cooldown: Cooldown,
}

const CHECK: &str = "missing-check";

impl Rule for Detectors {
    fn init(_config: Config, _ctx: &mut Ctx) -> Result<Self, String> {
        Ok(Self {
            m_of_n: MOfN::new(2, 3)?,
            missing: Missing::new(2),
            delta: Delta::default(),
            cooldown: Cooldown::new(Duration::from_secs(60)),
        })
    }

    fn subscriptions(&self) -> Subscriptions {
        Subscriptions::new().values("**")
    }

    fn on_values(&mut self, values: Values<'_>, ctx: &mut Ctx) {
        let id = values.identifier().to_string();
        if self.missing.seen(&values) == Some(Change::Recovered) {
            ctx.notify(Severity::Okay, format!("{id} is back"));
        }
        match values.values.first().map(|v| v.sample) {
            Some(Sample::Gauge(v)) => {
                if v > 10.0 && self.cooldown.ready(&id, values.list.time) {
                    ctx.notify(
                        Severity::Warning,
                        format!("{id}: above 10 (said once a minute)"),
                    );
                }
                self.gauge(&values, &id, v, ctx);
            }
            Some(Sample::Counter(_) | Sample::Derive(_))
                if self.delta.observe(&values, 0).is_none() =>
            {
                ctx.notify(
                    Severity::Okay,
                    format!("{id}: no increment (first value or reset)"),
                );
            }
            _ => {}
        }
        self.arm(ctx);
    }

    fn on_timer(&mut self, _name: &str, ctx: &mut Ctx) {
        self.arm(ctx);
    }
}

impl Detectors {
    /// `MOfN` on a gauge: two of its last three above 10.
    fn gauge(&mut self, values: &Values<'_>, id: &str, v: f64, ctx: &mut Ctx) {
        match self.m_of_n.observe(values, v > 10.0) {
            Some(Change::Fired) => ctx.notify(Severity::Warning, format!("{id}: 2 of 3 above 10")),
            Some(Change::Recovered) => {
                ctx.notify(Severity::Okay, format!("{id}: 3 of 3 at or below 10"))
            }
            None => {}
        }
    }

    /// Report what went missing by now and set the timer for the next check.
    fn arm(&mut self, ctx: &mut Ctx) {
        let now = ctx
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let (gone, next) = self.missing.check(now);
        for series in gone {
            if let Some(info) = ctx.series(series) {
                ctx.notify(Severity::Failure, format!("{} is missing", info.identifier));
            }
        }
        match next {
            Some(at) => ctx.set_timer(CHECK, Duration::from_nanos(at.saturating_sub(now))),
            None => ctx.cancel_timer(CHECK),
        }
    }
}

export_rule!(Detectors);
