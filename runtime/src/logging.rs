//! Log output: human-readable by default, JSON lines for log shippers. `RUST_LOG` wins over
//! `--log-level` so an operator can turn up one module without a flag change.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,medic={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Text from outside (a peer's packet, an MQTT payload, what a rule says) made safe for a log
/// line: control characters (newline, ESC, …) are written escaped, so such text can never start
/// a forged line or steer a terminal. The JSON log format escapes on its own.
pub struct Untrusted<'a>(pub &'a str);

impl std::fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// The one rate-limited-log helper: logs the first occurrence, then at most once per
/// `every` with how many were suppressed in between. Keep one per call site (a field of the
/// task that logs), so a flood of one kind never hides another.
#[derive(Debug)]
pub struct RateLimited {
    every: std::time::Duration,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl RateLimited {
    pub const DEFAULT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    pub fn new(every: std::time::Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Call `emit(suppressed)` if a line is due now; otherwise count this one as suppressed.
    pub fn log(&mut self, emit: impl FnOnce(u64)) {
        if self.last.is_some_and(|t| t.elapsed() < self.every) {
            self.suppressed += 1;
            return;
        }
        emit(self.suppressed);
        self.suppressed = 0;
        self.last = Some(std::time::Instant::now());
    }
}

impl Default for RateLimited {
    fn default() -> Self {
        Self::new(Self::DEFAULT_EVERY)
    }
}

/// A count of things dropped (a full queue), shared between threads, said at most once per
/// interval with the running total: the count is never lost, the log never flooded.
#[derive(Debug)]
pub struct Dropped {
    total: std::sync::atomic::AtomicU64,
    say: std::sync::Mutex<RateLimited>,
}

impl Dropped {
    pub fn new(every: std::time::Duration) -> Self {
        Self {
            total: std::sync::atomic::AtomicU64::new(0),
            say: std::sync::Mutex::new(RateLimited::new(every)),
        }
    }

    /// Count one; `emit(total, suppressed)` when a line is due.
    pub fn count(&self, emit: impl FnOnce(u64, u64)) {
        let total = 1 + self
            .total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut say = self.say.lock().unwrap_or_else(|p| p.into_inner());
        say.log(|suppressed| emit(total, suppressed));
    }

    pub fn total(&self) -> u64 {
        self.total.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// [`RateLimited`] per kind of event (an error variant, say), so a flood of one kind never
/// hides the first line of another. Meant for a small, fixed set of kinds.
#[derive(Debug)]
pub struct RateLimitedByKind<K> {
    kinds: std::collections::HashMap<K, RateLimited>,
    every: std::time::Duration,
}

impl<K> Default for RateLimitedByKind<K> {
    fn default() -> Self {
        Self::new(RateLimited::DEFAULT_EVERY)
    }
}

impl<K> RateLimitedByKind<K> {
    pub fn new(every: std::time::Duration) -> Self {
        Self {
            kinds: std::collections::HashMap::new(),
            every,
        }
    }
}

impl<K: std::hash::Hash + Eq> RateLimitedByKind<K> {
    pub fn log(&mut self, kind: K, emit: impl FnOnce(u64)) {
        let every = self.every;
        let limit = self
            .kinds
            .entry(kind)
            .or_insert_with(|| RateLimited::new(every));
        limit.log(emit);
    }
}

#[cfg(test)]
mod tests {
    use super::{RateLimited, RateLimitedByKind};

    #[test]
    fn untrusted_text_cannot_forge_a_line() {
        let text = super::Untrusted("evil\nFAKE\u{1b}[31m \u{e9}").to_string();
        assert_eq!(text, "evil\\nFAKE\\u{1b}[31m \u{e9}");
    }

    #[test]
    fn each_kind_gets_its_own_first_line() {
        let mut r = RateLimitedByKind::default();
        let mut lines = Vec::new();
        for kind in ["a", "a", "b", "a", "b"] {
            r.log(kind, |s| lines.push((kind, s)));
        }
        assert_eq!(lines, vec![("a", 0), ("b", 0)]);
    }
    use std::time::Duration;

    #[test]
    fn logs_first_then_counts_what_it_suppressed() {
        let mut r = RateLimited::new(Duration::from_millis(50));
        let mut lines = Vec::new();
        for _ in 0..3 {
            r.log(|s| lines.push(s));
        }
        std::thread::sleep(Duration::from_millis(60));
        r.log(|s| lines.push(s));
        assert_eq!(lines, vec![0, 2]);
    }
}
