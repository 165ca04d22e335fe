//! `medic replay`: the real wasm rules on a recorded feed, in virtual time, executing nothing.
//!
//! The feed's timestamps drive a [`VirtualClock`]: rules read it with `now()`, their timers fire
//! when the feed's time passes them, the policy gate counts cooldowns and rate limits on it. A
//! batch is the feed's events of one timestamp (at most `rules.max_batch`), so a rule sees the
//! time of its events and each action is stamped with the time of the events that caused it.
//! Commands, publishes and remote runs are recorded with what the gate would have said; none
//! is carried out, and no command result comes back. The same feed gives the same actions,
//! every time: this is how rule authors test rules in CI.
//!
//! What happens to a rule is the daemon's own code: routing ([`route`]), rates
//! ([`SeriesTable`]), the rule's life ([`RuleDriver`]: calls, the act step, timers, restarts
//! with backoff after a fault, counted on the virtual clock) and the policy gate (in
//! [`recorder`], the driver's port). Only the gathering of batches is the replay's own: the
//! feed's events of one instant. Rule state lives in memory, so a replay never touches a
//! daemon's database.

pub mod expect;
pub mod feed;
mod recorder;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;

use crate::config::Config;
use crate::engine::batch::Observation;
use crate::engine::bindings as wit;
use crate::engine::clock::{Clock, VirtualClock};
use crate::engine::compiler::Compiler;
use crate::engine::driver::{Backoff, RuleDriver};
use crate::engine::instance::Limits;
use crate::engine::interest::Interest;
use crate::engine::registry::{rule_files, rule_name};
use crate::engine::routing::{Target, route};
use crate::engine::rule::{HostParts, RuleSpec, StartError, rule_config};
use crate::engine::series::{SeriesLimits, SeriesTable};
use crate::event::{CommandResult, Ingested};
use crate::store::Store;
use feed::Entry;
use recorder::{Call, Recorder};

/// One line of a replay's output: an action a rule took, or a fault.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Line {
    /// The virtual time, RFC 3339.
    pub time: String,
    pub rule: String,
    #[serde(flatten)]
    pub what: What,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum What {
    Run {
        service: String,
        command: String,
        reason: String,
        /// `run` or `refused`: what the policy gate would have said.
        gate: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        why: Option<String>,
    },
    RunRemote {
        node: String,
        service: String,
        command: String,
        reason: String,
    },
    Publish {
        topic: String,
        payload: String,
        retain: bool,
        /// `publish` or `refused` (the topic is not granted to the rule).
        gate: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        why: Option<String>,
    },
    Emit {
        sink: String,
        record: String,
        /// `emit` or `refused` (no such sink, or not granted to the rule).
        gate: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        why: Option<String>,
    },
    Notify {
        severity: &'static str,
        message: String,
        /// `plugin[-instance]/type[-instance]`, when the rule named where it comes from (and
        /// `[rules.grants]` lets it).
        #[serde(skip_serializing_if = "Option::is_none")]
        source: Option<String>,
        /// Why the named source is not used (not granted): the notification is sent from
        /// plugin `medic`.
        #[serde(skip_serializing_if = "Option::is_none")]
        why: Option<String>,
    },
    /// The rule trapped, ran past its deadline or its memory: the batch is lost, as in
    /// service, and a fresh instance takes the next one.
    Fault {
        kind: &'static str,
        error: String,
        /// The feed lines of the batch.
        events: String,
    },
}

impl Line {
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("a replay line always serialises")
    }
}

/// What a replay did, beside its lines.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    pub entries: u64,
    pub value_lists: u64,
    /// Value lists the series table refused (as the daemon would have), with the first reasons.
    pub refused: u64,
    pub refusals: Vec<String>,
    pub timers_fired: u64,
    pub calls: u64,
    pub faults: u64,
    /// Events that reached a rule while it was faulted and waiting out its backoff (lost, as
    /// in service).
    pub dropped: u64,
    /// Virtual time from the first entry to the last.
    pub span: Duration,
}

