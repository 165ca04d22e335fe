//! Act before a disk is full, not after: from the trend of a file system's free bytes over the
//! last `window` (collectd's df plugin), predict when it reaches zero; when that is sooner than
//! `horizon`, run the cleanup command once. The episode ends when the prediction is back beyond
//! twice the horizon (or the disk stopped filling), so a cleanup that worked is not repeated.
//!
//! ```toml
//! [rules.config.disk-fill]
//! pattern = "*/df-*/df_complex-free"   # the default
//! window = "30m"                       # the default
//! horizon = "1h"                       # the default
//! service = "disk"
//! command = "cleanup"
//! ```

use std::time::Duration;

use medic_rules::detect::{Trend, time_to};
use medic_rules::{Config, Ctx, Rule, SeriesMap, Severity, Subscriptions, Values, export_rule};
use serde::Deserialize;

fn default_pattern() -> String {
    "*/df-*/df_complex-free".into()
}
fn default_window() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_horizon() -> Duration {
    Duration::from_secs(3600)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_pattern")]
    pattern: String,
    #[serde(default = "default_window", with = "medic_rules::duration")]
    window: Duration,
    #[serde(default = "default_horizon", with = "medic_rules::duration")]
    horizon: Duration,
    service: String,
    command: String,
}

pub struct DiskFill {
    settings: Settings,
    trend: Trend,
    /// Series whose cleanup was asked for in this episode.
    filling: SeriesMap<()>,
}

impl Rule for DiskFill {
    fn init(config: Config, _ctx: &mut Ctx) -> Result<Self, String> {
        let settings: Settings = config.parse()?;
        if settings.window < Duration::from_secs(60) || settings.horizon.is_zero() {
            return Err("`window` must be at least 1m and `horizon` above zero".into());
        }
        Ok(Self {
            trend: Trend::new(settings.window),
            settings,
            filling: SeriesMap::default(),
        })
    }

    fn subscriptions(&self) -> Subscriptions {
        Subscriptions::new().values(self.settings.pattern.clone())
    }

    fn on_values(&mut self, values: Values<'_>, ctx: &mut Ctx) {
        let Some(free) = values.first() else { return };
        let Some(slope) = self.trend.observe(&values, free) else {
            return;
        };
        let eta = time_to(free, slope, 0.0);
        let series = values.list.series;
        let soon = eta.is_some_and(|eta| eta < self.settings.horizon);
        if soon && self.filling.insert(series, ()).is_none() {
            let eta = eta.unwrap_or_default();
            let reason = format!(
                "{}: full in {} min at {:.1} MB/s ({:.2} GB free)",
                values.identifier(),
                eta.as_secs() / 60,
                -slope / 1e6,
                free / 1e9
            );
            ctx.run(&self.settings.service, &self.settings.command, reason);
        } else if !soon
            && eta.is_none_or(|eta| eta > 2 * self.settings.horizon)
            && self.filling.remove(&series).is_some()
        {
            ctx.notify(
                Severity::Okay,
                format!("{}: no longer filling up", values.identifier()),
            );
        }
    }
}

export_rule!(DiskFill);

#[cfg(test)]
mod tests {
    use super::*;
    use medic_rules::Action;
    use medic_rules::testing::Tester;

    const CONFIG: &str =
        r#"{"window": "10m", "horizon": "1h", "service": "disk", "command": "cleanup"}"#;

    fn runs(actions: &[Action]) -> usize {
        actions
            .iter()
            .filter(|a| matches!(a, Action::Run(_)))
            .count()
    }

    #[test]
    fn a_disk_predicted_full_within_the_horizon_is_cleaned_once() {
        let mut t = Tester::<DiskFill>::new(CONFIG).unwrap();
        let id = "web/df-root/df_complex-free";
        // 10 GB free, falling 2 MB/s: full in 83 min, then sooner and sooner.
        let mut asked = 0;
        let mut first_at = None;
        for i in 0..150u64 {
            let free = 10e9 - 2e6 * 10.0 * i as f64;
            let n = runs(&t.gauge(id, free));
            if n > 0 && first_at.is_none() {
                first_at = Some(i);
            }
            asked += n;
            t.advance(Duration::from_secs(10));
        }
        assert_eq!(asked, 1);
        // Full within the hour once free < 7.2 GB (after step 140); the window needs 30 steps.
        assert_eq!(first_at, Some(141));
        // The cleanup worked: free space is back and steady, the episode ends.
        let mut okay = false;
        for _ in 0..60 {
            okay |= t
                .gauge(id, 50e9)
                .iter()
                .any(|a| matches!(a, Action::Notify(n) if n.severity == Severity::Okay));
            t.advance(Duration::from_secs(10));
        }
        assert!(okay);
    }

    #[test]
    fn a_steady_or_slowly_filling_disk_is_left_alone() {
        let mut t = Tester::<DiskFill>::new(CONFIG).unwrap();
        for i in 0..200u64 {
            // 1 KB/s on 10 GB: years.
            assert!(
                t.gauge("db/df-var/df_complex-free", 10e9 - 1e3 * 10.0 * i as f64)
                    .is_empty()
            );
            t.advance(Duration::from_secs(10));
        }
    }
}
