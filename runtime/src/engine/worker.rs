//! One thread per rule. It owns the rule's instance (one wasmtime `Store`), drains the rule's
//! queue into batches, runs its timers, carries its actions out, swaps in new versions between
//! batches, and re-instantiates it with backoff after a fault. The queue belongs to the worker,
//! not to an instance, so a swap or a fault never loses queued events.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};

use super::batch::{BatchBuilder, Queued};
use super::bindings as wit;
use super::instance::RuleInstance;
use super::port::{Decision, EffectPort};
use super::rule::{HostParts, RuleSpec, StartError, Started, Subscription};
use super::status::{Health, StatusBoard};
use crate::event::{CommandRequest, CommandResult, ReplyTo, next_action_id};

/// Messages that must never be dropped, unlike events.
pub enum Control {
    /// Replace the running version. `reply` gets the new subscription or why it was refused
    /// (the old version keeps serving then).
    Swap {
        spec: RuleSpec,
        instance: RuleInstance,
        reply: Sender<Result<Subscription, String>>,
    },
    /// A command this rule asked for has finished.
    Result(CommandResult),
    /// Deliver every event already queued, then say so (shutdown: before commands drain).
    Drain(Sender<()>),
    /// Deliver what is batched (results included), suspend the instance and end the thread.
    Stop,
}

pub struct WorkerConfig {
    pub max_batch: usize,
    pub fault_backoff: Duration,
    pub max_backoff: Duration,
}

pub struct Worker {
    spec: RuleSpec,
    instance: Option<RuleInstance>,
    host: HostParts,
    events: Receiver<Queued>,
    control: Receiver<Control>,
    control_tx: Sender<Control>,
    effects: EffectPort,
    status: StatusBoard,
    cfg: WorkerConfig,
    timers: BTreeMap<String, Instant>,
    /// When faulted: when to try a fresh instance, and the wait after that.
    retry: Option<(Instant, Duration)>,
    /// An instance just started: call it once with nothing, so what it asked for in `init`
    /// (timers) is carried out now rather than at its first event.
    started: bool,
    /// Subscription changes after a re-instantiation are reported here.
    on_subscription: Box<dyn Fn(Subscription) + Send>,
}

pub struct WorkerHandle {
    pub control: Sender<Control>,
    pub thread: std::thread::JoinHandle<()>,
}

/// Everything a worker is started with.
pub struct WorkerParts {
    pub spec: RuleSpec,
    pub started: Started,
    pub host: HostParts,
    pub events: Receiver<Queued>,
    pub effects: EffectPort,
    pub status: StatusBoard,
    pub cfg: WorkerConfig,
    /// Subscription changes after a re-instantiation are reported here.
    pub on_subscription: Box<dyn Fn(Subscription) + Send>,
}

impl Worker {
    pub fn spawn(parts: WorkerParts) -> std::io::Result<WorkerHandle> {
        let (control_tx, control) = crossbeam_channel::unbounded();
        let name = parts.spec.name.clone();
        let worker = Worker {
            spec: parts.spec,
            instance: Some(parts.started.instance),
            host: parts.host,
            events: parts.events,
            control,
            control_tx: control_tx.clone(),
            effects: parts.effects,
            status: parts.status,
            cfg: parts.cfg,
            timers: BTreeMap::new(),
            retry: None,
            started: true,
            on_subscription: parts.on_subscription,
        };
        let thread = std::thread::Builder::new()
            .name(format!("rule:{name}"))
            .spawn(move || worker.run())?;
        Ok(WorkerHandle {
            control: control_tx,
            thread,
        })
    }