/// One replayed rule: the daemon's driver, its routing, and where its results come back.
struct Replayed {
    driver: RuleDriver,
    interest: Interest,
    /// Feed lines of what is batched: first and last.
    origins: Option<(String, String)>,
    results: Receiver<CommandResult>,
    results_tx: Sender<CommandResult>,
}

/// A rule receiving a routed item from feed line `origin`.
struct Receiving<'a> {
    rule: &'a mut Replayed,
    origin: &'a str,
}

impl Target for Receiving<'_> {
    fn interest(&mut self) -> &mut Interest {
        &mut self.rule.interest
    }

    fn take_values(&mut self, obs: &Observation) {
        self.rule.driver.push_values(obs);
        self.note_origin();
    }

    fn take_event(&mut self, event: &wit::Event) {
        self.rule.driver.push_event(event.clone());
        self.note_origin();
    }
}

impl Receiving<'_> {
    fn note_origin(&mut self) {
        match &mut self.rule.origins {
            Some((_, last)) => self.origin.clone_into(last),
            None => self.rule.origins = Some((self.origin.to_string(), self.origin.to_string())),
        }
    }
}

/// How a replay treats the commands rules ask for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Each admitted run "ends" at once with this exit status, and the rule gets that result
    /// (an escalation ladder climbs on it). `None`: admitted runs give no result (nothing ran).
    /// Refused runs always give theirs, as in service.
    pub assume_exit: Option<i32>,
}

pub struct Replay {
    max_batch: usize,
    clock: VirtualClock,
    series: Arc<SeriesTable>,
    rules: Vec<Replayed>,
    recorder: Recorder,
    first_ns: Option<u64>,
    /// The time of what is batched, if anything is.
    batch_time: Option<u64>,
    batched: usize,
    summary: Summary,
    /// Compiled rules, until the first entry starts them.
    pending: Vec<RuleSpec>,
    // Last: the compiler's epoch ticker must outlive the instances.
    _compiler: Compiler,
}

/// The least wall time a replayed call gets. The daemon's `call_timeout` (50 ms by default)
/// measures wall time, which a loaded CI machine can take from a call before it has done
/// anything: a replay's verdict must not depend on that. A rule that loops forever is still
/// reported (as a `deadline` fault), only later.
const REPLAY_MIN_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The service's limits, with at least [`REPLAY_MIN_CALL_TIMEOUT`] per call.
fn replay_limits(rules: &crate::config::Rules) -> Limits {
    let limits = Limits::from_config(rules);
    Limits {
        call_timeout: limits.call_timeout.max(REPLAY_MIN_CALL_TIMEOUT),
        ..limits
    }
}

/// Timer events at one virtual instant before a re-armed timer is dropped.
const TIMERS_PER_INSTANT: usize = 1000;

/// Calls with command results one batch may lead to (see [`Replay::deliver`]).
const RESULT_ROUNDS: usize = 16;

/// How many refusal reasons the summary keeps word for word.
const REFUSALS_KEPT: usize = 5;

