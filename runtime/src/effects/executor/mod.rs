//! Runs allow-listed commands: each request passes the policy gate, is recorded in the audit
//! history, runs (`process`: how one command runs) and its result goes back to whoever asked.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::Receiver;
use tokio::sync::{Notify, watch};

use super::policy::{Admitted, BreakerChange, Gate};
use super::view::{CommandView, LastRun};
use crate::config::{Command, Config};
pub use crate::event::RunResult;
use crate::event::{CommandRequest, CommandResult, Refusal, Severity};
use crate::metrics::{CommandLabels, CommandOutcomeLabels, ReasonLabels, metrics};
use crate::store::history::{Entry, History, state};

mod process;
pub use process::{Asker, check_accounts, run_until};

/// Receives run requests, applies the policy gate, runs admitted commands concurrently, and
/// hands every result (refusals included) back to whoever asked.
pub struct Executor {
    /// Swapped whole on a config reload; per-command policy state (cooldowns, runs) lives in
    /// the gate and survives the swap.
    config: Arc<std::sync::RwLock<Arc<Config>>>,
    gate: Arc<Mutex<Gate>>,
    running: Arc<Running>,
    /// Where last starts are kept, so cooldowns survive a restart (none in unit tests).
    store: Option<crate::store::Store>,
    /// Where every decision and its outcome is recorded (none in unit tests).
    history: Option<History>,
}

/// What is running now, for the shutdown order: stop admitting, wait, then kill what is left.
struct Running {
    /// action id → `service/command`, to name what had to be killed.
    now: Mutex<BTreeMap<u64, String>>,
    changed: Notify,
    stopping: std::sync::atomic::AtomicBool,
    /// Turns true when the shutdown grace has passed: every running command is killed.
    kill: watch::Sender<bool>,
}

/// Drives the executor's part of the shutdown order.
#[derive(Clone)]
pub struct ExecutorHandle {
    running: Arc<Running>,
    config: Arc<std::sync::RwLock<Arc<Config>>>,
    gate: Arc<Mutex<Gate>>,
}

/// While stopping, how often what is still running is logged.
const PENDING_REPORT: Duration = Duration::from_secs(5);

impl ExecutorHandle {
    /// Refuse new requests, let running commands finish for up to `grace` (saying every few
    /// seconds what is still running), then kill the process groups of those still running and
    /// wait for their results to be handed back. Returns what had to be killed
    /// (`service/command`), for the log.
    pub async fn drain(&self, grace: Duration) -> Vec<String> {
        {
            // Under the list's lock: a run is either listed already or will be refused.
            let _listed = self.running.now.lock().unwrap_or_else(|p| p.into_inner());
            self.running
                .stopping
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        let deadline = tokio::time::Instant::now() + grace;
        let mut report = tokio::time::Instant::now() + PENDING_REPORT;
        loop {
            let changed = self.running.changed.notified();
            let pending = self.running_now();
            let now = tokio::time::Instant::now();
            if pending.is_empty() || now >= deadline {
                break;
            }
            if now >= report {
                report += PENDING_REPORT;
                tracing::info!(?pending, "stopping: waiting for commands to finish");
            }
            let _ = tokio::time::timeout_at(deadline.min(report), changed).await;
        }
        let forced = self.running_now();
        if forced.is_empty() {
            return forced;
        }
        self.running.kill.send_replace(true);
        loop {
            let changed = self.running.changed.notified();
            if self.running_now().is_empty() {
                return forced;
            }
            changed.await;
        }
    }

    /// Use a reloaded config's allow-list and per-command limits from the next request on.
    pub fn reconfigure(&self, config: Arc<Config>) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// Every allow-listed command's policy state, for the status page.
    pub fn commands(&self) -> Vec<CommandView> {
        let config = self
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        gate.view(&config, Instant::now())
    }

    /// `service/command` of every command running now.
    fn running_now(&self) -> Vec<String> {
        let now = self.running.now.lock().unwrap_or_else(|p| p.into_inner());
        now.values().cloned().collect()
    }
}

impl Executor {
    pub fn new(config: Arc<Config>) -> Self {
        let running = Arc::new(Running {
            now: Mutex::default(),
            changed: Notify::new(),
            stopping: std::sync::atomic::AtomicBool::new(false),
            kill: watch::channel(false).0,
        });
        Self {
            config: Arc::new(std::sync::RwLock::new(config)),
            gate: Arc::default(),
            running,
            store: None,
            history: None,
        }
    }

