//! The policy gate every run request passes, whoever asks: the command must be on the
//! allow-list, below its concurrency (one run at a time by default), and out of its cooldown. The host enforces this whatever a
//! rule decides.

use std::collections::HashMap;
use std::time::Instant;

use crate::config::{Command, Config};
use crate::event::Refusal;

type Key = (String, String);

#[derive(Default)]
pub struct Gate {
    running: HashMap<Key, usize>,
    last_start: HashMap<Key, Instant>,
}

/// Proof that a run was admitted; hand it back with [`Gate::finish`].
#[derive(Debug)]
pub struct Admitted {
    key: Key,
}

impl Gate {
    /// Admit a run now or say why not. Admission marks it running and starts its cooldown.
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
        if let Some(last) = self.last_start.get(&key) {
            let since = now.saturating_duration_since(*last);
            if since < spec.cooldown {
                return Err(Refusal::CoolingDown {
                    service: key.0,
                    command: key.1,
                    remaining: spec.cooldown - since,
                });
            }
        }
        *self.running.entry(key.clone()).or_default() += 1;
        self.last_start.insert(key.clone(), now);
        Ok((spec, Admitted { key }))
    }

    /// Take the last starts recorded before a restart (`(service, command, ns since the
    /// epoch)`), so cooldowns carry over; `now_ns` and `now` are the same moment on both clocks.
    pub fn restore(
        &mut self,
        starts: impl IntoIterator<Item = (String, String, u64)>,
        now_ns: u64,
        now: Instant,
    ) {
        for (service, command, at) in starts {
            let ago = std::time::Duration::from_nanos(now_ns.saturating_sub(at));
            if let Some(when) = now.checked_sub(ago) {
                self.last_start.insert((service, command), when);
            }
        }
    }

    pub fn finish(&mut self, admitted: Admitted) {
        if let Some(n) = self.running.get_mut(&admitted.key) {
            *n -= 1;
            if *n == 0 {
                self.running.remove(&admitted.key);
            }
        }
    }
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
        g.finish(ping);
        g.finish(first);
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
        g.finish(again);
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
        g.finish(a);
        let (_, again) = g.admit(&c, "s", "c", t0).unwrap();
        g.finish(b);
        g.finish(again);
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
        g.restore(
            [("web".into(), "restart".into(), wall - 20 * 1_000_000_000)],
            wall,
            now,
        );
        assert!(matches!(
            g.admit(&c, "web", "restart", now),
            Err(Refusal::CoolingDown { remaining, .. }) if remaining.as_secs() == 40
        ));
        assert!(
            g.admit(&c, "web", "restart", now + Duration::from_secs(41))
                .is_ok()
        );
    }
}