    fn run(mut self) {
        let mut batch = BatchBuilder::default();
        loop {
            if std::mem::take(&mut self.started) {
                // Everything batched was delivered at the end of the last round: an empty call.
                self.deliver(&batch);
            }
            let wait = self
                .next_wakeup()
                .map(|t| t.saturating_duration_since(Instant::now()));
            let wait = wait.unwrap_or(Duration::from_secs(3600));
            select! {
                recv(self.control) -> msg => match msg {
                    Ok(msg) => if !self.handle_control(msg, &mut batch) { return },
                    Err(_) => return self.stop(&mut batch),
                },
                recv(self.events) -> ev => match ev {
                    Ok(ev) => batch.push(ev),
                    // The dispatcher is gone (shutdown): results may still come, and the
                    // registry says when to stop.
                    Err(_) => self.events = crossbeam_channel::never(),
                },
                default(wait) => {}
            }
            // Results and swaps that arrived meanwhile come first: they are rarer and decide
            // which version handles the events.
            while let Ok(msg) = self.control.try_recv() {
                if !self.handle_control(msg, &mut batch) {
                    return;
                }
            }
            while batch.len() < self.cfg.max_batch {
                match self.events.try_recv() {
                    Ok(ev) => batch.push(ev),
                    Err(_) => break,
                }
            }
            self.fire_timers(&mut batch);
            if self.instance.is_none() {
                self.try_restart();
            }
            if !batch.is_empty() {
                self.deliver_or_drop(&mut batch);
            }
        }
    }

    /// Returns false when the worker must end.
    fn handle_control(&mut self, msg: Control, batch: &mut BatchBuilder) -> bool {
        match msg {
            Control::Swap {
                spec,
                instance,
                reply,
            } => {
                // Events already batched belong to the old version.
                if !batch.is_empty() && self.instance.is_some() {
                    self.deliver(batch);
                    batch.clear();
                }
                let _ = reply.send(self.swap(spec, instance));
                true
            }
            Control::Result(r) => {
                batch.push_event(r.into());
                true
            }
            Control::Drain(done) => {
                self.drain(batch);
                let _ = done.send(());
                true
            }
            Control::Stop => {
                self.stop(batch);
                false
            }
        }
    }

