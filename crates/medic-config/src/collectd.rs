//! `[collectd]`: the local collectd whose config medic may replace on request (lua-collectd-
//! monitor's "send collectd.conf"): where its config and pid file are, how it is checked,
//! stopped and started.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::command::Program;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Collectd {
    /// Off by default: replacing collectd.conf runs the submitted config's plugins as the
    /// user collectd runs as (root, usually), so anyone who may publish on the command topic
    /// would be root. Turning it on needs `mqtt.max_age` (a captured request must not be
    /// replayed once the dedupe window has passed).
    #[serde(default)]
    pub allow_remote: bool,
    /// Take replacements over plain `mqtt://` too (off: only over `mqtts://`, where the
    /// broker's certificate is checked and nobody on the path reads or changes the request).
    #[serde(default)]
    pub allow_insecure_transport: bool,
    /// The account `collectd -T` checks a submitted config as (it loads the config's plugins):
    /// an unprivileged one keeps a `<Plugin python>` block of a config that is then refused
    /// from running as root. The stop and start run as medic (they manage the service).
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    /// The live collectd.conf.
    pub config: PathBuf,
    pub pid_file: PathBuf,
    /// The collectd binary, for `-T -C` checks and the default start.
    #[serde(default = "default_binary")]
    pub binary: PathBuf,
    /// How to stop collectd. Default: `systemctl stop collectd` when a systemd unit exists,
    /// else SIGTERM to the pid in `pid_file`.
    #[serde(default, deserialize_with = "program")]
    pub stop: Option<Program>,
    /// How to start it. Default: `systemctl start collectd` when a systemd unit exists, else
    /// `<binary> -C <config> -P <pid_file>`.
    #[serde(default, deserialize_with = "program")]
    pub start: Option<Program>,
    /// How long each step (check, stop, the pid going, start, a new pid) may take.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_binary() -> PathBuf {
    PathBuf::from("/usr/sbin/collectd")
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// An argv array (no shell) or a shell string, as a command's `run`.
fn program<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Program>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "an argv array or a shell string")]
    enum Run {
        Argv(Vec<String>),
        Shell(String),
    }
    Ok(Some(match Run::deserialize(d)? {
        Run::Argv(argv) if argv.is_empty() => {
            return Err(serde::de::Error::custom("an argv array needs a program"));
        }
        Run::Argv(argv) => Program::Argv(argv),
        Run::Shell(s) => Program::Shell(s),
    }))
}
