//! lua-collectd-monitor's local handlers, unchanged, as a medic rule.
//!
//! lua-collectd-monitor's local mode loaded every `*.lua` of `LocalMonitorConfigDir` into
//! collectd; each script returns `metric_handlers, notification_handlers` (a function, a table
//! of name → function, or nil) that get collectd's value-list or notification table and return
//! nil or `{service = "…", command = "…"}`. This rule runs those scripts in a Lua 5.4 VM inside
//! its own sandbox: medic reads the files (`scripts = { files = "DIR/*.lua" }`) and hands their
//! text over, so the rule still has no filesystem, and an edited script is a hot reload.
//!
//! What a handler asks for becomes a `run` (through medic's policy gate, cooldowns and
//! history); its result is logged with lua-collectd-monitor's words and notified as it did: a
//! notification from plugin `lua-collectd-monitor-local`, type the handler's name
//! (`<file>::metric::<key>`), message `{"message","task_id","code"}` in JSON.
//!
//! A handler error is logged with its script and line and that event is skipped for that
//! handler; the other handlers keep running. A handler that loops is stopped after
//! `max_instructions` (logged as runaway), and medic's call deadline stops the whole rule if
//! that is not enough (`max_instructions = 0`).

mod tables;
mod vm;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime};

use medic_rules::{
    CommandResult, Config, Ctx, LogLevel, Notification, NotifySource, Rule, Severity,
    Subscriptions, Values, export_rule,
};
use serde::Deserialize;
use serde_json::Value as Json;

pub use vm::{Failure, Kind, Script, Task, Vm};

/// The plugin name lua-collectd-monitor's local notifications carry; notifications from it are
/// not handed to handlers (a handler reacting to its own result would loop).
pub const PLUGIN: &str = "lua-collectd-monitor-local";
/// lua-collectd-monitor cut its JSON message at 127 bytes (collectd's type field is short).
const MAX_JSON: usize = 127;
const OMITTED: &str = "Omitted due to exceeding max message length!";
/// How often the same handler's failure is logged again while it keeps failing.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);
const PENDING: &str = "pending";
/// Handler names kept per command while its results are awaited: a result that never comes
/// (medic stopped during the run) must not grow the list for ever.
const MAX_PENDING: usize = 64;

fn default_instructions() -> u64 {
    1_000_000
}
fn default_memory_mib() -> u64 {
    32
}
fn yes() -> bool {
    true
}
fn everything() -> Vec<String> {
    vec!["**".into()]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// `{ files = "DIR/*.lua" }`, `{ file = "a.lua" }` or a list of those: medic hands each
    /// over as `{file, text}`.
    scripts: Json,
    /// Lua instructions one handler call may take; 0: no limit of the rule's own (medic's call
    /// deadline still stops it).
    #[serde(default = "default_instructions")]
    max_instructions: u64,
    /// Memory the Lua state may use, in MiB (within the rule's own memory limit).
    #[serde(default = "default_memory_mib")]
    memory_mib: u64,
    /// Notify each result as lua-collectd-monitor did.
    #[serde(default = "yes")]
    notify: bool,
    /// Which value lists and notifications reach the handlers (globs); all by default, as in
    /// lua-collectd-monitor. Narrowing them saves the work of handlers that ignore the rest.
    #[serde(default = "everything")]
    values: Vec<String>,
    #[serde(default = "everything")]
    notifications: Vec<String>,
}

/// When a handler's failure was last logged, and how many were not logged since.
#[derive(Default)]
struct FailureLog {
    last: Option<SystemTime>,
    suppressed: u64,
}

pub struct LcmLua {
    settings: Settings,
    vm: Vm,
    tables: tables::ValueTables,
    metric: Vec<usize>,
    notification: Vec<usize>,
    failures: Vec<FailureLog>,
    /// Handler names waiting for the result of the command they asked for, per
    /// `service/command`, oldest first: results of one command come back in the order asked
    /// (medic runs one command at a time unless its `concurrency` says otherwise).
    pending: BTreeMap<String, VecDeque<String>>,
}

