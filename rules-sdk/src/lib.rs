//! Write medic rules in plain Rust.
//!
//! A rule is a type that implements [`Rule`]; `export_rule!(MyRule)` turns it into a
//! WebAssembly component for `cargo build --target wasm32-wasip2 --release`. The rule never sees
//! generated bindings: it gets typed events, a [`Ctx`] to act through, typed config and state.
//! The same code runs natively under [`testing::Tester`], so `cargo test` exercises it with a
//! controllable clock and recorded actions.
//!
//! ```ignore
//! use medic_rules::{export_rule, Ctx, Rule, Subscriptions, Values};
//!
//! #[derive(serde::Deserialize)]
//! struct Config { below: f64 }
//!
//! struct LowMemory { cfg: Config }
//!
//! impl Rule for LowMemory {
//!     fn init(config: medic_rules::Config, _ctx: &mut Ctx) -> Result<Self, String> {
//!         Ok(LowMemory { cfg: config.parse()? })
//!     }
//!     fn subscriptions(&self) -> Subscriptions {
//!         Subscriptions::new().values("*/memory/memory-free")
//!     }
//!     fn on_values(&mut self, v: Values<'_>, ctx: &mut Ctx) {
//!         if v.first().is_some_and(|free| free < self.cfg.below) {
//!             ctx.run("hello", "exec", "free memory is low");
//!         }
//!     }
//! }
//! export_rule!(LowMemory);
//! ```

mod batch;
mod config;
mod ctx;
pub mod detect;
pub mod duration;
mod host;
/// collectd's identifier text, parsed and written by the same code as in the host.
pub use collectd_codec::identifier;
pub mod pattern;
mod runner;
pub mod testing;
mod values;

#[doc(hidden)]
pub mod __bindings {
    wit_bindgen::generate!({
        world: "rule-v0",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__export_rule_v0",
        additional_derives: [PartialEq],
    });
}

pub use batch::{Batch, Event};
pub use config::Config;
pub use ctx::Ctx;
pub use host::Host;
pub use pattern::{Pattern, PatternSet, topic_matches};
pub use values::Values;

pub use __bindings::medic::rules::types::{
    Action, CommandResult, Emit, Identifier, LogLevel, MqttMessage, Notification, Notify,
    NotifySource, Publish, RuleInfo, Run, RunRemote, Sample, SeriesInfo, SetTimer, Severity,
    Snapshot, Value, ValueList,
};

/// The WIT contract this SDK speaks (and a host must serve), as `wit/rules.wit` names it. The
/// SDK's own version follows it.
pub const CONTRACT: &str = "medic:rules@0.4.0";

/// A map keyed by series number (`values.list.series`): the way to keep per-series state. Series
/// numbers are small integers the host hands out, so the map uses a fast non-cryptographic hash
/// (a third of a value's cost in a rule was SipHash on these keys).
pub type SeriesMap<V> = std::collections::HashMap<u32, V, rustc_hash::FxBuildHasher>;

/// What a rule wants delivered. The host filters before calling the rule, so a rule is never
/// woken for data it did not ask for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Subscriptions {
    pub values: Vec<String>,
    pub notifications: Vec<String>,
    pub topics: Vec<String>,
}

impl Subscriptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Value lists whose identifier matches the glob (`*` never crosses `/`).
    pub fn values(mut self, pattern: impl Into<String>) -> Self {
        self.values.push(pattern.into());
        self
    }

    /// Notifications whose identifier matches the glob; `*/*/*` (or `**`) for all of them.
    pub fn notifications(mut self, pattern: impl Into<String>) -> Self {
        self.notifications.push(pattern.into());
        self
    }

    /// MQTT messages on topics matching the filter (`+` and `#` wildcards).
    pub fn topics(mut self, filter: impl Into<String>) -> Self {
        self.topics.push(filter.into());
        self
    }
}