    /// Record every request, its verdict and its outcome in the audit history.
    pub fn with_history(mut self, history: History) -> Self {
        self.history = Some(history);
        self
    }

    /// Keep the gate's last starts in `store`, starting from what it recorded before.
    pub fn with_store(mut self, store: crate::store::Store) -> Self {
        match store.policy_states() {
            Ok(states) => {
                let saved = states.into_iter().filter_map(|(service, command, bytes)| {
                    Some((service, command, serde_json::from_slice(&bytes).ok()?))
                });
                let mut gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
                gate.restore_saved(saved, crate::event::now_ns(), Instant::now());
                for (service, command) in gate.open_breakers() {
                    breaker_gauge(service, command).set(1);
                }
            }
            Err(e) => store.report("the commands' policy state cannot be read", &e),
        }
        self.store = Some(store);
        self
    }

    pub fn handle(&self) -> ExecutorHandle {
        ExecutorHandle {
            running: self.running.clone(),
            config: self.config.clone(),
            gate: self.gate.clone(),
        }
    }

    pub async fn serve(self, mut requests: Receiver<CommandRequest>) {
        let me = Arc::new(self);
        while let Some(request) = requests.recv().await {
            // The gate decides here, in the order the requests were made (a rule that asks
            // twice in a row, with room for one run, gets its first ask run), and the run goes
            // on in a task of its own.
            let admitted = me.admit_and_record(&request);
            let me = me.clone();
            tokio::spawn(async move { me.handle_request(request, admitted).await });
        }
    }

    /// The gate's verdict on `req`, recorded as asked.
    fn admit_and_record(&self, req: &CommandRequest) -> Result<(Command, Admitted), Refusal> {
        let admitted = self.admit(req);
        self.record(|| Entry::Asked {
            action_id: req.action_id,
            at_ns: crate::event::now_ns(),
            origin: req.origin.clone(),
            build: req.build.clone(),
            reason: req.reason.clone(),
            service: req.service.clone(),
            command: req.command.clone(),
            refusal: admitted.as_ref().err().map(ToString::to_string),
        });
        admitted
    }

    async fn handle_request(
        &self,
        req: CommandRequest,
        admitted: Result<(Command, Admitted), Refusal>,
    ) {
        let origin = &*req.origin;
        let mut refused = None;
        let result = match admitted {
            Err(refusal) => {
                tracing::warn!(
                    origin,
                    action_id = req.action_id,
                    service = req.service,
                    command = req.command,
                    "command refused: {refusal}"
                );
                let result = RunResult::not_run(refusal.to_string());
                metrics()
                    .policy_refusals
                    .get_or_create(&ReasonLabels {
                        reason: refusal.reason(),
                    })
                    .inc();
                refused = Some(refusal);
                result
            }
            Ok((spec, token)) => {
                tracing::info!(
                    origin,
                    action_id = req.action_id,
                    service = req.service,
                    command = req.command,
                    program = %spec.program,
                    reason = req.reason,
                    "running command"
                );
                let mut stop = self.running.kill.subscribe();
                let asker = Asker {
                    action_id: req.action_id,
                    origin: req.origin.to_string(),
                    reason: req.reason.clone(),
                };
                let result = run_until(&spec, &asker, &mut stop).await;
                self.finish_run(token, &result);
                let output = summary(&result.output);
                match (&result.error, result.code) {
                    (None, Some(0)) => tracing::info!(
                        origin, action_id = req.action_id, service = req.service,
                        command = req.command, took = ?result.duration, output, "command succeeded"
                    ),
                    _ => tracing::warn!(
                        origin, action_id = req.action_id, service = req.service,
                        command = req.command, code = ?result.code, signal = ?result.signal,
                        error = ?result.error, took = ?result.duration, output, "command failed"
                    ),
                }
                self.record(|| Entry::Ended {
                    action_id: req.action_id,
                    at_ns: crate::event::now_ns(),
                    state: outcome(&result),
                    code: result.code,
                    signal: result.signal,
                    timed_out: result.timed_out,
                    duration: result.duration,
                    output: result.output.clone(),
                    error: result.error.clone(),
                });
                result
            }
        };
        let action_id = req.action_id;
        req.reply.send(CommandResult {
            action_id,
            service: req.service,
            command: req.command,
            refusal: refused,
            run: result,
        });
        // Only once the result is handed back: the shutdown order waits for this.
        self.finish(action_id);
    }