impl Rule for LcmLua {
    fn init(config: Config, ctx: &mut Ctx) -> Result<Self, String> {
        let settings: Settings = config.parse()?;
        let scripts = scripts(&settings.scripts)?;
        let limit = (settings.max_instructions > 0).then_some(settings.max_instructions);
        let memory = usize::try_from(settings.memory_mib.saturating_mul(1024 * 1024))
            .map_err(|_| "`memory_mib` is too large".to_string())?;
        vm::set_now(ctx.now());
        let vm = Vm::new(&scripts, limit, memory)?;
        let of = |kind| {
            vm.handlers
                .iter()
                .enumerate()
                .filter(|(_, h)| h.kind == kind)
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
        };
        let (metric, notification) = (of(Kind::Metric), of(Kind::Notification));
        ctx.info(&format!(
            "{} scripts loaded: {} metric and {} notification handlers",
            scripts.len(),
            metric.len(),
            notification.len()
        ));
        let pending = ctx.state(PENDING).unwrap_or_default();
        let tables = tables::ValueTables::new(vm.lua())
            .map_err(|e| format!("cannot set up Lua: {}", vm::error_text(&e)))?;
        Ok(Self {
            tables,
            failures: vm.handlers.iter().map(|_| FailureLog::default()).collect(),
            settings,
            vm,
            metric,
            notification,
            pending,
        })
    }

    fn subscriptions(&self) -> Subscriptions {
        let mut s = Subscriptions::new();
        if !self.metric.is_empty() {
            for p in &self.settings.values {
                s = s.values(p.clone());
            }
        }
        if !self.notification.is_empty() {
            for p in &self.settings.notifications {
                s = s.notifications(p.clone());
            }
        }
        s
    }

    fn on_values(&mut self, values: Values<'_>, ctx: &mut Ctx) {
        vm::set_now(ctx.now());
        match self.tables.value_list(self.vm.lua(), &values) {
            Ok(table) => {
                for i in 0..self.metric.len() {
                    self.dispatch(self.metric[i], &table, ctx);
                }
            }
            Err(e) => ctx.error(&format!(
                "cannot hand {} to Lua: {}",
                values.identifier(),
                vm::error_text(&e)
            )),
        }
    }

    fn on_notification(&mut self, n: &Notification, ctx: &mut Ctx) {
        if n.identifier.plugin == PLUGIN {
            return;
        }
        vm::set_now(ctx.now());
        match tables::notification(self.vm.lua(), n) {
            Ok(table) => {
                for i in 0..self.notification.len() {
                    self.dispatch(self.notification[i], &table, ctx);
                }
            }
            Err(e) => ctx.error(&format!(
                "cannot hand a notification to Lua: {}",
                vm::error_text(&e)
            )),
        }
    }

    fn on_command_result(&mut self, result: &CommandResult, ctx: &mut Ctx) {
        let key = pending_key(&result.service, &result.command);
        let handler = self
            .pending
            .get_mut(&key)
            .and_then(VecDeque::pop_front)
            .unwrap_or_else(|| format!("{PLUGIN}::unknown-handler"));
        if self.pending.get(&key).is_some_and(VecDeque::is_empty) {
            self.pending.remove(&key);
        }
        let Some((code, message)) = outcome(result) else {
            ctx.warn(&format!(
                "{handler}: {}/{} not run: {}",
                result.service,
                result.command,
                result.error.as_deref().unwrap_or("no reason given")
            ));
            return;
        };
        if code == 0 {
            ctx.info(&format!("Succeeded to run a recovery command of {handler}"));
        } else {
            ctx.error(&format!(
                "Failed to run a recovery command of {handler}\nmessage: {message}"
            ));
        }
        if self.settings.notify {
            let severity = if code == 0 {
                Severity::Okay
            } else {
                Severity::Failure
            };
            let source = NotifySource {
                plugin: PLUGIN.into(),
                plugin_instance: String::new(),
                type_: handler,
                type_instance: String::new(),
            };
            ctx.notify_as(
                source,
                severity,
                result_json(result.action_id, code, &message),
            );
        }
    }

    fn suspend(&mut self, ctx: &mut Ctx) {
        if self.pending.is_empty() {
            ctx.delete_state(PENDING);
        } else {
            ctx.set_state(PENDING, &self.pending);
        }
    }
}

