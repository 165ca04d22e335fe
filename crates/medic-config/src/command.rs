//! `[services.<service>.commands]`: the allow-list. A command is written as an argv array (run
//! without a shell), a string (run by `/bin/sh -c` exactly as written), or a table with `run`
//! and per-command limits.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub commands: BTreeMap<String, Command>,
}

/// One allow-listed command. Written as an argv array (run without a shell), a string (run by
/// `/bin/sh -c` exactly as written), or a table with `run` and per-command limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub program: Program,
    pub timeout: Duration,
    /// Minimum time between two starts, whoever asks.
    pub cooldown: Duration,
    /// Bytes of stdout + stderr kept; the rest is drained and dropped.
    pub output_cap: usize,
    /// Time between SIGTERM and SIGKILL on timeout.
    pub kill_grace: Duration,
    /// Runs of this command allowed at once (whoever asks); 1 by default.
    pub concurrency: usize,
    /// The command's whole environment besides `PATH` (medic's own is never passed on).
    pub env: BTreeMap<String, String>,
    /// Run as this account (medic must be root): its uid, its primary group unless `group`
    /// says otherwise, no supplementary groups.
    pub user: Option<String>,
    pub group: Option<String>,
    /// Working directory (absolute; default: medic's own, `/` under systemd).
    pub cwd: Option<std::path::PathBuf>,
    /// Starts allowed within a sliding window, whoever asks.
    pub max_runs: MaxRuns,
    /// Refuse a command that keeps failing (Monit's "N restarts within M cycles").
    pub breaker: Breaker,
}

/// At most `count` starts within any `within`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxRuns {
    pub count: usize,
    #[serde(with = "humantime_serde")]
    pub within: Duration,
}

impl Default for MaxRuns {
    fn default() -> Self {
        Self {
            count: 30,
            within: Duration::from_secs(3600),
        }
    }
}

/// After `failures` failed runs (non-zero exit, signal, timeout, cannot start) within `within`,
/// the command is refused for `open_for`; then one trial run decides: success closes the
/// breaker, failure opens it again.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Breaker {
    pub failures: usize,
    #[serde(with = "humantime_serde")]
    pub within: Duration,
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            failures: 5,
            within: Duration::from_secs(30 * 60),
            open_for: Duration::from_secs(30 * 60),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Program {
    Argv(Vec<String>),
    Shell(String),
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Program::Argv(argv) => write!(f, "{argv:?}"),
            Program::Shell(s) => write!(f, "sh -c {s:?}"),
        }
    }
}

impl Command {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
    pub const DEFAULT_OUTPUT_CAP: usize = 64 * 1024;
    pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

    pub fn new(program: Program) -> Self {
        Self {
            program,
            timeout: Self::DEFAULT_TIMEOUT,
            cooldown: Duration::ZERO,
            output_cap: Self::DEFAULT_OUTPUT_CAP,
            kill_grace: Self::DEFAULT_KILL_GRACE,
            concurrency: 1,
            env: BTreeMap::new(),
            user: None,
            group: None,
            cwd: None,
            max_runs: MaxRuns::default(),
            breaker: Breaker::default(),
        }
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CommandVisitor)
    }
}

struct CommandVisitor;

impl<'de> Visitor<'de> for CommandVisitor {
    type Value = Command;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a command: an argv array, a shell string, or a table with `run`")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Command, E> {
        Ok(Command::new(shell(s)?))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Command, A::Error> {
        let argv = Vec::<String>::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        Ok(Command::new(argv_program(argv)?))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Command, A::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            run: RunField,
            #[serde(default, with = "humantime_serde")]
            timeout: Option<Duration>,
            #[serde(default, with = "humantime_serde")]
            cooldown: Option<Duration>,
            #[serde(default)]
            output_cap: Option<usize>,
            #[serde(default, with = "humantime_serde")]
            kill_grace: Option<Duration>,
            #[serde(default)]
            concurrency: Option<usize>,
            #[serde(default)]
            env: BTreeMap<String, String>,
            #[serde(default)]
            user: Option<String>,
            #[serde(default)]
            group: Option<String>,
            #[serde(default)]
            cwd: Option<std::path::PathBuf>,
            #[serde(default)]
            max_runs: Option<MaxRuns>,
            #[serde(default)]
            breaker: Option<Breaker>,
        }
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "`run` must be an argv array or a shell string")]
        enum RunField {
            Argv(Vec<String>),
            Shell(String),
        }
        let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
        let program = match t.run {
            RunField::Argv(argv) => argv_program(argv)?,
            RunField::Shell(s) => shell(&s)?,
        };
        let mut c = Command::new(program);
        if let Some(timeout) = t.timeout {
            if timeout.is_zero() {
                return Err(de::Error::custom("`timeout` must be more than 0"));
            }
            c.timeout = timeout;
        }
        c.cooldown = t.cooldown.unwrap_or(c.cooldown);
        c.output_cap = t.output_cap.unwrap_or(c.output_cap);
        c.kill_grace = t.kill_grace.unwrap_or(c.kill_grace);
        if let Some(n) = t.concurrency {
            if n == 0 {
                return Err(de::Error::custom("`concurrency` must be at least 1"));
            }
            c.concurrency = n;
        }
        if let Some(bad) = t
            .env
            .keys()
            .find(|k| k.is_empty() || k.contains(['=', '\0']))
        {
            return Err(de::Error::custom(format!(
                "`env` key `{bad}` is not a variable name"
            )));
        }
        c.env = t.env;
        if t.user.as_deref() == Some("") || t.group.as_deref() == Some("") {
            return Err(de::Error::custom("`user` and `group` must not be empty"));
        }
        if t.cwd.as_ref().is_some_and(|d| !d.is_absolute()) {
            return Err(de::Error::custom("`cwd` must be an absolute path"));
        }
        (c.user, c.group, c.cwd) = (t.user, t.group, t.cwd);
        if let Some(m) = t.max_runs {
            if m.count == 0 || m.within.is_zero() {
                return Err(de::Error::custom(
                    "`max_runs` needs a `count` and a `within` of more than 0",
                ));
            }
            c.max_runs = m;
        }
        if let Some(b) = t.breaker {
            if b.failures == 0 || b.within.is_zero() || b.open_for.is_zero() {
                return Err(de::Error::custom(
                    "`breaker` needs `failures`, `within` and `open_for` of more than 0",
                ));
            }
            c.breaker = b;
        }
        Ok(c)
    }
}

fn shell<E: de::Error>(s: &str) -> Result<Program, E> {
    if s.trim().is_empty() {
        return Err(E::custom("a shell command must not be empty"));
    }
    Ok(Program::Shell(s.to_string()))
}

fn argv_program<E: de::Error>(argv: Vec<String>) -> Result<Program, E> {
    match argv.first() {
        None => Err(E::custom("an argv array needs at least the program")),
        Some(p) if p.is_empty() => Err(E::custom("the program (argv[0]) must not be empty")),
        Some(_) => Ok(Program::Argv(argv)),
    }
}
