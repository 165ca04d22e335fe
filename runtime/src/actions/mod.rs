//! Effects: what rules (and later remote controllers) ask for, after the policy gate.

pub mod executor;
pub mod policy;

use std::sync::Arc;
use std::time::Duration;

/// A request to run one allow-listed command.
pub struct Request {
    /// Who asked: a rule name, or `mqtt:<task id>` for a remote command.
    pub origin: Arc<str>,
    /// Number of this decision in logs and the audit trail.
    pub action_id: u64,
    pub service: String,
    pub command: String,
    pub reason: String,
    /// Where the outcome goes back to (the asking rule's queue).
    pub reply: Box<dyn FnOnce(Outcome) + Send>,
}

/// What happened to a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub action_id: u64,
    pub service: String,
    pub command: String,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub output: String,
    /// Why it did not run or did not finish normally (refused, timed out, failed to start).
    pub error: Option<String>,
    /// Set when the policy gate refused it (it never ran).
    pub refusal: Option<policy::Refusal>,
    /// It ran past its timeout and was killed.
    pub timed_out: bool,
    pub duration: Duration,
}

/// Hands requests to the executor task; cloneable, callable from any thread.
pub type ActionSink = tokio::sync::mpsc::UnboundedSender<Request>;

/// Where a rule's actions go: the executor, and the MQTT client when one is configured.
#[derive(Clone)]
pub struct Effects {
    pub commands: ActionSink,
    pub mqtt: Option<crate::mqtt::MqttSink>,
}

/// Action ids: unique across restarts without persistence, by starting from the clock.
pub fn next_action_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let _ = NEXT.compare_exchange(
        0,
        crate::ingest::value::now_ns() / 1_000,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    NEXT.fetch_add(1, Ordering::Relaxed)
}
