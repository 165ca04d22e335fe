//! One rule's life, written once for the daemon's worker thread and for `medic replay`: its
//! instance, its batch, the act step (an action becomes a decision on a [`Port`], or a timer),
//! its timers, the first call after every start, and the restart with backoff after a fault.
//!
//! Time is the driver's [`Ticks`]: monotonic in service, the feed's virtual clock in replay, so
//! a replayed rule's timers fire and its restarts happen when they would have in service. What
//! differs between the two lies behind the port: where decisions go, where results come back,
//! and how faults are reported (the status board and the audit history in service, output lines
//! in replay). How events are gathered into batches is the caller's (a queue in service, the
//! feed's instants in replay).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::batch::{BatchBuilder, Observation};
use super::bindings as wit;
use super::clock::Ticks;
use super::instance::RuleInstance;
use super::port::Decision;
use super::rule::{HostParts, RuleSpec, StartError, Subscription};
use crate::event::{CommandRequest, ReplyTo};

/// Where a driven rule's decisions go, and who hears how it is doing.
pub trait Port {
    /// The number of a new `run` or `run-remote` (process-wide in service, the replay's own
    /// in replay, so a replay numbers the same way every time).
    fn action_id(&mut self) -> u64;
    /// Where the result of request `action_id` goes: back to this rule, as an event of a later
    /// call.
    fn reply_to(&mut self, action_id: u64, service: &str, command: &str) -> ReplyTo;
    /// A decision leaves the rule.
    fn decide(&mut self, decision: Decision);
    /// How the rule is doing: a call returned or faulted, a restart failed, events were lost.
    fn report(&mut self, rule: &RuleSpec, report: Report);
}

/// What the driver tells its port about the rule.
#[derive(Debug)]
pub enum Report {
    /// A call returned: `events` delivered in `took` (the rule is running, also if it had
    /// faulted before).
    Delivered { events: usize, took: Duration },
    /// A call faulted: its `events` are lost, and a fresh instance is tried after `retry_in`.
    Faulted {
        kind: &'static str,
        error: String,
        events: usize,
        retry_in: Duration,
    },
    /// A fresh instance after a fault was made.
    Restarted,
    /// A fresh instance could not be started; tried again after `retry_in`.
    NotRestarted { error: String, retry_in: Duration },
    /// Events that came while no instance could take them.
    Dropped { events: usize },
}

/// The wait before re-instantiating a faulted rule: `first`, doubling up to `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

pub struct RuleDriver {
    spec: RuleSpec,
    instance: Option<RuleInstance>,
    host: HostParts,
    ticks: Ticks,
    batch: BatchBuilder,
    /// Due times, in ticks. They belong to the rule, not to an instance or a build: a swap or
    /// a restart keeps them.
    timers: BTreeMap<String, u64>,
    /// When faulted: when (in ticks) to try a fresh instance, and the wait after that. Kept
    /// until a call succeeds, so a rule that faults on every batch backs off further.
    retry: Option<(u64, Duration)>,
    /// An instance just started: its first call happens even with nothing batched, so what
    /// it asked for in `init` (timers) is carried out now rather than at its first event.
    started: bool,
    backoff: Backoff,
}

impl RuleDriver {
    /// Drive `instance`, an instance of `spec` that has been through `init` and `describe`.
    pub fn new(spec: RuleSpec, instance: RuleInstance, host: HostParts, backoff: Backoff) -> Self {
        Self {
            ticks: Ticks::for_clock(&host.clock),
            spec,
            instance: Some(instance),
            host,
            batch: BatchBuilder::default(),
            timers: BTreeMap::new(),
            retry: None,
            started: true,
            backoff,
        }
    }

    pub fn name(&self) -> &Arc<str> {
        &self.spec.name
    }

    pub fn push_values(&mut self, obs: &Observation) {
        self.batch.push_values(obs);
    }

    /// Add a batch the dispatcher built after what is batched; returns an emptied batch to
    /// reuse.
    pub fn append(&mut self, chunk: BatchBuilder) -> BatchBuilder {
        self.batch.append(chunk)
    }

    pub fn push_event(&mut self, event: wit::Event) {
        self.batch.push_event(event);
    }

    /// Events batched for the next call.
    pub fn batched(&self) -> usize {
        self.batch.len()
    }

