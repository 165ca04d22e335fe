//! Tests of the policy gate.

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
