//! `[sinks.<name>]`: where records that rules emit go, and `[rules.grants.<rule>]`: which sinks
//! each rule may emit to (nothing is granted by default).

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Sink {
    /// Append each record as a line to a file (reopened on SIGHUP, for logrotate).
    File(FileSink),
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
}
