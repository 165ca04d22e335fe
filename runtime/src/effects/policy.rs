//! The policy gate every run request passes, whoever asks: the command must be on the
//! allow-list, below its concurrency (one run at a time by default), out of its cooldown, below
//! its `max_runs` in the sliding window, and its breaker must not be open. The host enforces
//! this whatever a rule or a remote sender decides.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::view::{Breaker, CommandView, LastRun};
use crate::config::{Command, Config};
use crate::event::Refusal;

type Key = (String, String);

#[derive(Default)]
pub struct Gate {
    running: HashMap<Key, usize>,
    tracks: HashMap<Key, Track>,
}

/// What the cooldown, the rate limit and the breaker remember of one command.
#[derive(Default)]
struct Track {
    /// For the cooldown.
    last_start: Option<Instant>,
    /// Starts within the `max_runs` window, oldest first.
    starts: VecDeque<Instant>,
    /// Failures within the breaker's window, oldest first.
    failures: VecDeque<Instant>,
    /// Open until then; past it the next request is the trial run.
    open_until: Option<Instant>,
    /// A trial run is in flight: everything else waits for its verdict.
    trial: bool,
    /// For the status page: not kept across restarts (the history has it).
    last: Option<LastRun>,
}

/// Proof that a run was admitted; hand it back with [`Gate::finish`].
#[derive(Debug)]
pub struct Admitted {
    key: Key,
    /// This run decides whether an opened breaker closes.
    trial: bool,
}

impl Admitted {
    pub fn service(&self) -> &str {
        &self.key.0
    }

    pub fn command(&self) -> &str {
        &self.key.1
    }
}

/// A breaker that opened or closed: said in the log and recorded in the history.
#[derive(Debug, Clone, PartialEq)]
pub enum BreakerChange {
    Opened {
        service: String,
        command: String,
        failures: usize,
        within: Duration,
        open_for: Duration,
        /// The trial run failed (rather than `failures` runs within the window).
        after_trial: bool,
    },
    Closed {
        service: String,
        command: String,
    },
}

impl fmt::Display for BreakerChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakerChange::Opened {
                service,
                command,
                after_trial: true,
                open_for,
                ..
            } => write!(
                f,
                "circuit opened again: the trial run of `{service}`/`{command}` failed; refused \
                 for {open_for:?}"
            ),
            BreakerChange::Opened {
                service,
                command,
                failures,
                within,
                open_for,
                ..
            } => write!(
                f,
                "circuit opened: `{service}`/`{command}` failed {failures} times within \
                 {within:?}; refused for {open_for:?}, then one trial run"
            ),
            BreakerChange::Closed { service, command } => write!(
                f,
                "circuit closed: the trial run of `{service}`/`{command}` succeeded"
            ),
        }
    }
}

/// One command's cooldown, rate and breaker state in wall-clock nanoseconds, kept across
/// restarts.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    #[serde(default)]
    pub last_start: Option<u64>,
    pub starts: Vec<u64>,
    pub failures: Vec<u64>,
    pub open_until: Option<u64>,
}

