//! Test-only rule: counts every value it is given, in its persistent state, and logs the running
//! total with its version, so tests can see which version serves and that nothing was lost.
//! Built twice by scripts/build-rules.sh: plain (version 1) and with feature `v2`.

use medic_rules::{Batch, Config, Ctx, Event, Rule, Subscriptions, export_rule};

const VERSION: &str = if cfg!(feature = "v2") { "v2" } else { "v1" };

pub struct Counter {
    pattern: String,
}

impl Rule for Counter {
    fn init(config: Config, ctx: &mut Ctx) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        struct Settings {
            pattern: String,
        }
        let s: Settings = config.parse()?;
        let seen: u64 = ctx.state("seen").unwrap_or(0);
        ctx.info(&format!("counter {VERSION} starting at seen={seen}"));
        Ok(Self { pattern: s.pattern })
    }

    fn subscriptions(&self) -> Subscriptions {
        Subscriptions::new().values(&self.pattern)
    }

    fn on_batch(&mut self, batch: &Batch, ctx: &mut Ctx) {
        let n = batch
            .events
            .iter()
            .filter(|e| matches!(e, Event::Values(_)))
            .count() as u64;
        if n == 0 {
            return;
        }
        let seen = ctx.state::<u64>("seen").unwrap_or(0) + n;
        ctx.set_state("seen", &seen);
        ctx.info(&format!("counter {VERSION} seen={seen}"));
    }
}

export_rule!(Counter);
