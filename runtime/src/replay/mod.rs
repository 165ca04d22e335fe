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
//! Routing, rates, batches and the gate are the daemon's own ([`Interest`], [`SeriesTable`],
//! [`BatchBuilder`], [`Gate`]); rule state lives in memory, so a replay never touches a
//! daemon's database.

pub mod expect;
pub mod feed;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::config::Config;
use crate::effects::policy::Gate;
use crate::engine::batch::{BatchBuilder, Queued};
use crate::engine::bindings as wit;
use crate::engine::clock::{Clock, VirtualClock};
use crate::engine::compiler::Compiler;
use crate::engine::instance::{Limits, RuleInstance};
use crate::engine::interest::Interest;
use crate::engine::registry::{rule_files, rule_name};
use crate::engine::rule::{HostParts, RuleSpec, StartError, rule_config};
use crate::engine::series::{SeriesLimits, SeriesTable};
use crate::event::Ingested;
use crate::store::Store;
use feed::Entry;

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
    /// Virtual time from the first entry to the last.
    pub span: Duration,
}

struct Replayed {
    spec: RuleSpec,
    instance: Option<RuleInstance>,
    interest: Interest,
    batch: BatchBuilder,
    /// Due times on the virtual clock.
    timers: BTreeMap<String, u64>,
    /// Feed lines of what is batched: first and last.
    origins: Option<(String, String)>,
    /// Results of this rule's runs, for its next call.
    results: Vec<crate::event::CommandResult>,
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
    config: Config,
    options: Options,
    next_action_id: u64,
    clock: VirtualClock,
    host: HostParts,
    rules: Vec<Replayed>,
    gate: Gate,
    /// The gate counts in `Instant`s: virtual nanoseconds are laid out from this one.
    origin: Instant,
    first_ns: Option<u64>,
    /// The time of what is batched, if anything is.
    batch_time: Option<u64>,
    batched: usize,
    lines: Vec<Line>,
    summary: Summary,
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
        let host = HostParts {
            state: Store::in_memory()?,
            held: Default::default(),
            series: Arc::new(SeriesTable::with_limits(types, limits)),
            clock: Clock::Virtual(clock.clone()),
            limits: replay_limits(&config.rules),
            history: None,
        };
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
        let rules = specs
            .into_iter()
            .map(|spec| Replayed {
                spec,
                instance: None,
                interest: Interest::new(Arc::new(crate::engine::rule::Subscription::none())),
                batch: BatchBuilder::default(),
                timers: BTreeMap::new(),
                origins: None,
                results: Vec::new(),
            })
            .collect();
        Ok(Self {
            config,
            options,
            next_action_id: 1,
            clock,
            host,
            rules,
            gate: Gate::default(),
            origin: Instant::now(),
            first_ns: None,
            batch_time: None,
            batched: 0,
            lines: Vec::new(),
            summary: Summary::default(),
            _compiler: compiler,
        })
    }

    /// Start every rule at `time_ns`: `init`, `describe`. A rule that cannot start stops the
    /// replay (it would not serve in the daemon either).
    fn start(&mut self, time_ns: u64) -> anyhow::Result<()> {
        self.clock.advance_to(time_ns);
        self.first_ns = Some(time_ns);
        for rule in &mut self.rules {
            let started = rule
                .spec
                .instantiate(&self.host)
                .map_err(StartError::from)
                .and_then(|i| rule.spec.start(i))
                .with_context(|| format!("rule {} cannot start", rule.spec.name))?;
            rule.interest.set(Arc::new(started.subscription));
            rule.instance = Some(started.instance);
        }
        // As the daemon does after a start: one empty call, which carries out what the rules
        // asked for in `init` (timers).
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
        if self.batch_time.is_some_and(|t| t != time) || self.batched >= self.config.rules.max_batch
        {
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
            if let Some(instance) = &mut rule.instance {
                let _ = instance.suspend();
            }
        }
        (self.lines, self.summary)
    }

    fn route(&mut self, event: Ingested, origin: &str, time: u64) {
        let to = |rule: &mut Replayed, item: Queued| {
            rule.batch.push(item);
            match &mut rule.origins {
                Some((_, last)) => origin.clone_into(last),
                None => rule.origins = Some((origin.to_string(), origin.to_string())),
            }
        };
        match event {
            Ingested::Values(vl) => {
                self.summary.value_lists += 1;
                let elapsed = Duration::from_nanos(time - self.first_ns.unwrap_or(time));
                let now = SeriesTable::now_virtual(time, elapsed);
                match self.host.series.observe(&vl, now) {
                    Ok(observed) => {
                        for rule in &mut self.rules {
                            if rule.interest.wants_values(observed.slot, &observed.key) {
                                to(rule, Queued::Values(observed.obs.clone()));
                            }
                        }
                    }
                    Err(why) => {
                        self.summary.refused += 1;
                        if self.summary.refusals.len() < REFUSALS_KEPT {
                            self.summary.refusals.push(format!("{origin}: {why}"));
                        }
                    }
                }
            }
            Ingested::Notification(n) => {
                let key = n.identifier.to_string();
                let event = wit::Event::from(n);
                for rule in &mut self.rules {
                    if rule.interest.wants_notification(&key) {
                        to(rule, Queued::Event(event.clone()));
                    }
                }
            }
            Ingested::Mqtt(m) => {
                let topic = m.topic.clone();
                let event = wit::Event::from(m);
                for rule in &mut self.rules {
                    if rule.interest.wants_topic(&topic) {
                        to(rule, Queued::Event(event.clone()));
                    }
                }
            }
        }
        self.batch_time = Some(time);
        self.batched += 1;
    }

    fn flush(&mut self) {
        for i in 0..self.rules.len() {
            if !self.rules[i].batch.is_empty() {
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
                .flat_map(|(i, r)| r.timers.iter().map(move |(name, at)| (*at, i, name)))
                .filter(|(at, _, _)| *at <= until)
                .min()
                .map(|(at, i, name)| (at, i, name.clone()));
            let Some((at, i, name)) = due else { return };
            instant = if instant.0 == at {
                (at, instant.1 + 1)
            } else {
                (at, 1)
            };
            if instant.1 > TIMERS_PER_INSTANT {
                let rule = &mut self.rules[i];
                rule.timers.remove(&name);
                eprintln!(
                    "rule {}: timer `{name}` fired {TIMERS_PER_INSTANT} times at one instant; \
                     dropped",
                    rule.spec.name
                );
                continue;
            }
            self.flush();
            self.clock.advance_to(at);
            let rule = &mut self.rules[i];
            rule.timers.remove(&name);
            rule.batch.push_event(wit::Event::Timer(name.clone()));
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
            let results = std::mem::take(&mut self.rules[i].results);
            if results.is_empty() {
                return;
            }
            let rule = &mut self.rules[i];
            for r in results {
                rule.batch.push_event(r.into());
            }
            rule.origins = Some(("command results".into(), "command results".into()));
            self.call(i);
        }
        let rule = &mut self.rules[i];
        if !rule.results.is_empty() {
            rule.results.clear();
            let name = rule.spec.name.to_string();
            eprintln!(
                "rule {name}: still asking after {RESULT_ROUNDS} rounds of command results at \
                 one instant; the rest are dropped"
            );
        }
    }

    fn call(&mut self, i: usize) {
        let now = self.clock.now_ns();
        let rule = &mut self.rules[i];
        let origins = rule.origins.take();
        if rule.instance.is_none() {
            // As after a fault in service (without the backoff: virtual time has no wait).
            let started = rule
                .spec
                .instantiate(&self.host)
                .map_err(StartError::from)
                .and_then(|inst| rule.spec.start(inst));
            match started {
                Ok(started) => {
                    rule.interest.set(Arc::new(started.subscription));
                    rule.instance = Some(started.instance);
                }
                Err(e) => {
                    let line = fault_line(now, &rule.spec.name, "restart", e.to_string(), origins);
                    rule.batch.clear();
                    self.summary.faults += 1;
                    self.lines.push(line);
                    return;
                }
            }
        }
        let instance = rule.instance.as_mut().expect("started above");
        self.summary.calls += 1;
        let result = instance.on_events(rule.batch.batch());
        rule.batch.clear();
        match result {
            Ok(actions) => {
                for action in actions {
                    self.act(i, action, now);
                }
            }
            Err(fault) => {
                rule.instance = None;
                let line = fault_line(
                    now,
                    &rule.spec.name,
                    fault.kind(),
                    fault.to_string(),
                    origins,
                );
                self.summary.faults += 1;
                self.lines.push(line);
            }
        }
    }

    fn act(&mut self, i: usize, action: wit::Action, now: u64) {
        let rule = &mut self.rules[i];
        let what = match action {
            wit::Action::Run(run) => {
                let at = self.origin + Duration::from_nanos(now - self.first_ns.unwrap_or(now));
                let action_id = self.next_action_id;
                self.next_action_id += 1;
                let result = |code: Option<i32>, error: Option<String>| {
                    let mut r = crate::event::CommandResult::error(
                        action_id,
                        run.service.clone(),
                        run.command.clone(),
                        String::new(),
                    );
                    r.run.code = code;
                    r.run.error = error;
                    r
                };
                // Nothing runs: each admitted run ends at once (successfully, unless
                // `assume_exit` says otherwise), so its concurrency never refuses the next.
                let verdict = match self
                    .gate
                    .admit(&self.config, &run.service, &run.command, at)
                {
                    Ok((_, admitted)) => {
                        let failed = self.options.assume_exit.is_some_and(|c| c != 0);
                        self.gate.finish(&self.config, admitted, failed, at);
                        if let Some(code) = self.options.assume_exit {
                            rule.results.push(result(Some(code), None));
                        }
                        None
                    }
                    Err(refusal) => {
                        let why = refusal.to_string();
                        rule.results.push(result(None, Some(why.clone())));
                        Some(why)
                    }
                };
                What::Run {
                    service: run.service,
                    command: run.command,
                    reason: run.reason,
                    gate: if verdict.is_some() { "refused" } else { "run" },
                    why: verdict,
                }
            }
            wit::Action::RunRemote(r) => What::RunRemote {
                node: r.node,
                service: r.service,
                command: r.command,
                reason: r.reason,
            },
            wit::Action::Publish(p) => {
                let why = match &self.config.mqtt {
                    Some(m) => {
                        crate::effects::mqtt::publish_refusal(&m.grants, &rule.spec.name, &p.topic)
                    }
                    None => Some("MQTT is not configured ([mqtt])".into()),
                };
                What::Publish {
                    topic: p.topic,
                    payload: String::from_utf8_lossy(&p.payload).into_owned(),
                    retain: p.retain,
                    gate: if why.is_some() { "refused" } else { "publish" },
                    why,
                }
            }
            wit::Action::Emit(e) => {
                let why = crate::effects::sinks::emit_refusal(
                    &self.config.rules.grants,
                    &self.config.sinks,
                    &rule.spec.name,
                    &e.sink,
                );
                What::Emit {
                    sink: e.sink,
                    record: String::from_utf8_lossy(&e.record).into_owned(),
                    gate: if why.is_some() { "refused" } else { "emit" },
                    why,
                }
            }
            wit::Action::Notify(n) => {
                let source = n.source.and_then(wit::notify_source);
                let why = source.as_ref().and_then(|s| {
                    crate::effects::notify_source_refusal(
                        &self.config.rules.grants,
                        &rule.spec.name,
                        s,
                    )
                });
                What::Notify {
                    severity: crate::event::Severity::from(n.severity).as_str(),
                    message: n.message,
                    source: source.filter(|_| why.is_none()).map(|s| s.to_string()),
                    why,
                }
            }
            wit::Action::SetTimer(t) => {
                rule.timers.insert(t.name, now.saturating_add(t.after));
                return;
            }
            wit::Action::CancelTimer(name) => {
                rule.timers.remove(&name);
                return;
            }
        };
        self.lines.push(Line {
            time: rfc3339(now),
            rule: rule.spec.name.to_string(),
            what,
        });
    }
}

fn fault_line(
    now: u64,
    rule: &str,
    kind: &'static str,
    error: String,
    origins: Option<(String, String)>,
) -> Line {
    let events = match origins {
        Some((first, last)) if first == last => first,
        Some((first, last)) => format!("{first} .. {last}"),
        None => String::new(),
    };
    Line {
        time: rfc3339(now),
        rule: rule.to_string(),
        what: What::Fault {
            kind,
            error,
            events,
        },
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