impl Replay {
    /// Compile the rules at `rules` (a directory of `.wasm` files or one file) with their
    /// config from `config`. They start at the first entry's time.
    pub fn new(config: Config, rules: &Path, options: Options) -> anyhow::Result<Self> {
        let compiler = Compiler::new(None)?;
        let files = if rules.is_dir() {
            rule_files(rules)?
        } else {
            vec![rules.to_path_buf()]
        };
        anyhow::ensure!(!files.is_empty(), "no .wasm rules in {}", rules.display());
        let types = Arc::new(crate::types_db::load(&config.ingest.types_db));
        let limits = SeriesLimits {
            max_series: config.ingest.max_series,
            max_future_intervals: config.ingest.max_future_intervals,
            timeout_intervals: config.ingest.series_timeout,
        };
        let clock = VirtualClock::default();
        let series = Arc::new(SeriesTable::with_limits(types, limits));
        let mut specs = Vec::new();
        for path in &files {
            let name = rule_name(path)
                .with_context(|| format!("{}: a rule is a .wasm file", path.display()))?;
            let compiled = compiler
                .compile_file(path)
                .with_context(|| format!("rule {name}"))?;
            specs.push(RuleSpec {
                name: name.into(),
                config: rule_config(&config.rules, name)?,
                topics_granted: crate::engine::rule::topics_granted(&config.rules, name),
                compiled,
            });
        }
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self {
            max_batch: config.rules.max_batch,
            series,
            rules: Vec::new(),
            recorder: Recorder::new(config, options, clock.clone()),
            clock,
            first_ns: None,
            batch_time: None,
            batched: 0,
            summary: Summary::default(),
            _compiler: compiler,
            pending: specs,
        })
    }

    /// Start every rule at `time_ns`: `init`, `describe`. A rule that cannot start stops the
    /// replay (it would not serve in the daemon either).
    fn start(&mut self, time_ns: u64) -> anyhow::Result<()> {
        self.clock.advance_to(time_ns);
        self.first_ns = Some(time_ns);
        self.recorder.start_at(time_ns);
        let config = self.recorder.config();
        let host = HostParts {
            state: Store::in_memory()?,
            held: Default::default(),
            series: self.series.clone(),
            clock: Clock::Virtual(self.clock.clone()),
            limits: replay_limits(&config.rules),
            history: None,
        };
        let backoff = Backoff {
            first: config.rules.fault_backoff,
            max: config.rules.max_backoff,
        };
        for spec in std::mem::take(&mut self.pending) {
            let started = spec
                .instantiate(&host)
                .map_err(StartError::from)
                .and_then(|i| spec.start(i))
                .with_context(|| format!("rule {} cannot start", spec.name))?;
            let (results_tx, results) = crossbeam_channel::unbounded();
            self.rules.push(Replayed {
                driver: RuleDriver::new(spec, started.instance, host.clone(), backoff),
                interest: Interest::new(Arc::new(started.subscription)),
                origins: None,
                results,
                results_tx,
            });
        }
        // As the daemon does after a start: one call, which carries out what the rules asked
        // for in `init` (timers).
        for i in 0..self.rules.len() {
            self.deliver(i);
        }
        Ok(())
    }

    /// Replay one entry.
    pub fn entry(&mut self, entry: Entry) -> anyhow::Result<()> {
        if self.first_ns.is_none() {
            self.start(entry.time_ns)?;
        }
        // Time never goes back: an entry older than the clock is taken at the clock's time.
        let time = entry.time_ns.max(self.clock.now_ns());
        if self.batch_time.is_some_and(|t| t != time) || self.batched >= self.max_batch {
            self.flush();
        }
        self.fire_timers(time);
        self.clock.advance_to(time);
        self.summary.entries += 1;
        self.summary.span = Duration::from_nanos(time - self.first_ns.unwrap_or(time));
        if let Some(event) = entry.event {
            self.route(event, &entry.origin, time);
        }
        Ok(())
    }

    /// Deliver what is batched; the lines and summary of the whole replay.
    pub fn finish(mut self) -> (Vec<Line>, Summary) {
        self.flush();
        for rule in &mut self.rules {
            rule.driver.stop(&mut self.recorder);
        }
        let r = self.recorder;
        self.summary.calls = r.calls;
        self.summary.faults = r.faults;
        self.summary.dropped = r.dropped;
        (r.lines, self.summary)
    }

    fn route(&mut self, event: Ingested, origin: &str, time: u64) {
        if matches!(event, Ingested::Values(_)) {
            self.summary.value_lists += 1;
        }
        let elapsed = Duration::from_nanos(time - self.first_ns.unwrap_or(time));
        let now = SeriesTable::now_virtual(time, elapsed);
        let targets = self.rules.iter_mut().map(|rule| Receiving { rule, origin });
        if let Err(refused) = route(&self.series, event, now, targets) {
            self.summary.refused += 1;
            if self.summary.refusals.len() < REFUSALS_KEPT {
                self.summary
                    .refusals
                    .push(format!("{origin}: {}", refused.why));
            }
        }
        self.batch_time = Some(time);
        self.batched += 1;
    }

    fn flush(&mut self) {
        for i in 0..self.rules.len() {
            if self.rules[i].driver.batched() > 0 {
                self.deliver(i);
            }
        }
        self.batch_time = None;
        self.batched = 0;
    }

    /// Fire, in time order, every timer due at or before `until`; each in a batch of its own
    /// at its due time (whatever is batched is older, and goes first).
    fn fire_timers(&mut self, until: u64) {
        // A rule that re-arms a timer for "now" from its own timer event would fire it forever
        // at one instant (in service, real time passes meanwhile): bounded per instant.
        let mut instant = (0, 0usize);
        loop {
            let due = self
                .rules
                .iter()
                .enumerate()
                .flat_map(|(i, r)| r.driver.timers().map(move |(name, at)| (at, i, name)))
                .filter(|(at, _, _)| *at <= until)
                .min()
                .map(|(at, i, name)| (at, i, name.to_string()));
            let Some((at, i, name)) = due else { return };
            instant = if instant.0 == at {
                (at, instant.1 + 1)
            } else {
                (at, 1)
            };
            if instant.1 > TIMERS_PER_INSTANT {
                let rule = &mut self.rules[i];
                rule.driver.drop_timer(&name);
                eprintln!(
                    "rule {}: timer `{name}` fired {TIMERS_PER_INSTANT} times at one instant; \
                     dropped",
                    rule.driver.name()
                );
                continue;
            }
            self.flush();
            self.clock.advance_to(at);
            let rule = &mut self.rules[i];
            rule.driver.fire_timer(&name);
            rule.origins = Some((format!("timer `{name}`"), format!("timer `{name}`")));
            self.summary.timers_fired += 1;
            self.deliver(i);
        }
    }

    /// Deliver rule `i`'s batch, then the results of the runs it asked for, each in a call of
    /// its own at the same time (as in service, where they arrive a moment later), up to
    /// [`RESULT_ROUNDS`] rounds: a rule that asks again on every refusal would otherwise
    /// never let virtual time move on.
    fn deliver(&mut self, i: usize) {
        self.call(i);
        for _ in 0..RESULT_ROUNDS {
            let rule = &mut self.rules[i];
            let mut any = false;
            for result in rule.results.try_iter() {
                rule.driver.push_event(result.into());
                any = true;
            }
            if !any {
                return;
            }
            rule.origins = Some(("command results".into(), "command results".into()));
            self.call(i);
        }
        let rule = &mut self.rules[i];
        if rule.results.try_iter().count() > 0 {
            eprintln!(
                "rule {}: still asking after {RESULT_ROUNDS} rounds of command results at \
                 one instant; the rest are dropped",
                rule.driver.name()
            );
        }
    }

    /// One step of rule `i`'s driver: the call the daemon's worker would make now.
    fn call(&mut self, i: usize) {
        let rule = &mut self.rules[i];
        self.recorder.begin(Call {
            results: rule.results_tx.clone(),
            origins: rule.origins.take(),
        });
        if let Some(subscription) = rule.driver.step(&mut self.recorder) {
            rule.interest.set(Arc::new(subscription));
        }
    }
}

/// To the microsecond: finer digits would be noise (a time that went through seconds as an
/// f64, as `medic decode` prints them, keeps about a quarter of a microsecond).
fn rfc3339(ns: u64) -> String {
    let us = i128::from(ns).div_euclid(1_000) * 1_000;
    jiff::Timestamp::from_nanosecond(us)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ns.to_string())
}
