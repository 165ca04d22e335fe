//! Probes as a source: each `[probes.<name>]` check runs every `every` through the executor
//! (as service `probe-<name>`, command `check`: same limits, same audit record as any command),
//! and its result reaches rules twice: as the value list `<node>/probe-<name>/probe` (`ok` 1/0,
//! the exit `code`, NaN when there was none, and `seconds`), and as a notification of the same
//! identifier (okay or failure) whose message says what happened and the output's first line.
//! Runs of one probe never overlap: the next waits for the result of the last.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::{Config, PROBE_COMMAND, Probe};
use crate::event::{
    CommandRequest, CommandResult, Identifier, Ingested, MAX_MESSAGE_LEN, Notification, ReplyTo,
    Sample, Severity, ValueList, next_action_id, now_ns,
};
use crate::logging::RateLimited;
use crate::shutdown::Shutdown;
use crate::types_db::PROBE_TYPE;

/// Start one task per probe.
pub fn start(
    config: &Config,
    commands: mpsc::Sender<CommandRequest>,
    sink: mpsc::Sender<Ingested>,
    shutdown: &Shutdown,
) -> Vec<JoinHandle<()>> {
    config
        .probes
        .iter()
        .map(|(name, probe)| {
            let prober = Prober {
                name: name.clone(),
                origin: format!("probe:{name}").into(),
                identifier: Identifier {
                    host: config.daemon.node.clone(),
                    plugin: "probe".into(),
                    plugin_instance: name.clone(),
                    type_: PROBE_TYPE.into(),
                    type_instance: String::new(),
                },
                every: probe.every,
                commands: commands.clone(),
                sink: sink.clone(),
                refused_log: RateLimited::default(),
            };
            tokio::spawn(prober.run(shutdown.clone()))
        })
        .collect()
}

struct Prober {
    name: String,
    origin: Arc<str>,
    identifier: Identifier,
    every: Duration,
    commands: mpsc::Sender<CommandRequest>,
    sink: mpsc::Sender<Ingested>,
    refused_log: RateLimited,
}

impl Prober {
    async fn run(mut self, mut shutdown: Shutdown) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tick.tick() => {}
            }
            let (tx, rx) = oneshot::channel();
            let (action_id, service) = (next_action_id(), Probe::service(&self.name));
            let request = CommandRequest {
                origin: self.origin.clone(),
                build: None,
                action_id,
                reply: ReplyTo::new(action_id, &service, PROBE_COMMAND, move |r| {
                    let _ = tx.send(r);
                }),
                service,
                command: PROBE_COMMAND.into(),
                reason: format!("scheduled check (every {:?})", self.every),
            };
            if self.commands.send(request).await.is_err() {
                return; // The executor has stopped: medic is shutting down.
            }
            let result = tokio::select! {
                _ = shutdown.wait() => return,
                r = rx => match r {
                    Ok(r) => r,
                    Err(_) => return,
                },
            };
            if let Some(refusal) = &result.refusal {
                let name = &self.name;
                self.refused_log.log(|suppressed| {
                    tracing::warn!(probe = name, suppressed, "probe not run: {refusal}")
                });
                continue;
            }
            for event in self.events(&result) {
                if self.sink.send(event).await.is_err() {
                    return;
                }
            }
        }
    }

    /// The value list and the notification of one result.
    fn events(&self, r: &CommandResult) -> [Ingested; 2] {
        let ok = r.run.code == Some(0) && r.run.error.is_none();
        let time = now_ns();
        let values = ValueList {
            identifier: self.identifier.clone(),
            time,
            interval: self.every.as_nanos() as u64,
            samples: vec![
                Sample::Gauge(if ok { 1.0 } else { 0.0 }),
                Sample::Gauge(r.run.code.map_or(f64::NAN, f64::from)),
                Sample::Gauge(r.run.duration.as_secs_f64()),
            ],
        };
        let notification = Notification {
            severity: if ok {
                Severity::Okay
            } else {
                Severity::Failure
            },
            time,
            message: message(&self.name, r),
            identifier: self.identifier.clone(),
        };
        [
            Ingested::Values(values),
            Ingested::Notification(notification),
        ]
    }
}

/// `probe web: exit 1 in 0.20s: <first line of output>`, within collectd's message length.
fn message(name: &str, r: &CommandResult) -> String {
    let what = match (&r.run.error, r.run.code, r.run.signal) {
        (Some(e), _, _) => e.clone(),
        (None, Some(code), _) => format!("exit {code}"),
        (None, None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None, None) => "no exit status".into(),
    };
    let first = r.run.output.lines().map(str::trim).find(|l| !l.is_empty());
    let mut text = format!(
        "probe {name}: {what} in {:.2}s",
        r.run.duration.as_secs_f64()
    );
    if let Some(line) = first {
        text.push_str(": ");
        text.push_str(line);
    }
    if text.len() > MAX_MESSAGE_LEN {
        let mut end = MAX_MESSAGE_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_says_what_happened_with_the_first_line_of_output() {
        let mut r = CommandResult::error(1, "probe-web".into(), "check".into(), String::new());
        r.run.error = None;
        r.run.code = Some(1);
        r.run.output = "\n  HTTP 503 Service Unavailable\nmore\n".into();
        r.run.duration = Duration::from_millis(200);
        assert_eq!(
            message("web", &r),
            "probe web: exit 1 in 0.20s: HTTP 503 Service Unavailable"
        );
        r.run.code = None;
        r.run.signal = Some(9);
        r.run.output = "é".repeat(400);
        let m = message("web", &r);
        assert!(m.starts_with("probe web: killed by signal 9 in 0.20s: é"));
        assert!(m.len() <= MAX_MESSAGE_LEN);
    }
}
