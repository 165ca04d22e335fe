//! `[sinks.<name>]`: where records that rules emit go, and `[rules.grants.<rule>]`: which sinks
//! each rule may emit to (nothing is granted by default).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Sink {
    /// Append each record as a line to a file (reopened on SIGHUP, for logrotate).
    File(FileSink),
    /// POST records in batches; what cannot be delivered waits on disk, in order.
    Http(HttpSink),
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Records joined by newlines (Influx line protocol: InfluxDB's or VictoriaMetrics' `/write`).
    #[default]
    Lines,
    /// A JSON array of the records (each a JSON value; one that is not goes as a string).
    Json,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSink {
    /// `http://` or `https://` (the certificate checked against the system's roots).
    pub url: String,
    #[serde(default)]
    pub format: Format,
    /// A batch goes when it has this many records ...
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// ... or when its first record has waited this long.
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A file whose text is sent as `Authorization: Bearer <text>`.
    pub token_file: Option<PathBuf>,
    /// For one request.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Batches kept on disk (in `state_dir/sinks/<name>/`) while the destination is away; past
    /// it the oldest go first, counted.
    #[serde(default = "default_retention_max_bytes")]
    pub retention_max_bytes: u64,
    #[serde(default = "default_http_queue")]
    pub queue: usize,
}

fn default_max_batch() -> usize {
    1000
}

fn default_max_age() -> Duration {
    Duration::from_secs(1)
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_retention_max_bytes() -> u64 {
    100 << 20
}

fn default_http_queue() -> usize {
    100_000
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSink {
    pub path: PathBuf,
    /// Records waiting to be written at most; past it new ones are dropped and counted.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

fn default_queue() -> usize {
    10_000
}

/// What one rule may use beyond commands.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleGrant {
    #[serde(default)]
    pub sinks: Vec<String>,
    /// Plugins the rule may name as its notifications' source (`ctx.notify_as`): a rule standing
    /// in for a collectd plugin. Without it, a rule's notifications come from plugin `medic`.
    #[serde(default)]
    pub notify_as: Vec<String>,
    /// MQTT topic filters the rule may subscribe to (its `describe` topics must each fall
    /// within one): what other nodes publish is not every rule's to read.
    #[serde(default)]
    pub subscribe: Vec<String>,
}

/// Whether every topic `filter` matches is matched by `grant` too (MQTT filters, level by
/// level: `#` covers the rest, `+` one level but not a `#`).
pub fn filter_within(filter: &str, grant: &str) -> bool {
    // Wildcards at the first level never match `$` topics (`$SYS/…`): only a literal grant does.
    if filter.starts_with('$') && (grant.starts_with('+') || grant.starts_with('#')) {
        return false;
    }
    let mut asked = filter.split('/');
    let mut granted = grant.split('/');
    loop {
        match (asked.next(), granted.next()) {
            (_, Some("#")) => return true,
            (None, None) => return true,
            (Some("#"), _) | (None, Some(_)) | (Some(_), None) => return false,
            (Some(_), Some("+")) => {}
            (Some(a), Some(g)) if a == g => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod grant_tests {
    use super::filter_within;

    #[test]
    fn a_filter_is_within_a_grant_only_when_everything_it_matches_is() {
        for (filter, grant) in [
            ("a/b", "a/b"),
            ("a/b", "a/+"),
            ("a/+", "a/+"),
            ("a/b/c", "a/#"),
            ("a/#", "a/#"),
            ("a/+/c", "#"),
            ("a", "a/#"),
        ] {
            assert!(filter_within(filter, grant), "{filter} within {grant}");
        }
        for (filter, grant) in [
            ("a/#", "a/+"),
            ("a/+", "a/b"),
            ("a/b/c", "a/+"),
            ("a", "a/+"),
            ("b/c", "a/#"),
            ("#", "a/#"),
            ("$SYS/x", "+/x"),
        ] {
            assert!(!filter_within(filter, grant), "{filter} not within {grant}");
        }
    }
}
