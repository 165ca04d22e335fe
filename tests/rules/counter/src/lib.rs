//! Test-only rule: counts every value it is given, in its persistent state, and logs the running
//! total with its version, so tests can see which version serves and that nothing was lost.
//! Built twice by scripts/build-rules.sh: plain (version 1) and with feature `v2`.
//!
//! With `run = ["service", "command"]` in its config it also exercises the host's action path:
//! on its first values it asks for that command and arms a timer; it logs the command's result
//! and the timer's firing, and notifies when both have come back. With `every_batch = true` it
//! asks for the command on every batch of values instead (policy tests).
//!
//! MQTT: with `topics = [...]` it receives messages on those filters, logs each one and
//! publishes `echo:<payload>` on every topic of `publish = [...]`; with
//! `remote = ["node", "service", "command"]` it asks that node over MQTT on its first values
//! and logs the result.

use std::time::Duration;

use medic_rules::{
    Batch, CommandResult, Config, Ctx, Event, Rule, Severity, Subscriptions, export_rule,
};

const VERSION: &str = if cfg!(feature = "v2") { "v2" } else { "v1" };

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    pattern: String,
    #[serde(default)]
    run: Option<(String, String)>,
    #[serde(default)]
    topics: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    remote: Option<(String, String, String)>,
    /// Ask for `run` on every batch of values, not only the first (policy tests).
    #[serde(default)]
    every_batch: bool,
}

pub struct Counter {
    settings: Settings,
    asked: bool,
    got_result: bool,
    got_timer: bool,
}

impl Counter {
    fn maybe_done(&self, ctx: &mut Ctx) {
        if self.got_result && self.got_timer {
            ctx.notify(Severity::Okay, "counter: result and timer both arrived");
        }
    }
}

impl Rule for Counter {
    fn init(config: Config, ctx: &mut Ctx) -> Result<Self, String> {
        let settings: Settings = config.parse()?;
        let seen: u64 = ctx.state("seen").unwrap_or(0);
        ctx.info(&format!("counter {VERSION} starting at seen={seen}"));
        Ok(Self {
            settings,
            asked: false,
            got_result: false,
            got_timer: false,
        })
    }

    fn subscriptions(&self) -> Subscriptions {
        let mut s = Subscriptions::new().values(&self.settings.pattern);
        for t in &self.settings.topics {
            s = s.topics(t);
        }
        s
    }

    fn on_batch(&mut self, batch: &Batch, ctx: &mut Ctx) {
        for event in &batch.events {
            match event {
                Event::CommandResult(r) => self.on_command_result(r, ctx),
                Event::Timer(name) => self.on_timer(name, ctx),
                Event::Mqtt(m) => {
                    let payload = String::from_utf8_lossy(&m.payload).into_owned();
                    ctx.info(&format!("counter mqtt {} {payload}", m.topic));
                    for topic in &self.settings.publish {
                        ctx.publish(topic, format!("echo:{payload}"), false);
                    }
                }
                _ => {}
            }
        }
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
        if let Some((node, service, command)) = &self.settings.remote
            && !self.asked
        {
            self.asked = true;
            ctx.run_remote(node, service, command, "counter remote test");
        }
        if let Some((service, command)) = &self.settings.run
            && self.settings.every_batch
        {
            ctx.run(service, command, format!("counter asks at seen={seen}"));
        } else if let Some((service, command)) = &self.settings.run
            && !self.asked
        {
            self.asked = true;
            ctx.run(service, command, "counter test");
            ctx.set_timer("tick", Duration::from_millis(200));
            ctx.set_timer("cancelled", Duration::from_millis(100));
            ctx.cancel_timer("cancelled");
        }
    }

    fn on_command_result(&mut self, r: &CommandResult, ctx: &mut Ctx) {
        ctx.info(&format!(
            "counter result {}/{} code={:?} output={:?} error={:?}",
            r.service, r.command, r.code, r.output, r.error
        ));
        self.got_result = true;
        self.maybe_done(ctx);
    }

    fn on_timer(&mut self, name: &str, ctx: &mut Ctx) {
        ctx.info(&format!("counter timer {name} fired"));
        self.got_timer = true;
        self.maybe_done(ctx);
    }
}

export_rule!(Counter);
