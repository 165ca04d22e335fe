//! `[probes.<name>]`: a check command medic runs on a schedule, whose results reach rules as
//! values and notifications (Monit checks, SlapOS promises). A probe is a command like any
//! other (the same table as `[services.*.commands]`, plus `every`): it runs through the
//! executor, with its limits and an audit record, as service `probe-<name>`, command `check`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use super::command::{Breaker, Command, MaxRuns};

/// The command every probe's service has.
pub const CHECK: &str = "check";

#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub every: Duration,
    pub command: Command,
    /// Whether a remote command (MQTT) may run it too. Off: a flood of remote runs would take
    /// the probe's one slot and its scheduled checks would be refused.
    pub remote: bool,
}

impl Probe {
    /// The allow-list service a probe runs as.
    pub fn service(name: &str) -> String {
        format!("probe-{name}")
    }
}

impl<'de> Deserialize<'de> for Probe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut table = toml::Table::deserialize(d)?;
        let every = match table.remove("every") {
            Some(toml::Value::String(s)) => humantime::parse_duration(&s)
                .map_err(|e| de::Error::custom(format!("`every`: {e}")))?,
            Some(_) => return Err(de::Error::custom("`every` must be a duration like \"30s\"")),
            None => return Err(de::Error::custom("a probe needs `every` (e.g. \"30s\")")),
        };
        for policy in ["cooldown", "max_runs", "breaker", "concurrency"] {
            if table.contains_key(policy) {
                return Err(de::Error::custom(format!(
                    "`{policy}` is not for probes: a probe runs every `every`, one at a time"
                )));
            }
        }
        let remote = match table.remove("remote") {
            None => false,
            Some(toml::Value::Boolean(b)) => b,
            Some(_) => return Err(de::Error::custom("`remote` must be true or false")),
        };
        let timeout_set = table.contains_key("timeout");
        let mut command =
            Command::deserialize(toml::Value::Table(table)).map_err(de::Error::custom)?;
        if !timeout_set {
            command.timeout = command.timeout.min(every);
        }
        // A failing check is what a probe is for: no breaker, no rate limit beyond its schedule.
        command.breaker = Breaker {
            failures: usize::MAX,
            ..Breaker::default()
        };
        command.max_runs = MaxRuns {
            count: usize::MAX,
            within: Duration::from_secs(1),
        };
        Ok(Probe {
            every,
            command,
            remote,
        })
    }
}

/// Checks on `[probes]` as a whole, against the services they would shadow.
pub fn validate(
    probes: &BTreeMap<String, Probe>,
    services: &BTreeMap<String, super::command::Service>,
) -> Result<(), String> {
    for (name, probe) in probes {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "probes.{name}: a probe name is letters, digits, `_` and `-`"
            ));
        }
        if probe.every < Duration::from_secs(1) {
            return Err(format!("probes.{name}.every must be at least 1s"));
        }
        let service = Probe::service(name);
        if services.contains_key(&service) {
            return Err(format!(
                "services.{service} is taken by probes.{name} (a probe runs as that service)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{Config, Program};

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("medic.toml"), Path::new("/etc/medic"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_probe_is_a_command_of_its_own_service_without_breaker_or_rate_limit() {
        let c = parse(
            "[probes.web]\nrun = [\"curl\", \"-fsS\", \"http://127.0.0.1/\"]\nevery = \"30s\"\n\
             [probes.db]\nrun = \"pg_isready\"\nevery = \"10s\"\ntimeout = \"20s\"\n",
        )
        .unwrap();
        let web = &c.services["probe-web"].commands[CHECK];
        assert_eq!(
            web.program,
            Program::Argv(vec![
                "curl".into(),
                "-fsS".into(),
                "http://127.0.0.1/".into()
            ])
        );
        assert_eq!(c.probes["web"].every, Duration::from_secs(30));
        // No timeout given: the default, but never longer than the period.
        assert_eq!(web.timeout, Duration::from_secs(30));
        assert_eq!(
            c.services["probe-db"].commands[CHECK].timeout,
            Duration::from_secs(20)
        );
        assert_eq!(web.breaker.failures, usize::MAX);
        assert_eq!(web.max_runs.count, usize::MAX);
    }

    #[test]
    fn bad_probes_are_refused_with_their_name() {
        for (text, why) in [
            ("[probes.web]\nrun = \"true\"\n", "a probe needs `every`"),
            (
                "[probes.web]\nrun = \"true\"\nevery = \"soon\"\n",
                "`every`:",
            ),
            (
                "[probes.web]\nrun = \"true\"\nevery = \"500ms\"\n",
                "at least 1s",
            ),
            (
                "[probes.web]\nrun = \"true\"\nevery = \"5s\"\ncooldown = \"1m\"\n",
                "`cooldown` is not for probes",
            ),
            ("[probes.web]\nevery = \"5s\"\n", "run"),
            (
                "[probes.\"a b\"]\nrun = \"true\"\nevery = \"5s\"\n",
                "a probe name is",
            ),
            (
                "[probes.web]\nrun = \"true\"\nevery = \"5s\"\n[services.probe-web.commands]\nx = \"true\"\n",
                "services.probe-web is taken by probes.web",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
