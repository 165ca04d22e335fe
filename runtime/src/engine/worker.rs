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
use super::rule::{HostParts, RuleSpec, StartError, Started, Subscription};
use super::status::{Health, StatusBoard};
use crate::actions::{Effects, Outcome, Request, next_action_id};
use crate::mqtt::MqttRequest;

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
    Outcome(Outcome),
    /// Suspend the instance and end the thread.
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
    actions: Effects,
    status: StatusBoard,
    cfg: WorkerConfig,
    timers: BTreeMap<String, Instant>,
    /// When faulted: when to try a fresh instance, and the wait after that.
    retry: Option<(Instant, Duration)>,
    /// Subscription changes after a re-instantiation are reported here.
    on_subscription: Box<dyn Fn(Subscription) + Send>,
}

pub struct WorkerHandle {
    pub control: Sender<Control>,
    pub thread: std::thread::JoinHandle<()>,
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        spec: RuleSpec,
        started: Started,
        host: HostParts,
        events: Receiver<Queued>,
        actions: Effects,
        status: StatusBoard,
        cfg: WorkerConfig,
        on_subscription: Box<dyn Fn(Subscription) + Send>,
    ) -> std::io::Result<WorkerHandle> {
        let (control_tx, control) = crossbeam_channel::unbounded();
        let name = spec.name.clone();
        let worker = Worker {
            spec,
            instance: Some(started.instance),
            host,
            events,
            control,
            control_tx: control_tx.clone(),
            actions,
            status,
            cfg,
            timers: BTreeMap::new(),
            retry: None,
            on_subscription,
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
            let wait = self
                .next_wakeup()
                .map(|t| t.saturating_duration_since(Instant::now()));
            let wait = wait.unwrap_or(Duration::from_secs(3600));
            select! {
                recv(self.control) -> msg => match msg {
                    Ok(msg) => if !self.handle_control(msg, &mut batch) { return },
                    Err(_) => return self.stop(),
                },
                recv(self.events) -> ev => match ev {
                    Ok(ev) => batch.push(ev),
                    // The dispatcher is gone: the daemon is shutting down.
                    Err(_) => return self.stop(),
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
            if batch.is_empty() {
                continue;
            }
            if self.instance.is_some() {
                self.deliver(&batch);
            } else {
                self.status
                    .count_dropped(&self.spec.name, batch.len() as u64);
            }
            batch.clear();
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
            Control::Outcome(o) => {
                batch.push_event(wit::Event::CommandResult(wit::CommandResult {
                    action_id: o.action_id,
                    service: o.service,
                    command: o.command,
                    code: o.code,
                    signal: o.signal,
                    output: o.output,
                    error: o.error,
                    duration: o.duration.as_nanos() as u64,
                }));
                true
            }
            Control::Stop => {
                self.stop();
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
                // Timers belong to the rule, not the version: the new version keeps them.
                Ok(started.subscription)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn stop(&mut self) {
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
        let rule = &*self.spec.name;
        match action {
            wit::Action::Run(run) => {
                let action_id = next_action_id();
                tracing::info!(
                    rule,
                    action_id,
                    service = run.service,
                    command = run.command,
                    reason = run.reason,
                    "rule asks to run a command"
                );
                let request = Request {
                    origin: self.spec.name.clone(),
                    action_id,
                    service: run.service,
                    command: run.command,
                    reason: run.reason,
                    reply: self.reply_here(),
                };
                if self.actions.commands.send(request).is_err() {
                    tracing::error!(rule, action_id, "executor is gone; command not run");
                }
            }
            wit::Action::Notify(n) => match n.severity {
                wit::Severity::Failure => tracing::error!(rule, "notification: {}", n.message),
                wit::Severity::Warning => tracing::warn!(rule, "notification: {}", n.message),
                wit::Severity::Okay => tracing::info!(rule, "notification: {}", n.message),
            },
            wit::Action::SetTimer(t) => {
                let at = Instant::now() + Duration::from_nanos(t.after);
                self.timers.insert(t.name, at);
            }
            wit::Action::CancelTimer(name) => {
                self.timers.remove(&name);
            }
            wit::Action::Publish(p) => {
                let request = MqttRequest::Publish {
                    rule: self.spec.name.clone(),
                    topic: p.topic,
                    payload: p.payload,
                    retain: p.retain,
                };
                self.send_mqtt(request);
            }
            wit::Action::RunRemote(r) => {
                let action_id = next_action_id();
                tracing::info!(
                    rule,
                    action_id,
                    node = r.node,
                    service = r.service,
                    command = r.command,
                    reason = r.reason,
                    "rule asks another node to run a command"
                );
                let request = MqttRequest::RunRemote {
                    rule: self.spec.name.clone(),
                    action_id,
                    node: r.node,
                    service: r.service,
                    command: r.command,
                    reply: self.reply_here(),
                };
                self.send_mqtt(request);
            }
        }
    }
}

impl Worker {
    /// Where an outcome of this rule's request goes: back into this worker, as an event.
    fn reply_here(&self) -> Box<dyn FnOnce(Outcome) + Send> {
        let control = self.control_tx.clone();
        Box::new(move |outcome| {
            let _ = control.send(Control::Outcome(outcome));
        })
    }

    /// Hand a request to the MQTT client; without one, say why it is refused (and a
    /// `run-remote` still gets its result event, as an error).
    fn send_mqtt(&self, request: MqttRequest) {
        let rule = &*self.spec.name;
        let request = match &self.actions.mqtt {
            Some(mqtt) => match mqtt.send(request) {
                Ok(()) => return,
                Err(back) => back.0,
            },
            None => request,
        };
        request.refuse(rule, "MQTT is not configured on this node");
    }
}

/// For use by the registry: make the events queue of a new worker.
pub fn queue(capacity: usize) -> (Sender<Queued>, Receiver<Queued>) {
    crossbeam_channel::bounded(capacity)
}
