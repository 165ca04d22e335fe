//! What the effects show of themselves, read-only: each command's policy state and each
//! sink's deliveries, for `GET /status` and the page. Plain data, so readers depend on nothing
//! that acts.

use std::time::Duration;

use serde::Serialize;

/// One allow-listed command as the policy gate sees it now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandView {
    pub service: String,
    pub command: String,
    /// Runs in progress.
    pub running: usize,
    /// Starts within the `max_runs` window, and the limit.
    pub runs_in_window: usize,
    pub max_runs: usize,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    pub breaker: Breaker,
    /// The last run that ended since medic started.
    pub last: Option<LastRun>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Breaker {
    Closed {
        /// Failures within the breaker's window, and how many open it.
        failures: usize,
        opens_at: usize,
    },
    Open {
        #[serde(with = "humantime_serde")]
        remaining: Duration,
    },
    /// `open_for` has passed: the next request is the trial run (or it is running).
    HalfOpen,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastRun {
    /// Wall clock, nanoseconds since the epoch.
    pub ended_ns: u64,
    /// `succeeded`, `failed`, `timed out` or `interrupted`, as in the history.
    pub outcome: &'static str,
    pub code: Option<i32>,
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
}

/// One sink (`[sinks.<name>]`) since medic started.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SinkView {
    pub name: String,
    /// `file` or `http`.
    pub kind: &'static str,
    pub queued: u64,
    /// Written (file) or acknowledged by the destination (http).
    pub delivered: u64,
    /// Kept on disk while the destination was away (http).
    pub retained: u64,
    pub retried: u64,
    pub dropped: u64,
    /// Emits refused: not granted to the rule.
    pub refused: u64,
    /// What waits on disk now (http).
    pub retained_bytes: u64,
    /// The last delivery error, until a delivery succeeds again.
    pub last_error: Option<String>,
}
