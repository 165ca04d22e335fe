//! What it takes to start a rule: instantiate, `init(config)`, `describe`, and turn its declared
//! subscriptions into matchers. Shared by first load, hot swap and re-instantiation after a fault.

use std::sync::Arc;

use anyhow::Context;
use medic_rules::PatternSet;

use super::bindings as wit;
use super::clock::Clock;
use super::compiler::Compiled;
use super::instance::{Fault, Limits, RuleInstance};
use super::rule_state::{HeldChanges, RuleState};
use super::series::SeriesTable;
use crate::config::Rules as RulesConfig;
use crate::config::file_ref;
use crate::store::Store as StateStore;

/// One build of one rule with its config: enough to make instances of it.
pub struct RuleSpec {
    /// The file stem: a rule's identity for config, state and status.
    pub name: Arc<str>,
    pub config: Vec<(String, String)>,
    /// `[rules.grants.<name>] subscribe`: the MQTT topic filters its subscriptions must fall
    /// within.
    pub topics_granted: Vec<String>,
    pub compiled: Compiled,
}

/// What every instance of every rule gets from the host.
#[derive(Clone)]
pub struct HostParts {
    pub state: StateStore,
    /// Rule state changes the database could not take yet, kept across a rule's instances.
    pub held: HeldChanges,
    pub series: Arc<SeriesTable>,
    /// What rules read with `now()`.
    pub clock: Clock,
    pub limits: Limits,
    /// Where rule faults are recorded (none in `medic check` and benchmarks).
    pub history: Option<crate::store::history::History>,
}

impl HostParts {
    /// Record a fault of `rule` (build `build`) in the audit history and count it by `kind`
    /// (`trap`, `deadline`, `memory`, `restart`, `load`, `config`).
    pub fn record_fault(&self, rule: &str, kind: &'static str, build: Option<&str>, what: String) {
        crate::metrics::metrics()
            .rule_faults
            .get_or_create(&crate::metrics::RuleKindLabels {
                rule: rule.to_string(),
                kind,
            })
            .inc();
        if let Some(history) = &self.history {
            history.record(crate::store::history::Entry::Fault {
                action_id: crate::event::next_action_id(),
                at_ns: crate::event::now_ns(),
                rule: rule.into(),
                build: build.map(Into::into),
                what,
            });
        }
    }
}

/// The host-side form of a rule's `describe()`.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub info: wit::RuleInfo,
    /// Globs with the SDK's semantics (`*` never crosses `/`): host and rule agree.
    pub values: PatternSet,
    pub notifications: PatternSet,
}

impl Subscription {
    /// `granted`: the topic filters rule `rule` may subscribe within
    /// (`rules.grants.<rule>.subscribe`).
    pub fn new(info: wit::RuleInfo, rule: &str, granted: &[String]) -> Result<Self, String> {
        if let Some(bad) = info
            .topics
            .iter()
            .find(|t| t.is_empty() || !rumqttc::valid_filter(t))
        {
            return Err(format!("`{bad}` is not an MQTT topic filter"));
        }
        if let Some(ungranted) = info
            .topics
            .iter()
            .find(|t| !granted.iter().any(|g| crate::config::filter_within(t, g)))
        {
            return Err(format!(
                "MQTT topic `{ungranted}` is not granted: add it (or a filter covering it) to \
                 [rules.grants.{rule}] subscribe"
            ));
        }
        Ok(Self {
            values: PatternSet::new(&info.values),
            notifications: PatternSet::new(&info.notifications),
            info,
        })
    }

    /// A subscription to nothing, for a rule that is not running.
    pub fn none() -> Self {
        let empty = PatternSet::default();
        Self {
            info: wit::RuleInfo {
                name: String::new(),
                version: String::new(),
                values: vec![],
                notifications: vec![],
                topics: vec![],
            },
            values: empty.clone(),
            notifications: empty,
        }
    }
}

/// Why a rule could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Fault(#[from] Fault),
    #[error("init refused its config: {0}")]
    Init(String),
    #[error("bad subscriptions: {0}")]
    Subscriptions(String),
}

/// An instance that has been through `init` and `describe`.
pub struct Started {
    pub instance: RuleInstance,
    pub subscription: Subscription,
}

impl RuleSpec {
    pub fn instantiate(&self, host: &HostParts) -> Result<RuleInstance, Fault> {
        RuleInstance::instantiate(
            &self.compiled.pre,
            self.name.clone(),
            RuleState::new(
                self.name.clone(),
                host.state.clone(),
                &host.held,
                host.history.clone(),
            ),
            host.series.clone(),
            host.clock.clone(),
            host.limits,
        )
    }

    /// `init` then `describe` an instance of this spec.
    pub fn start(&self, mut instance: RuleInstance) -> Result<Started, StartError> {
        instance.init(&self.config)?.map_err(StartError::Init)?;
        let info = instance.describe()?;
        let subscription = Subscription::new(info, &self.name, &self.topics_granted)
            .map_err(StartError::Subscriptions)?;
        Ok(Started {
            instance,
            subscription,
        })
    }
}

/// The MQTT topic filters rule `name` may subscribe within.
pub fn topics_granted(config: &RulesConfig, name: &str) -> Vec<String> {
    config
        .grants
        .get(name)
        .map(|g| g.subscribe.clone())
        .unwrap_or_default()
}

/// The `(key, JSON text)` pairs `init` receives, from `[rules.config.<name>]`, with the files
/// it names (`{ file = … }`, `{ files = … }`) read in.
pub fn rule_config(config: &RulesConfig, name: &str) -> anyhow::Result<Vec<(String, String)>> {
    let Some(table) = config.config.get(name) else {
        return Ok(Vec::new());
    };
    table
        .iter()
        .map(|(k, v)| {
            let value = file_ref::resolve(v, &config.config_dir)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("rules.config.{name}.{k}"))?;
            Ok((k.clone(), value.to_string()))
        })
        .collect()
}
