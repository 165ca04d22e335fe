//! One thread per rule in service: it drains the rule's queue into batches and hands them to the
//! rule's [`RuleDriver`] (the instance, timers, the act step, restarts after a fault: the same
//! code `medic replay` runs), swaps in new versions between batches, and plugs the driver into
//! the daemon's effects and status board. The queue belongs to the worker, not to an instance,
//! so a swap or a fault never loses queued events.

use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, select};

use super::driver::{Backoff, Port, Report, RuleDriver};
use super::instance::RuleInstance;
use super::port::{Decision, EffectPort};
use super::queue::QueueReceiver;
use super::rule::{HostParts, RuleSpec, Started, Subscription};
use super::status::{Health, RuleMeter, StatusBoard};
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
    pub backoff: Backoff,
}

pub struct Worker {
    driver: RuleDriver,
    port: ServicePort,
    events: QueueReceiver,
    control: Receiver<Control>,
    max_batch: usize,
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
    pub events: QueueReceiver,
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
            port: ServicePort {
                meter: parts.status.meter(&name),
                effects: parts.effects,
                status: parts.status,
                host: parts.host.clone(),
                control: control_tx.clone(),
            },
            driver: RuleDriver::new(
                parts.spec,
                parts.started.instance,
                parts.host,
                parts.cfg.backoff,
            ),
            events: parts.events,
            control,
            max_batch: parts.cfg.max_batch,
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
        loop {
            // The first call after a start, a restart that is due, what is batched.
            self.step();
            // A chunk larger than a batch left events behind: take them now.
            let wait = if self.events.has_taken() {
                Duration::ZERO
            } else {
                self.driver
                    .next_wakeup()
                    .map_or(Duration::from_secs(3600), |at| {
                        Duration::from_nanos(at.saturating_sub(self.driver.now()))
                    })
            };
            let chunks = self.events.channel().clone();
            select! {
                recv(self.control) -> msg => match msg {
                    Ok(msg) => if !self.handle_control(msg) { return },
                    Err(_) => return self.driver.stop(&mut self.port),
                },
                recv(chunks) -> chunk => match chunk {
                    Ok(chunk) => self.events.take_chunk(chunk),
                    // The dispatcher is gone (shutdown): results may still come, and the
                    // registry says when to stop.
                    Err(_) => self.events.close(),
                },
                default(wait) => {}
            }
            // Results and swaps that arrived meanwhile come first: they are rarer and decide
            // which version handles the events.
            while let Ok(msg) = self.control.try_recv() {
                if !self.handle_control(msg) {
                    return;
                }
            }
            self.fill_batch();
            self.driver.fire_due_timers();
        }
    }

    fn step(&mut self) {
        if let Some(subscription) = self.driver.step(&mut self.port) {
            (self.on_subscription)(subscription);
        }
    }

    fn fill_batch(&mut self) {
        loop {
            let batched = self.driver.batched();
            let room = self.max_batch.saturating_sub(batched);
            let Some(chunk) = self.events.next_chunk(room, batched == 0) else {
                break;
            };
            let spare = self.driver.append(chunk);
            self.events.recycle(spare);
        }
    }

    /// Returns false when the worker must end.
    fn handle_control(&mut self, msg: Control) -> bool {
        match msg {
            Control::Swap {
                spec,
                instance,
                reply,
            } => {
                // Events already batched belong to the old version.
                if self.driver.batched() > 0 {
                    self.step();
                }
                let _ = reply.send(self.driver.swap(spec, instance));
                true
            }
            Control::Result(r) => {
                self.driver.push_event(r.into());
                true
            }
            Control::Drain(done) => {
                // Deliver everything queued now, in batches.
                loop {
                    self.fill_batch();
                    if self.driver.batched() == 0 {
                        break;
                    }
                    self.step();
                }
                let _ = done.send(());
                true
            }
            Control::Stop => {
                self.driver.stop(&mut self.port);
                false
            }
        }
    }
}

/// The daemon's side of a rule's driver: decisions to the effects, results back into this
/// worker's control queue, reports to the status board, the log and the audit history.
struct ServicePort {
    meter: RuleMeter,
    effects: EffectPort,
    status: StatusBoard,
    host: HostParts,
    control: Sender<Control>,
}

impl Port for ServicePort {
    fn action_id(&mut self) -> u64 {
        next_action_id()
    }

    fn reply_to(&mut self, action_id: u64, service: &str, command: &str) -> ReplyTo {
        let control = self.control.clone();
        ReplyTo::new(action_id, service, command, move |result| {
            let _ = control.send(Control::Result(result));
        })
    }

    fn decide(&mut self, decision: Decision) {
        match &decision {
            Decision::Run(CommandRequest {
                origin,
                action_id,
                service,
                command,
                reason,
                ..
            }) => tracing::info!(
                rule = &**origin,
                action_id,
                service,
                command,
                reason,
                "rule asks to run a command"
            ),
            Decision::RunRemote {
                rule,
                action_id,
                node,
                service,
                command,
                reason,
                ..
            } => tracing::info!(
                rule = &**rule,
                action_id,
                node,
                service,
                command,
                reason,
                "rule asks another node to run a command"
            ),
            _ => {}
        }
        (self.effects)(decision);
    }

    fn report(&mut self, rule: &RuleSpec, report: Report) {
        let name = &*rule.name;
        let build = Some(&*rule.compiled.hash);
        match report {
            Report::Delivered { events, took } => {
                self.meter.count_call(events as u64, took);
            }
            Report::Faulted {
                kind,
                error,
                events,
                retry_in,
            } => {
                tracing::error!(
                    rule = name,
                    batch = events,
                    "rule faulted: {error}; retrying in {retry_in:?} (the batch is dropped)"
                );
                self.host.record_fault(
                    name,
                    kind,
                    build,
                    format!("faulted: {error}; {events} events dropped"),
                );
                self.status.count_dropped(name, events as u64);
                self.status.set_health(
                    name,
                    Health::Faulted {
                        reason: error,
                        retry_in,
                    },
                );
            }
            Report::Restarted => {
                tracing::info!(rule = name, "rule re-instantiated after a fault");
            }
            Report::NotRestarted { error, retry_in } => {
                tracing::error!(
                    rule = name,
                    "rule could not be restarted: {error}; retrying in {retry_in:?}"
                );
                self.host.record_fault(
                    name,
                    "restart",
                    build,
                    format!("could not be restarted: {error}"),
                );
                self.status.set_health(
                    name,
                    Health::Faulted {
                        reason: error,
                        retry_in,
                    },
                );
            }
            Report::Dropped { events } => self.status.count_dropped(name, events as u64),
        }
    }
}
