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
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new("t.toml"), Path::new("/")).unwrap()
    }

    #[test]
    fn allow_list_concurrency_and_cooldown() {
        let c = config(
            "[services.web.commands]\nrestart = { run = \"true\", cooldown = \"10s\" }\nping = \"true\"\n",
        );
        let mut g = Gate::default();
        let t0 = Instant::now();
        assert_eq!(
            g.admit(&c, "db", "restart", t0).unwrap_err(),
            Refusal::UnknownService("db".into())
        );
        assert!(matches!(
            g.admit(&c, "web", "stop", t0).unwrap_err(),
            Refusal::UnknownCommand { .. }
        ));
        let (_, first) = g.admit(&c, "web", "restart", t0).unwrap();
        assert!(matches!(
            g.admit(&c, "web", "restart", t0).unwrap_err(),
            Refusal::AlreadyRunning { .. }
        ));
        let (_, ping) = g
            .admit(&c, "web", "ping", t0)
            .expect("other commands are independent");
        g.finish(&c, ping, false, t0);
        g.finish(&c, first, false, t0);
        let err = g
            .admit(&c, "web", "restart", t0 + Duration::from_secs(4))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`web`/`restart` is cooling down for another 6s"
        );
        assert!(
            g.admit(&c, "web", "restart", t0 + Duration::from_secs(10))
                .is_ok()
        );
        let (_, again) = g.admit(&c, "web", "ping", t0).unwrap();
        g.finish(&c, again, false, t0);
    }

    #[test]
    fn concurrency_allows_that_many_runs_at_once() {
        let c = config("[services.s.commands]\nc = { run = \"true\", concurrency = 2 }\n");
        let mut g = Gate::default();
        let t0 = Instant::now();
        let (_, a) = g.admit(&c, "s", "c", t0).unwrap();
        let (_, b) = g.admit(&c, "s", "c", t0).unwrap();
        assert_eq!(
            g.admit(&c, "s", "c", t0).unwrap_err().to_string(),
            "`s`/`c` is already running (2 of 2 allowed at once)"
        );
        g.finish(&c, a, false, t0);
        let (_, again) = g.admit(&c, "s", "c", t0).unwrap();
        g.finish(&c, b, false, t0);
        g.finish(&c, again, false, t0);
        assert!(g.running.is_empty());
    }

    #[test]
    fn no_services() {
        let c = config("");
        assert_eq!(
            Gate::default()
                .admit(&c, "a", "b", Instant::now())
                .unwrap_err(),
            Refusal::NoServices
        );
    }

    #[test]
    fn restored_starts_keep_their_cooldown() {
        let c = Config::parse(
            "[services.web.commands]\nrestart = { run = \"true\", cooldown = \"1m\" }\n",
            Path::new("t.toml"),
            Path::new("/"),
        )
        .unwrap();
        let mut g = Gate::default();
        let now = Instant::now();
        let wall = 1_000 * 1_000_000_000;
        // Started 20 s ago (before the restart): 40 s of cooldown left.
        let saved = Saved {
            last_start: Some(wall - 20 * 1_000_000_000),
            ..Saved::default()
        };
        g.restore_saved([("web".into(), "restart".into(), saved)], wall, now);
        assert!(matches!(
            g.admit(&c, "web", "restart", now),
            Err(Refusal::CoolingDown { remaining, .. }) if remaining.as_secs() == 40
        ));
        assert!(
            g.admit(&c, "web", "restart", now + Duration::from_secs(41))
                .is_ok()
        );
    }

    #[test]
    fn max_runs_refuses_the_excess_in_a_sliding_window() {
        let c = config(
            "[services.s.commands]\nc = { run = \"true\", max_runs = { count = 2, within = \"10m\" } }\n",
        );
        let mut g = Gate::default();
        let t0 = Instant::now();
        for at in [0, 60] {
            let t = t0 + Duration::from_secs(at);
            let (_, run) = g.admit(&c, "s", "c", t).unwrap();
            g.finish(&c, run, false, t);
        }
        let err = g
            .admit(&c, "s", "c", t0 + Duration::from_secs(120))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "rate limit: `s`/`c` started 2 times within 600s"
        );
        // The first start leaves the window ten minutes after it.
        assert!(g.admit(&c, "s", "c", t0 + Duration::from_secs(600)).is_ok());
    }

    #[test]
    fn the_breaker_opens_lets_one_trial_through_and_closes_on_success() {
        let c = config(
            "[services.s.commands]\nc = { run = \"false\", \
             breaker = { failures = 3, within = \"30m\", open_for = \"1h\" } }\n",
        );
        let mut g = Gate::default();
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let mut changes = Vec::new();
        for secs in [0, 10, 20] {
            let (_, run) = g.admit(&c, "s", "c", at(secs)).unwrap();
            changes.push(g.finish(&c, run, true, at(secs)));
        }
        assert_eq!(changes[..2], [None, None]);
        assert!(matches!(
            changes[2],
            Some(BreakerChange::Opened {
                failures: 3,
                after_trial: false,
                ..
            })
        ));
        assert!(matches!(
            g.admit(&c, "s", "c", at(1800)),
            Err(Refusal::CircuitOpen { remaining, .. }) if remaining.as_secs() == 1820
        ));
        // Open time over: one trial; a second request meanwhile waits for its verdict.
        let (_, trial) = g.admit(&c, "s", "c", at(3620)).unwrap();
        assert!(matches!(
            g.admit(&c, "s", "c", at(3621)),
            Err(Refusal::AlreadyRunning { .. })
        ));
        let reopened = g.finish(&c, trial, true, at(3625));
        assert!(matches!(
            reopened,
            Some(BreakerChange::Opened {
                after_trial: true,
                ..
            })
        ));
        assert!(g.admit(&c, "s", "c", at(3700)).is_err());
        let (_, trial) = g.admit(&c, "s", "c", at(3625 + 3600)).unwrap();
        assert_eq!(
            g.finish(&c, trial, false, at(7300)),
            Some(BreakerChange::Closed {
                service: "s".into(),
                command: "c".into()
            })
        );
        let (_, ok) = g.admit(&c, "s", "c", at(7400)).unwrap();
        assert_eq!(
            g.finish(&c, ok, true, at(7400)),
            None,
            "one failure after closing"
        );
    }

    #[test]
    fn a_trial_refuses_others_even_with_concurrency() {
        let c = config(
            "[services.s.commands]\nc = { run = \"false\", concurrency = 2, \
             breaker = { failures = 1, within = \"1m\", open_for = \"1m\" } }\n",
        );
        let mut g = Gate::default();
        let t0 = Instant::now();
        let (_, run) = g.admit(&c, "s", "c", t0).unwrap();
        assert!(g.finish(&c, run, true, t0).is_some());
        let later = t0 + Duration::from_secs(61);
        let (_, _trial) = g.admit(&c, "s", "c", later).unwrap();
        assert!(matches!(
            g.admit(&c, "s", "c", later),
            Err(Refusal::CircuitTrial { .. })
        ));
    }

    #[test]
    fn rate_and_breaker_state_survive_a_restart() {
        let c = config(
            "[services.s.commands]\nc = { run = \"false\", max_runs = { count = 5, within = \"1h\" }, \
             breaker = { failures = 2, within = \"1h\", open_for = \"1h\" } }\n",
        );
        let mut g = Gate::default();
        let now = Instant::now();
        let wall = 10_000 * 1_000_000_000;
        for _ in 0..2 {
            let (_, run) = g.admit(&c, "s", "c", now).unwrap();
            g.finish(&c, run, true, now);
        }
        let saved = g.saved("s", "c", wall, now);
        assert_eq!(saved.starts.len(), 2);
        assert_eq!(saved.open_until, Some(wall + 3600 * 1_000_000_000));
        // Ten minutes later, in a new process.
        let mut fresh = Gate::default();
        let later = now + Duration::from_secs(600);
        fresh.restore_saved(
            [("s".into(), "c".into(), saved)],
            wall + 600 * 1_000_000_000,
            later,
        );
        assert!(matches!(
            fresh.admit(&c, "s", "c", later),
            Err(Refusal::CircuitOpen { remaining, .. }) if remaining.as_secs() == 3000
        ));
    }

    #[test]
    fn max_concurrent_bounds_all_commands_together() {
        let c = config(
            "[policy]\nmax_concurrent = 2\n[services.s.commands]\na = \"true\"\nb = \"true\"\nc = \"true\"\n",
        );
        let mut g = Gate::default();
        let t0 = Instant::now();
        let (_, a) = g.admit(&c, "s", "a", t0).unwrap();
        let (_, _b) = g.admit(&c, "s", "b", t0).unwrap();
        assert_eq!(
            g.admit(&c, "s", "c", t0).unwrap_err().to_string(),
            "2 commands are running, policy.max_concurrent allows no more"
        );
        g.finish(&c, a, false, t0);
        assert!(g.admit(&c, "s", "c", t0).is_ok());
    }
}