    /// When, in ticks, the driver wants to be stepped without new events: its next timer or
    /// its next restart.
    pub fn next_wakeup(&self) -> Option<u64> {
        let timer = self.timers.values().min().copied();
        let retry = self.retry.map(|(at, _)| at);
        match (timer, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The ticks now (what a wait until [`next_wakeup`](Self::next_wakeup) is measured from).
    pub fn now(&self) -> u64 {
        self.ticks.now()
    }

    /// The rule's timers: name and due time in ticks.
    pub fn timers(&self) -> impl Iterator<Item = (&str, u64)> {
        self.timers.iter().map(|(name, at)| (name.as_str(), *at))
    }

    /// Batch the timer events of every timer due now.
    pub fn fire_due_timers(&mut self) {
        let now = self.ticks.now();
        while let Some(name) = self
            .timers
            .iter()
            .find(|(_, at)| **at <= now)
            .map(|(name, _)| name.clone())
        {
            self.fire_timer(&name);
        }
    }

    /// Batch timer `name`'s event, and forget the timer (a rule re-arms it if it wants).
    pub fn fire_timer(&mut self, name: &str) {
        if let Some((name, _)) = self.timers.remove_entry(name) {
            self.batch.push_event(wit::Event::Timer(name));
        }
    }

    /// Forget timer `name` without firing it.
    pub fn drop_timer(&mut self, name: &str) {
        self.timers.remove(name);
    }

    /// Restart a faulted rule if its backoff has passed, then deliver what is batched (also
    /// nothing, as the first call after a start), or drop it if no instance can take it.
    /// Returns the subscription of a fresh instance: the caller routes by it from now on.
    pub fn step(&mut self, port: &mut impl Port) -> Option<Subscription> {
        let restarted = if self.instance.is_none() {
            self.restart_if_due(port)
        } else {
            None
        };
        if self.instance.is_some() {
            if std::mem::take(&mut self.started) || !self.batch.is_empty() {
                self.deliver(port);
            }
        } else if !self.batch.is_empty() {
            port.report(
                &self.spec,
                Report::Dropped {
                    events: self.batch.len(),
                },
            );
        }
        self.batch.clear();
        restarted
    }

    /// Replace the running version with `spec`'s `instance` (not yet started). Deliver what is
    /// batched first (with [`step`](Self::step)): it belongs to the old version. On refusal the
    /// old version keeps serving.
    pub fn swap(&mut self, spec: RuleSpec, instance: RuleInstance) -> Result<Subscription, String> {
        // Let the old version flush its memory into state before the new one reads it.
        if let Some(old) = &mut self.instance
            && let Err(fault) = old.suspend()
        {
            tracing::warn!(
                rule = &*self.spec.name,
                "old version faulted in suspend: {fault}"
            );
            self.instance = None;
        }
        let started = spec.start(instance).map_err(|e| e.to_string())?;
        self.spec = spec;
        self.instance = Some(started.instance);
        self.retry = None;
        self.started = true;
        Ok(started.subscription)
    }

    /// Deliver what is batched, then let the instance save what it keeps in memory.
    pub fn stop(&mut self, port: &mut impl Port) {
        if !self.batch.is_empty() {
            self.step(port);
        }
        if let Some(instance) = &mut self.instance
            && let Err(fault) = instance.suspend()
        {
            tracing::warn!(rule = &*self.spec.name, "faulted in suspend: {fault}");
        }
    }

    fn restart_if_due(&mut self, port: &mut impl Port) -> Option<Subscription> {
        let (at, wait) = self.retry?;
        let now = self.ticks.now();
        if now < at {
            return None;
        }
        let next = (wait * 2).min(self.backoff.max);
        let started = self
            .spec
            .instantiate(&self.host)
            .map_err(StartError::from)
            .and_then(|i| self.spec.start(i));
        // Kept until a call succeeds (see `retry`).
        self.retry = Some((now.saturating_add(nanos(next)), next));
        match started {
            Ok(started) => {
                self.instance = Some(started.instance);
                self.started = true;
                port.report(&self.spec, Report::Restarted);
                Some(started.subscription)
            }
            Err(e) => {
                port.report(
                    &self.spec,
                    Report::NotRestarted {
                        error: e.to_string(),
                        retry_in: next,
                    },
                );
                None
            }
        }
    }

    fn deliver(&mut self, port: &mut impl Port) {
        let Some(instance) = &mut self.instance else {
            return;
        };
        let events = self.batch.len();
        let started = Instant::now();
        match instance.on_events(self.batch.batch()) {
            Ok(actions) => {
                self.retry = None;
                port.report(
                    &self.spec,
                    Report::Delivered {
                        events,
                        took: started.elapsed(),
                    },
                );
                for action in actions {
                    self.act(action, port);
                }
            }
            Err(fault) => {
                // A trapped component can never be entered again: drop its Store.
                self.instance = None;
                let wait = self.retry.map_or(self.backoff.first, |(_, w)| w);
                self.retry = Some((self.ticks.now().saturating_add(nanos(wait)), wait));
                port.report(
                    &self.spec,
                    Report::Faulted {
                        kind: fault.kind(),
                        error: fault.to_string(),
                        events,
                        retry_in: wait,
                    },
                );
            }
        }
    }

    /// One action: a timer stays with the rule; everything else is a decision for the port.
    fn act(&mut self, action: wit::Action, port: &mut impl Port) {
        let rule = self.spec.name.clone();
        let decision = match action {
            wit::Action::Run(run) => {
                let action_id = port.action_id();
                Decision::Run(CommandRequest {
                    reply: port.reply_to(action_id, &run.service, &run.command),
                    origin: rule,
                    build: Some(self.spec.compiled.hash.clone()),
                    action_id,
                    service: run.service,
                    command: run.command,
                    reason: run.reason,
                })
            }
            wit::Action::RunRemote(r) => {
                let action_id = port.action_id();
                Decision::RunRemote {
                    reply: port.reply_to(action_id, &r.service, &r.command),
                    rule,
                    action_id,
                    node: r.node,
                    service: r.service,
                    command: r.command,
                    reason: r.reason,
                }
            }
            wit::Action::Publish(p) => Decision::Publish {
                rule,
                topic: p.topic,
                payload: p.payload,
                retain: p.retain,
            },
            wit::Action::Emit(e) => Decision::Emit {
                rule,
                sink: e.sink,
                record: e.record,
            },
            wit::Action::Notify(n) => Decision::Notify {
                rule,
                severity: n.severity.into(),
                message: n.message,
                source: n.source.and_then(wit::notify_source),
            },
            wit::Action::SetTimer(t) => {
                let at = self.ticks.now().saturating_add(t.after);
                self.timers.insert(t.name, at);
                return;
            }
            wit::Action::CancelTimer(name) => {
                self.timers.remove(&name);
                return;
            }
        };
        port.decide(decision);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