    fn swap(&mut self, spec: RuleSpec, instance: RuleInstance) -> Result<Subscription, String> {
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
        match spec.start(instance) {
            Ok(started) => {
                self.spec = spec;
                self.instance = Some(started.instance);
                self.retry = None;
                self.started = true;
                // Timers belong to the rule, not the version: the new version keeps them.
                Ok(started.subscription)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Deliver everything queued now, in batches.
    fn drain(&mut self, batch: &mut BatchBuilder) {
        loop {
            while batch.len() < self.cfg.max_batch {
                match self.events.try_recv() {
                    Ok(ev) => batch.push(ev),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                return;
            }
            self.deliver_or_drop(batch);
        }
    }

    fn deliver_or_drop(&mut self, batch: &mut BatchBuilder) {
        if self.instance.is_some() {
            self.deliver(batch);
        } else {
            self.status
                .count_dropped(&self.spec.name, batch.len() as u64);
        }
        batch.clear();
    }

    fn stop(&mut self, batch: &mut BatchBuilder) {
        if !batch.is_empty() {
            self.deliver_or_drop(batch);
        }
        if let Some(instance) = &mut self.instance
            && let Err(fault) = instance.suspend()
        {
            tracing::warn!(
                rule = &*self.spec.name,
                "faulted in suspend at shutdown: {fault}"
            );
        }
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let timer = self.timers.values().min().copied();
        let retry = self.retry.map(|(at, _)| at);
        match (timer, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn fire_timers(&mut self, batch: &mut BatchBuilder) {
        let now = Instant::now();
        let due: Vec<String> = self
            .timers
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            self.timers.remove(&name);
            batch.push_event(wit::Event::Timer(name));
        }
    }

    fn deliver(&mut self, batch: &BatchBuilder) {
        let Some(instance) = &mut self.instance else {
            return;
        };
        let started = Instant::now();
        match instance.on_events(batch.batch()) {
            Ok(actions) => {
                self.status
                    .count_batch(&self.spec.name, batch.len() as u64, started.elapsed());
                if self.retry.take().is_some() || self.status.is_faulted(&self.spec.name) {
                    self.status.set_health(&self.spec.name, Health::Running);
                }
                for action in actions {
                    self.act(action);
                }
            }
            Err(fault) => {
                // A trapped component can never be entered again: drop its Store.
                self.instance = None;
                let wait = self.retry.map_or(self.cfg.fault_backoff, |(_, w)| w);
                tracing::error!(
                    rule = &*self.spec.name,
                    batch = batch.len(),
                    "rule faulted: {fault}; retrying in {wait:?} (the batch is dropped)"
                );
                self.host.record_fault(
                    &self.spec.name,
                    fault.kind(),
                    Some(&self.spec.compiled.hash),
                    format!("faulted: {fault}; {} events dropped", batch.len()),
                );
                self.status
                    .count_dropped(&self.spec.name, batch.len() as u64);
                self.status.set_health(
                    &self.spec.name,
                    Health::Faulted {
                        reason: fault.to_string(),
                        retry_in: wait,
                    },
                );
                self.retry = Some((Instant::now() + wait, wait));
            }
        }
    }

    /// Re-instantiate after a fault once the backoff has passed; on failure, wait longer.
    fn try_restart(&mut self) {
        let Some((at, wait)) = self.retry else { return };
        if Instant::now() < at {
            return;
        }
        let result = self
            .spec
            .instantiate(&self.host)
            .map_err(StartError::from)
            .and_then(|i| self.spec.start(i));
        let next = (wait * 2).min(self.cfg.max_backoff);
        match result {
            Ok(started) => {
                tracing::info!(
                    rule = &*self.spec.name,
                    "rule re-instantiated after a fault"
                );
                self.instance = Some(started.instance);
                self.started = true;
                // Keep `retry` until a batch succeeds, so a rule that faults on every batch
                // backs off further instead of retrying at the first interval forever.
                self.retry = Some((Instant::now() + next, next));
                (self.on_subscription)(started.subscription);
            }
            Err(e) => {
                tracing::error!(
                    rule = &*self.spec.name,
                    "rule could not be restarted: {e}; retrying in {next:?}"
                );
                self.host.record_fault(
                    &self.spec.name,
                    "restart",
                    Some(&self.spec.compiled.hash),
                    format!("could not be restarted: {e}"),
                );
                self.status.set_health(
                    &self.spec.name,
                    Health::Faulted {
                        reason: e.to_string(),
                        retry_in: next,
                    },
                );
                self.retry = Some((Instant::now() + next, next));
            }
        }
    }

    fn act(&mut self, action: wit::Action) {
        let rule = self.spec.name.clone();
        let decision = match action {
            wit::Action::Run(run) => {
                let action_id = next_action_id();
                tracing::info!(
                    rule = &*rule,
                    action_id,
                    service = run.service,
                    command = run.command,
                    reason = run.reason,
                    "rule asks to run a command"
                );
                Decision::Run(CommandRequest {
                    reply: self.reply_here(action_id, &run.service, &run.command),
                    origin: rule,
                    build: Some(self.spec.compiled.hash.as_str().into()),
                    action_id,
                    service: run.service,
                    command: run.command,
                    reason: run.reason,
                })
            }
            wit::Action::RunRemote(r) => {
                let action_id = next_action_id();
                tracing::info!(
                    rule = &*rule,
                    action_id,
                    node = r.node,
                    service = r.service,
                    command = r.command,
                    reason = r.reason,
                    "rule asks another node to run a command"
                );
                Decision::RunRemote {
                    reply: self.reply_here(action_id, &r.service, &r.command),
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
            // Timers belong to the rule's worker, not to the outside world.
            wit::Action::SetTimer(t) => {
                let at = Instant::now() + Duration::from_nanos(t.after);
                self.timers.insert(t.name, at);
                return;
            }
            wit::Action::CancelTimer(name) => {
                self.timers.remove(&name);
                return;
            }
        };
        (self.effects)(decision);
    }

    /// Where the result of this rule's request goes: back into this worker, as an event.
    fn reply_here(&self, action_id: u64, service: &str, command: &str) -> ReplyTo {
        let control = self.control_tx.clone();
        ReplyTo::new(action_id, service, command, move |result| {
            let _ = control.send(Control::Result(result));
        })
    }
}
