//! One rule instance: its wasmtime `Store`, what the host offers it, and calls into it under a
//! deadline and a memory cap.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasSelf, InstancePre, Linker, ResourceTable};
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{self as wit, RuleV0};
use super::clock::Clock;
use super::rule_output::RuleOutput;
use super::rule_state::RuleState;
use super::series::SeriesTable;
use crate::logging::Untrusted;

/// What a rule's calls may reach: its own state, the series table, the clock, the log. No
/// filesystem, network or environment: the WASI context is empty.
pub struct HostState {
    rule: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    state: RuleState,
    series: Arc<SeriesTable>,
    clock: Clock,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::medic::rules::types::Host for HostState {}

impl wit::medic::rules::host::Host for HostState {
    fn log(&mut self, level: wit::LogLevel, message: String) {
        let rule = &*self.rule;
        // A rule may pass on what a peer sent (an MQTT payload, a host name).
        let message = Untrusted(&message);
        match level {
            wit::LogLevel::Trace => tracing::trace!(rule, "{message}"),
            wit::LogLevel::Debug => tracing::debug!(rule, "{message}"),
            wit::LogLevel::Info => tracing::info!(rule, "{message}"),
            wit::LogLevel::Warn => tracing::warn!(rule, "{message}"),
            wit::LogLevel::Error => tracing::error!(rule, "{message}"),
        }
    }

    fn state_get(&mut self, key: String) -> Option<Vec<u8>> {
        self.state.get(&key)
    }

    fn state_set(&mut self, key: String, value: Vec<u8>) {
        self.state.set(key, Some(value));
    }

    fn state_delete(&mut self, key: String) {
        self.state.set(key, None);
    }

    fn now(&mut self) -> u64 {
        self.clock.now_ns()
    }

    fn last_value(&mut self, identifier: String) -> Option<wit::Snapshot> {
        self.series.last_value(&identifier)
    }

    fn series(&mut self, id: u32) -> Option<wit::SeriesInfo> {
        self.series.info(id)
    }
}

/// Everything the host adds to a rule's linker: our WIT imports and WASI with a deny-all
/// context (Rust's std on wasip2 imports WASI even when a rule never uses it).
pub fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    RuleV0::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    Ok(())
}

/// Granularity of call deadlines: the engine's epoch advances this often.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Limits applied to every call and every instance of one rule.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub call_timeout: Duration,
    pub memory_bytes: usize,
}

impl Limits {
    pub fn from_config(rules: &crate::config::Rules) -> Self {
        Self {
            call_timeout: rules.call_timeout,
            memory_bytes: (rules.memory_limit_mib as usize).saturating_mul(1 << 20),
        }
    }
}

/// Why a call into a rule failed. After any of these the instance is unusable (a trapped
/// component cannot be re-entered): drop it and instantiate afresh.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    #[error("ran past its {0:?} deadline")]
    Timeout(Duration),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("went over its memory limit: {0}")]
    Memory(String),
}

impl Fault {
    /// The fault's kind, as counted in `medic_rule_faults_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Timeout(_) => "deadline",
            Fault::Trap(_) => "trap",
            Fault::Memory(_) => "memory",
        }
    }
}

fn arm(store: &mut Store<HostState>, limits: Limits) {
    let ticks = limits
        .call_timeout
        .as_nanos()
        .div_ceil(EPOCH_TICK.as_nanos()) as u64;
    // One extra tick: the epoch may advance right after we arm.
    store.set_epoch_deadline(ticks + 1);
}

fn fault(e: wasmtime::Error, limits: Limits) -> Fault {
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Fault::Timeout(limits.call_timeout),
        _ => {
            // The full error carries a multi-line wasm backtrace: keep it for debugging, and
            // report the root cause on one line.
            tracing::debug!("rule trap details: {e:?}");
            let cause = e.root_cause().to_string();
            // What `StoreLimits` with `trap_on_grow_failure` says when the cap is hit.
            if cause.contains("growing memory") {
                Fault::Memory(cause)
            } else {
                Fault::Trap(cause)
            }
        }
    }
}

pub struct RuleInstance {
    store: Store<HostState>,
    bindings: RuleV0,
    limits: Limits,
}

impl RuleInstance {
    pub fn instantiate(
        pre: &InstancePre<HostState>,
        rule: Arc<str>,
        state: RuleState,
        series: Arc<SeriesTable>,
        clock: Clock,
        limits: Limits,
    ) -> Result<Self, Fault> {
        // No filesystem, network or environment; what it prints goes to the log.
        let wasi = WasiCtx::builder()
            .stdout(RuleOutput::new(rule.clone(), "stdout"))
            .stderr(RuleOutput::new(rule.clone(), "stderr"))
            .build();
        let host = HostState {
            state,
            rule,
            wasi,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .trap_on_grow_failure(true)
                .instances(4)
                .build(),
            series,
            clock,
        };
        let mut store = Store::new(pre.engine(), host);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        arm(&mut store, limits);
        let instance = pre.instantiate(&mut store).map_err(|e| fault(e, limits))?;
        let bindings = RuleV0::new(&mut store, &instance).map_err(|e| fault(e, limits))?;
        Ok(Self {
            store,
            bindings,
            limits,
        })
    }

    fn arm(&mut self) {
        arm(&mut self.store, self.limits);
    }

    fn fault(&self, e: wasmtime::Error) -> Fault {
        fault(e, self.limits)
    }

    pub fn init(&mut self, config: &[(String, String)]) -> Result<Result<(), String>, Fault> {
        self.arm();
        let r = self
            .bindings
            .medic_rules_rule()
            .call_init(&mut self.store, config);
        r.map_err(|e| self.fault(e))
    }

    pub fn describe(&mut self) -> Result<wit::RuleInfo, Fault> {
        self.arm();
        let r = self
            .bindings
            .medic_rules_rule()
            .call_describe(&mut self.store);
        r.map_err(|e| self.fault(e))
    }

    pub fn on_events(&mut self, batch: &wit::Batch) -> Result<Vec<wit::Action>, Fault> {
        self.arm();
        let r = self
            .bindings
            .medic_rules_rule()
            .call_on_events(&mut self.store, batch);
        r.map_err(|e| self.fault(e))
    }

    pub fn suspend(&mut self) -> Result<(), Fault> {
        self.arm();
        let r = self
            .bindings
            .medic_rules_rule()
            .call_suspend(&mut self.store);
        r.map_err(|e| self.fault(e))
    }
}
