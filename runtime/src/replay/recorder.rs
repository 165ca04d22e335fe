//! The replay's side of the rule driver: every decision becomes a [`Line`] with what the policy
//! gate and the grants would have said, nothing is carried out, and the results a run would
//! give (refusals always, exits with `--assume-exit`) go back to the asking rule as in service.

use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::{Line, Options, What, rfc3339};
use crate::config::Config;
use crate::effects::policy::Gate;
use crate::engine::clock::VirtualClock;
use crate::engine::driver::{Port, Report};
use crate::engine::port::Decision;
use crate::engine::rule::RuleSpec;
use crate::event::{CommandRequest, CommandResult, ReplyTo};

pub(super) struct Recorder {
    config: Config,
    options: Options,
    clock: VirtualClock,
    gate: Gate,
    /// The gate counts in `Instant`s: virtual nanoseconds are laid out from this one, which
    /// stands for `first_ns`.
    origin: Instant,
    first_ns: u64,
    next_action_id: u64,
    /// The call in progress.
    call: Option<Call>,
    pub(super) lines: Vec<Line>,
    pub(super) calls: u64,
    pub(super) faults: u64,
    pub(super) dropped: u64,
}

/// What the recorder knows of the call in progress: where its rule's results go, and the feed
/// lines of its batch (a fault line names them).
pub(super) struct Call {
    pub results: Sender<CommandResult>,
    pub origins: Option<(String, String)>,
}

impl Recorder {
    pub fn new(config: Config, options: Options, clock: VirtualClock) -> Self {
        Self {
            config,
            options,
            clock,
            gate: Gate::default(),
            origin: Instant::now(),
            first_ns: 0,
            next_action_id: 1,
            call: None,
            lines: Vec::new(),
            calls: 0,
            faults: 0,
            dropped: 0,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The replay starts at `ns`: the gate's clock starts there.
    pub fn start_at(&mut self, ns: u64) {
        self.first_ns = ns;
    }

    pub fn begin(&mut self, call: Call) {
        self.call = Some(call);
    }

    fn line(&mut self, rule: &str, what: What) {
        self.lines.push(Line {
            time: rfc3339(self.clock.now_ns()),
            rule: rule.to_string(),
            what,
        });
    }

    fn fault(&mut self, rule: &str, kind: &'static str, error: String) {
        self.faults += 1;
        let events = match self.call.as_mut().and_then(|c| c.origins.take()) {
            Some((first, last)) if first == last => first,
            Some((first, last)) => format!("{first} .. {last}"),
            None => String::new(),
        };
        self.line(
            rule,
            What::Fault {
                kind,
                error,
                events,
            },
        );
    }

    /// A run: what the gate would say. Nothing runs, so each admitted run ends at once
    /// (successfully, unless `--assume-exit` says otherwise) and never holds a concurrency slot.
    fn run(&mut self, req: CommandRequest) -> What {
        let now = self.clock.now_ns();
        let at = self.origin + Duration::from_nanos(now.saturating_sub(self.first_ns));
        let CommandRequest {
            action_id,
            service,
            command,
            reason,
            reply,
            ..
        } = req;
        let why = match self.gate.admit(&self.config, &service, &command, at) {
            Ok((_, admitted)) => {
                let failed = self.options.assume_exit.is_some_and(|c| c != 0);
                self.gate.finish(&self.config, admitted, failed, at);
                match self.options.assume_exit {
                    Some(code) => {
                        let mut result = CommandResult::error(
                            action_id,
                            service.clone(),
                            command.clone(),
                            String::new(),
                        );
                        result.run.code = Some(code);
                        result.run.error = None;
                        reply.send(result);
                    }
                    None => reply.withhold(),
                }
                None
            }
            Err(refusal) => {
                let why = refusal.to_string();
                let mut result =
                    CommandResult::error(action_id, service.clone(), command.clone(), why.clone());
                result.refusal = Some(refusal);
                reply.send(result);
                Some(why)
            }
        };
        What::Run {
            service,
            command,
            reason,
            gate: if why.is_some() { "refused" } else { "run" },
            why,
        }
    }
}

impl Port for Recorder {
    fn action_id(&mut self) -> u64 {
        let id = self.next_action_id;
        self.next_action_id += 1;
        id
    }

    fn reply_to(&mut self, action_id: u64, service: &str, command: &str) -> ReplyTo {
        let results = self.call.as_ref().map(|c| c.results.clone());
        ReplyTo::new(action_id, service, command, move |result| {
            if let Some(results) = results {
                let _ = results.send(result);
            }
        })
    }

    fn decide(&mut self, decision: Decision) {
        let (rule, what) = match decision {
            Decision::Run(req) => (req.origin.clone(), self.run(req)),
            Decision::RunRemote {
                rule,
                node,
                service,
                command,
                reason,
                reply,
                ..
            } => {
                // No node answers a replay.
                reply.withhold();
                let what = What::RunRemote {
                    node,
                    service,
                    command,
                    reason,
                };
                (rule, what)
            }
            Decision::Publish {
                rule,
                topic,
                payload,
                retain,
            } => {
                let why = match &self.config.mqtt {
                    Some(m) => crate::effects::mqtt::publish_refusal(&m.grants, &rule, &topic),
                    None => Some("MQTT is not configured ([mqtt])".into()),
                };
                let what = What::Publish {
                    topic,
                    payload: String::from_utf8_lossy(&payload).into_owned(),
                    retain,
                    gate: if why.is_some() { "refused" } else { "publish" },
                    why,
                };
                (rule, what)
            }
            Decision::Emit { rule, sink, record } => {
                let why = crate::effects::sinks::emit_refusal(
                    &self.config.rules.grants,
                    &self.config.sinks,
                    &rule,
                    &sink,
                );
                let what = What::Emit {
                    sink,
                    record: String::from_utf8_lossy(&record).into_owned(),
                    gate: if why.is_some() { "refused" } else { "emit" },
                    why,
                };
                (rule, what)
            }
            Decision::Notify {
                rule,
                severity,
                message,
                source,
            } => {
                let why = source.as_ref().and_then(|s| {
                    crate::effects::notify_source_refusal(&self.config.rules.grants, &rule, s)
                });
                let what = What::Notify {
                    severity: severity.as_str(),
                    message,
                    source: source.filter(|_| why.is_none()).map(|s| s.to_string()),
                    why,
                };
                (rule, what)
            }
        };
        self.line(&rule, what);
    }

    fn report(&mut self, rule: &RuleSpec, report: Report) {
        match report {
            Report::Delivered { .. } => self.calls += 1,
            Report::Faulted { kind, error, .. } => {
                self.calls += 1;
                self.fault(&rule.name, kind, error);
            }
            Report::NotRestarted { error, .. } => self.fault(&rule.name, "restart", error),
            Report::Restarted => {}
            Report::Dropped { events } => self.dropped += events as u64,
        }
    }
}