/// A medic rule. Only `init` and `subscriptions` are required; every handler has a default that
/// does nothing, and `on_batch` dispatches each event to its handler in order.
pub trait Rule: Sized + 'static {
    /// Build the rule from its config table (`[rules.config.<file stem>]` in medic.toml).
    /// An `Err` keeps the previous version of the rule serving and is reported to the operator.
    fn init(config: Config, ctx: &mut Ctx) -> Result<Self, String>;

    /// What to deliver to this rule. Called after `init`, so it may depend on the config.
    fn subscriptions(&self) -> Subscriptions;

    fn on_values(&mut self, _values: Values<'_>, _ctx: &mut Ctx) {}
    fn on_notification(&mut self, _notification: &Notification, _ctx: &mut Ctx) {}
    fn on_mqtt(&mut self, _message: &MqttMessage, _ctx: &mut Ctx) {}
    fn on_timer(&mut self, _name: &str, _ctx: &mut Ctx) {}
    fn on_command_result(&mut self, _result: &CommandResult, _ctx: &mut Ctx) {}

    /// Override to see a whole batch at once (for example to aggregate before deciding).
    fn on_batch(&mut self, batch: &Batch, ctx: &mut Ctx) {
        for event in &batch.events {
            match event {
                Event::Values(list) => {
                    if let Some(series) = ctx.series(list.series) {
                        self.on_values(Values::new(list, batch.values_of(list), &series), ctx);
                    }
                }
                Event::Notification(n) => self.on_notification(n, ctx),
                Event::Mqtt(m) => self.on_mqtt(m, ctx),
                Event::Timer(name) => self.on_timer(name, ctx),
                Event::CommandResult(r) => self.on_command_result(r, ctx),
            }
        }
    }

    /// Called before this instance is replaced by a new version or the daemon stops: write
    /// anything kept only in memory into state so the next instance can pick it up.
    fn suspend(&mut self, _ctx: &mut Ctx) {}

    /// Detectors whose state must survive a reload or restart, each under its own state key:
    /// the SDK restores them right after `init` and saves them after `suspend`.
    ///
    /// ```ignore
    /// fn persisted(&mut self) -> Vec<(&'static str, &mut dyn Persist)> {
    ///     vec![("episodes", &mut self.level)]
    /// }
    /// ```
    fn persisted(&mut self) -> Vec<(&'static str, &mut dyn detect::Persist)> {
        Vec::new()
    }
}

#[doc(hidden)]
pub mod __private {
    pub use crate::runner::Runner;

    #[cfg(target_arch = "wasm32")]
    pub use crate::host::WasmHost;
}

/// Export a [`Rule`] type as the component's `medic:rules/rule` interface.
#[macro_export]
macro_rules! export_rule {
    ($rule:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::__bindings::exports::medic::rules::rule::Guest;
            use $crate::__private::{Runner, WasmHost};

            ::std::thread_local! {
                static RUNNER: ::std::cell::RefCell<Runner<$rule>> =
                    ::std::cell::RefCell::new(Runner::new(
                        env!("CARGO_PKG_NAME"),
                        env!("CARGO_PKG_VERSION"),
                    ));
            }

            struct Export;

            impl Guest for Export {
                fn init(config: ::std::vec::Vec<(String, String)>) -> Result<(), String> {
                    RUNNER.with_borrow_mut(|r| r.init(&mut WasmHost::install(), config))
                }
                fn describe() -> $crate::RuleInfo {
                    RUNNER.with_borrow(|r| r.describe())
                }
                fn on_events(
                    batch: $crate::__bindings::medic::rules::types::Batch,
                ) -> ::std::vec::Vec<$crate::Action> {
                    RUNNER.with_borrow_mut(|r| r.on_wire_events(&mut WasmHost, batch))
                }
                fn suspend() {
                    RUNNER.with_borrow_mut(|r| r.suspend(&mut WasmHost))
                }
            }

    $crate::__bindings::__export_rule_v0!(Export with_types_in $crate::__bindings);
        };
    };
}

#[cfg(test)]
mod contract_tests {
    /// The constant, the WIT package and the crate's version say the same.
    #[test]
    fn the_sdk_version_follows_the_contract() {
        let wit = include_str!("../wit/rules.wit");
        let package = wit
            .lines()
            .find_map(|l| l.trim().strip_prefix("package "))
            .and_then(|p| p.strip_suffix(';'))
            .expect("a package line");
        assert_eq!(package, super::CONTRACT);
        let version = super::CONTRACT.rsplit_once('@').unwrap().1;
        assert_eq!(env!("CARGO_PKG_VERSION"), version);
    }
}