impl LcmLua {
    fn dispatch(&mut self, index: usize, table: &lua_rs_runtime::Table, ctx: &mut Ctx) {
        let outcome = self.vm.call(index, table);
        let name = &self.vm.handlers[index].name;
        for (level, line) in self.vm.take_log() {
            ctx.log(level, &format!("{name}: {line}"));
        }
        match outcome {
            Ok(None) => {}
            Ok(Some(task)) => {
                let waiting = self
                    .pending
                    .entry(pending_key(&task.service, &task.command))
                    .or_default();
                if waiting.len() == MAX_PENDING {
                    waiting.pop_front();
                }
                waiting.push_back(name.clone());
                ctx.run(&task.service, &task.command, name.clone());
            }
            Err(failure) => {
                let why = match failure {
                    Failure::Error(e) => format!("failed: {e}"),
                    Failure::Runaway(n) => format!("stopped after {n} Lua instructions"),
                    Failure::Memory => format!(
                        "stopped: the Lua state reached its {} MiB",
                        self.settings.memory_mib
                    ),
                    Failure::InvalidTask(what) => {
                        format!("returned {what}; want nil or {{service = \"…\", command = \"…\"}}")
                    }
                };
                let now = ctx.now();
                let log = &mut self.failures[index];
                let due = log
                    .last
                    .is_none_or(|t| now.duration_since(t).unwrap_or_default() >= FAILURE_LOG_EVERY);
                if due {
                    let more = match log.suppressed {
                        0 => String::new(),
                        n => format!(" ({n} more failures since the last report)"),
                    };
                    ctx.log(
                        LogLevel::Error,
                        &format!("{name} {why}; event skipped{more}"),
                    );
                    log.last = Some(now);
                    log.suppressed = 0;
                } else {
                    log.suppressed += 1;
                }
            }
        }
    }
}

/// The scripts value medic handed over: `{file, text}`, or lists of them (a `files` entry
/// reads as a list).
fn scripts(value: &Json) -> Result<Vec<Script>, String> {
    fn collect(value: &Json, out: &mut Vec<Script>) -> Result<(), String> {
        match value {
            Json::Array(items) => items.iter().try_for_each(|item| collect(item, out)),
            Json::Object(_) => {
                let script = serde_json::from_value(value.clone())
                    .map_err(|_| format!("`scripts` entry {value} is not a file medic read"))?;
                out.push(script);
                Ok(())
            }
            _ => Err(format!(
                "`scripts` entry {value} does not name files: write scripts = \
                 {{ files = \"DIR/*.lua\" }}, {{ file = \"a.lua\" }} or a list of those"
            )),
        }
    }
    let mut out = Vec::new();
    collect(value, &mut out)?;
    Ok(out)
}

fn pending_key(service: &str, command: &str) -> String {
    format!("{service}/{command}")
}

/// The code and message lua-collectd-monitor reported for a command that ran: the exit status
/// (128 + N for a signal, 124 for a timeout) and the output without its trailing newline. None
/// when the command did not run (refused by policy, unknown service): there is nothing to
/// report but the refusal, which is logged.
fn outcome(r: &CommandResult) -> Option<(i64, String)> {
    let timed_out = r.error.as_deref().is_some_and(|e| e.contains("timed out"));
    let code = match (r.code, r.signal) {
        _ if timed_out => 124,
        (Some(c), _) => i64::from(c),
        (None, Some(sig)) => 128 + i64::from(sig),
        (None, None) => return None,
    };
    let output = r.output.strip_suffix('\n').unwrap_or(&r.output);
    let message = match &r.error {
        Some(e) if output.is_empty() => e.clone(),
        Some(e) => format!("{output}\n[medic: {e}]"),
        None => output.to_string(),
    };
    Some((code, message))
}

/// `{"message":…,"task_id":…,"code":…}` in lua-collectd-monitor's key order, with the message
/// replaced by its "omitted" text past 127 bytes. The task id is medic's action id: the same
/// number as in `medic history`.
fn result_json(task_id: u64, code: i64, message: &str) -> String {
    let json = |message: &str| {
        format!(
            "{{\"message\":{},\"task_id\":{task_id},\"code\":{code}}}",
            Json::String(message.to_string())
        )
    };
    let full = json(message);
    if full.len() > MAX_JSON {
        json(OMITTED)
    } else {
        full
    }
}

export_rule!(LcmLua);

#[cfg(test)]
mod tests;