impl Gate {
    /// Admit a run now or say why not. Admission marks it running and counts its start.
    pub fn admit<'c>(
        &mut self,
        config: &'c Config,
        service: &str,
        command: &str,
        now: Instant,
    ) -> Result<(&'c Command, Admitted), Refusal> {
        if config.services.is_empty() {
            return Err(Refusal::NoServices);
        }
        let svc = config
            .services
            .get(service)
            .ok_or_else(|| Refusal::UnknownService(service.into()))?;
        let spec = svc
            .commands
            .get(command)
            .ok_or_else(|| Refusal::UnknownCommand {
                service: service.into(),
                command: command.into(),
            })?;
        let all: usize = self.running.values().sum();
        if all >= config.policy.max_concurrent {
            return Err(Refusal::TooManyRunning { running: all });
        }
        let key = (service.to_string(), command.to_string());
        let running = self.running.get(&key).copied().unwrap_or(0);
        if running >= spec.concurrency {
            return Err(Refusal::AlreadyRunning {
                service: key.0,
                command: key.1,
                running,
                limit: spec.concurrency,
            });
        }
        let track = self.tracks.entry(key.clone()).or_default();
        if let Some(last) = track.last_start {
            let since = now.saturating_duration_since(last);
            if since < spec.cooldown {
                return Err(Refusal::CoolingDown {
                    service: key.0,
                    command: key.1,
                    remaining: spec.cooldown - since,
                });
            }
        }
        let mut trial = false;
        if let Some(until) = track.open_until {
            if now < until {
                return Err(Refusal::CircuitOpen {
                    service: key.0,
                    command: key.1,
                    remaining: until - now,
                });
            }
            if track.trial {
                return Err(Refusal::CircuitTrial {
                    service: key.0,
                    command: key.1,
                });
            }
            trial = true;
        }
        forget_before(&mut track.starts, now, spec.max_runs.within);
        if track.starts.len() >= spec.max_runs.count {
            return Err(Refusal::RateLimited {
                service: key.0,
                command: key.1,
                count: track.starts.len(),
                within: spec.max_runs.within,
            });
        }
        track.starts.push_back(now);
        track.trial = trial;
        track.last_start = Some(now);
        *self.running.entry(key.clone()).or_default() += 1;
        Ok((spec, Admitted { key, trial }))
    }

    /// Take the cooldown, rate and breaker state saved before a restart; `now_ns` and `now` are
    /// the same moment on both clocks.
    pub fn restore_saved(
        &mut self,
        saved: impl IntoIterator<Item = (String, String, Saved)>,
        now_ns: u64,
        now: Instant,
    ) {
        let at = |ns: &u64| instant_of(*ns, now_ns, now);
        for (service, command, s) in saved {
            let open_until = s.open_until.map(|ns| {
                let ahead = Duration::from_nanos(ns.saturating_sub(now_ns));
                let passed = now_ns > ns;
                if passed { now } else { now + ahead }
            });
            let track = Track {
                last_start: s.last_start.as_ref().and_then(at),
                starts: s.starts.iter().filter_map(at).collect(),
                failures: s.failures.iter().filter_map(at).collect(),
                open_until,
                trial: false,
                last: None,
            };
            self.tracks.insert((service, command), track);
        }
    }

    /// A run ended (`failed`: it did not exit 0). Returns the breaker's change, if any.
    pub fn finish(
        &mut self,
        config: &Config,
        admitted: Admitted,
        failed: bool,
        now: Instant,
    ) -> Option<BreakerChange> {
        if let Some(n) = self.running.get_mut(&admitted.key) {
            *n -= 1;
            if *n == 0 {
                self.running.remove(&admitted.key);
            }
        }
        // A command the reloaded config no longer has keeps the defaults for this last word.
        let breaker = config
            .services
            .get(admitted.service())
            .and_then(|s| s.commands.get(admitted.command()))
            .map(|c| c.breaker)
            .unwrap_or_default();
        let track = self.tracks.entry(admitted.key.clone()).or_default();
        let (service, command) = admitted.key;
        if admitted.trial {
            track.trial = false;
            if failed {
                track.open_until = Some(now + breaker.open_for);
                return Some(BreakerChange::Opened {
                    service,
                    command,
                    failures: 1,
                    within: breaker.within,
                    open_for: breaker.open_for,
                    after_trial: true,
                });
            }
            track.open_until = None;
            track.failures.clear();
            return Some(BreakerChange::Closed { service, command });
        }
        if !failed {
            return None;
        }
        track.failures.push_back(now);
        forget_before(&mut track.failures, now, breaker.within);
        if track.failures.len() < breaker.failures || track.open_until.is_some() {
            return None;
        }
        track.open_until = Some(now + breaker.open_for);
        let failures = track.failures.len();
        track.failures.clear();
        Some(BreakerChange::Opened {
            service,
            command,
            failures,
            within: breaker.within,
            open_for: breaker.open_for,
            after_trial: false,
        })
    }

    /// Remember how the last run of `service`/`command` ended, for [`Gate::view`].
    pub fn set_last(&mut self, service: &str, command: &str, last: LastRun) {
        let key = (service.to_string(), command.to_string());
        self.tracks.entry(key).or_default().last = Some(last);
    }

    /// Every allow-listed command's state now, in config order.
    pub fn view(&self, config: &Config, now: Instant) -> Vec<CommandView> {
        let mut out = Vec::new();
        for (service, svc) in &config.services {
            for (command, spec) in &svc.commands {
                let key = (service.clone(), command.clone());
                let track = self.tracks.get(&key);
                let within = |times: &VecDeque<Instant>, window: Duration| {
                    times
                        .iter()
                        .filter(|t| now.saturating_duration_since(**t) < window)
                        .count()
                };
                let breaker = match track.and_then(|t| t.open_until) {
                    Some(until) if now < until => Breaker::Open {
                        remaining: until - now,
                    },
                    Some(_) => Breaker::HalfOpen,
                    None => Breaker::Closed {
                        failures: track.map_or(0, |t| within(&t.failures, spec.breaker.within)),
                        opens_at: spec.breaker.failures,
                    },
                };
                out.push(CommandView {
                    service: service.clone(),
                    command: command.clone(),
                    running: self.running.get(&key).copied().unwrap_or(0),
                    runs_in_window: track.map_or(0, |t| within(&t.starts, spec.max_runs.within)),
                    max_runs: spec.max_runs.count,
                    window: spec.max_runs.within,
                    breaker,
                    last: track.and_then(|t| t.last.clone()),
                });
            }
        }
        out
    }

    /// Commands whose breaker is open or half-open now (for the metric after a restart).
    pub fn open_breakers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.tracks
            .iter()
            .filter(|(_, t)| t.open_until.is_some())
            .map(|((s, c), _)| (s.as_str(), c.as_str()))
    }

    /// What to keep of `service`/`command` across a restart.
    pub fn saved(&self, service: &str, command: &str, now_ns: u64, now: Instant) -> Saved {
        let key = (service.to_string(), command.to_string());
        let Some(track) = self.tracks.get(&key) else {
            return Saved::default();
        };
        let ns = |i: &Instant| {
            now_ns.saturating_sub(now.saturating_duration_since(*i).as_nanos() as u64)
        };
        Saved {
            last_start: track.last_start.as_ref().map(ns),
            starts: track.starts.iter().map(ns).collect(),
            failures: track.failures.iter().map(ns).collect(),
            open_until: track
                .open_until
                .map(|u| now_ns + u.saturating_duration_since(now).as_nanos() as u64),
        }
    }
}

/// Drop the times older than `window` before `now`.
fn forget_before(times: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while times
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= window)
    {
        times.pop_front();
    }
}

/// The `Instant` of wall-clock `at_ns`, given that `now_ns` and `now` are the same moment.
fn instant_of(at_ns: u64, now_ns: u64, now: Instant) -> Option<Instant> {
    now.checked_sub(Duration::from_nanos(now_ns.saturating_sub(at_ns)))
}

#[cfg(test)]
mod tests;