    /// The policy gate's verdict, refused outright once medic is stopping. An admitted run is
    /// listed as running before the list's lock is released, so the shutdown drain, which sets
    /// `stopping` under the same lock, either sees it or refuses it: none slips past.
    fn admit(&self, req: &CommandRequest) -> Result<(Command, Admitted), Refusal> {
        use std::sync::atomic::Ordering;
        let mut now = self.running.now.lock().unwrap_or_else(|p| p.into_inner());
        if self.running.stopping.load(Ordering::SeqCst) {
            return Err(Refusal::Stopping);
        }
        let config = self
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        let (spec, token) = gate.admit(&config, &req.service, &req.command, Instant::now())?;
        let spec = spec.clone();
        self.save_policy(&gate, &req.service, &req.command);
        drop(gate);
        now.insert(req.action_id, format!("{}/{}", req.service, req.command));
        Ok((spec, token))
    }

    /// Give the run back to the gate: a failure counts towards its breaker (a run medic killed
    /// while stopping does not: the command did nothing wrong). A breaker change is logged and
    /// recorded; the command's policy state is kept for the next start.
    fn finish_run(&self, token: Admitted, result: &RunResult) {
        let (service, command) = (token.service().to_string(), token.command().to_string());
        let failed = !result.interrupted && outcome(result) != state::SUCCEEDED;
        let config = self
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let ended = outcome(result);
        metrics()
            .commands
            .get_or_create(&CommandOutcomeLabels {
                service: service.clone(),
                command: command.clone(),
                outcome: ended,
            })
            .inc();
        let change = {
            let mut gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
            let change = gate.finish(&config, token, failed, Instant::now());
            let last = LastRun {
                ended_ns: crate::event::now_ns(),
                outcome: ended,
                code: result.code,
                duration: result.duration,
            };
            gate.set_last(&service, &command, last);
            self.save_policy(&gate, &service, &command);
            change
        };
        let Some(change) = change else { return };
        match change {
            BreakerChange::Opened { .. } => {
                breaker_gauge(&service, &command).set(1);
                tracing::warn!("{change}")
            }
            BreakerChange::Closed { .. } => {
                breaker_gauge(&service, &command).set(0);
                tracing::info!("{change}")
            }
        }
        self.record(|| Entry::Notified {
            action_id: crate::event::next_action_id(),
            at_ns: crate::event::now_ns(),
            rule: Arc::from("policy"),
            severity: match change {
                BreakerChange::Opened { .. } => Severity::Failure,
                BreakerChange::Closed { .. } => Severity::Okay,
            }
            .as_str(),
            message: change.to_string(),
            source: None,
        });
    }

    /// Keep the command's policy state for the next start: handed to the history's writer
    /// thread (no database call on the admit path, which runs between a decision and its
    /// spawn); written here only without a history (unit tests).
    fn save_policy(&self, gate: &Gate, service: &str, command: &str) {
        let Some(store) = &self.store else { return };
        let saved = gate.saved(service, command, crate::event::now_ns(), Instant::now());
        let bytes = serde_json::to_vec(&saved).expect("plain numbers serialize");
        if let Some(history) = &self.history {
            history.keep_policy(service, command, bytes);
        } else if let Err(e) = store.policy_state_set(service, command, &bytes) {
            store.report("a command's policy state cannot be kept", &e);
        }
    }

    fn record(&self, entry: impl FnOnce() -> Entry) {
        if let Some(history) = &self.history {
            history.record(entry());
        }
    }

    fn finish(&self, action_id: u64) {
        let removed = self
            .running
            .now
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&action_id);
        if removed.is_some() {
            self.running.changed.notify_waiters();
        }
    }
}

/// `medic_breaker_open` of one command: 1 from opening until a trial run succeeds.
fn breaker_gauge(service: &str, command: &str) -> prometheus_client::metrics::gauge::Gauge {
    metrics()
        .breaker_open
        .get_or_create(&CommandLabels {
            service: service.into(),
            command: command.into(),
        })
        .clone()
}

/// How a run ended, in the history's words.
fn outcome(result: &RunResult) -> &'static str {
    if result.interrupted {
        state::INTERRUPTED
    } else if result.timed_out {
        state::TIMED_OUT
    } else if result.error.is_none() && result.code == Some(0) {
        state::SUCCEEDED
    } else {
        state::FAILED
    }
}

/// The first line or so of output, for a log line.
fn summary(output: &str) -> String {
    let trimmed = output.trim();
    match trimmed.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &trimmed[..i]),
        None => trimmed.to_string(),
    }
}

#[cfg(test)]
mod tests;
