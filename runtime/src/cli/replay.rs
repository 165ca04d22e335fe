//! `medic replay`: read a feed (JSON lines, or a directory of collectd datagrams), replay it
//! through the rules (`crate::replay`), print each action as a JSON line, and compare with
//! `--expect`.

use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::Config;
use crate::replay::feed::{self, Entry, FeedError};
use crate::replay::{Replay, Summary, expect};
use crate::sources::collectd::udp::AuthFile;
use collectd_codec::network::SecurityLevel;

pub struct Options {
    pub config: PathBuf,
    /// A directory of `.wasm` rules or one file; `rules.dir` of the config when absent.
    pub rules: Option<PathBuf>,
    /// A JSON-lines file, `-` for stdin, or a directory of `.bin` datagrams.
    pub feed: PathBuf,
    pub expect: Option<PathBuf>,
    pub level: SecurityLevel,
    pub auth_file: Option<PathBuf>,
    pub replay: crate::replay::Options,
}

/// How a replay ended, for the exit status.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// As expected (or, without `--expect`, no rule faulted).
    Passed,
    /// Different from `--expect` (the diff is on stderr), or a rule faulted.
    Failed,
}

pub fn replay(o: &Options) -> anyhow::Result<Verdict> {
    let config = Config::load(&o.config).map_err(anyhow::Error::msg)?;
    let expected = match &o.expect {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Some(expect::read(&text, &path.display().to_string()).map_err(anyhow::Error::msg)?)
        }
        None => None,
    };
    let rules = o.rules.clone().unwrap_or_else(|| config.rules.dir.clone());
    let mut replay = Replay::new(config, &rules, o.replay)?;
    let started = Instant::now();
    for entry in entries(o)? {
        replay.entry(entry?)?;
    }
    let (lines, summary) = replay.finish();
    let took = started.elapsed();
    let lines: Vec<String> = lines.iter().map(|l| l.to_json_line()).collect();
    let mut out = std::io::stdout().lock();
    for line in &lines {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    eprintln!("{}", describe(&summary, lines.len(), took));
    for why in &summary.refusals {
        eprintln!("value list refused: {why}");
    }
    let verdict = match &expected {
        Some(expected) => match expect::compare(expected, &lines) {
            None => Verdict::Passed,
            Some(diff) => {
                let name = o.expect.as_deref().map(Path::display);
                eprintln!(
                    "the actions differ from {} (- expected, + replayed):",
                    name.unwrap()
                );
                eprint!("{diff}");
                Verdict::Failed
            }
        },
        None if summary.faults > 0 => Verdict::Failed,
        None => Verdict::Passed,
    };
    Ok(verdict)
}

fn entries(o: &Options) -> anyhow::Result<Box<dyn Iterator<Item = Result<Entry, FeedError>>>> {
    let path = &o.feed;
    if path.as_os_str() == "-" {
        let stdin = BufReader::new(std::io::stdin());
        return Ok(Box::new(feed::read_lines(stdin, "stdin".into())));
    }
    if path.is_dir() {
        let credentials = AuthFile::load(o.auth_file.as_deref())?
            .credentials()
            .clone();
        let entries = feed::read_captures(path, o.level, &credentials)?;
        return Ok(Box::new(entries.into_iter().map(Ok)));
    }
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = path.display().to_string();
    Ok(Box::new(feed::read_lines(BufReader::new(file), name)))
}

fn describe(s: &Summary, actions: usize, took: Duration) -> String {
    let rate = s.entries as f64 / took.as_secs_f64().max(1e-9);
    let dropped = match s.dropped {
        0 => String::new(),
        n => format!(" ({n} events dropped while a rule waited out its fault backoff)"),
    };
    format!(
        "replayed {} events ({} value lists, {} refused) spanning {} in {:.2?} ({:.0} events/s): \
         {} rule calls, {} timers fired, {} actions, {} faults{dropped}",
        s.entries,
        s.value_lists,
        s.refused,
        humantime::format_duration(Duration::from_millis(s.span.as_millis() as u64)),
        took,
        rate,
        s.calls,
        s.timers_fired,
        actions,
        s.faults
    )
}

#[derive(clap::Args)]
pub struct Args {
    /// The medic.toml whose rule configs, allow-list, policy and MQTT grants apply.
    #[arg(long, short)]
    config: PathBuf,
    /// A directory of .wasm rules or one .wasm file (default: the config's rules.dir).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Compare the actions with this file (JSON lines, as replay prints them).
    #[arg(long)]
    expect: Option<PathBuf>,
    /// Let every admitted command "exit" at once with this status and hand the rule that
    /// result (default: no result, nothing ran; refused commands always give theirs).
    #[arg(long, allow_negative_numbers = true)]
    assume_exit: Option<i32>,
    /// For a directory of datagrams: the security level they were sent with.
    #[arg(long, default_value = "none", value_parser = super::security_level())]
    security_level: SecurityLevel,
    /// For a directory of datagrams: collectd's AuthFile, to read encrypted ones.
    #[arg(long)]
    auth_file: Option<PathBuf>,
    /// JSON lines (as `medic record` or `medic decode` write them; `-` for stdin), or a
    /// directory of collectd network datagrams (`.bin`).
    feed: PathBuf,
}

/// Exit 0 as expected, 1 on a difference or a fault, 2 when the replay cannot be done.
pub fn run(a: Args) -> std::process::ExitCode {
    let options = Options {
        config: a.config,
        rules: a.rules,
        feed: a.feed,
        expect: a.expect,
        level: a.security_level,
        auth_file: a.auth_file,
        replay: crate::replay::Options {
            assume_exit: a.assume_exit,
        },
    };
    match replay(&options) {
        Ok(Verdict::Passed) => std::process::ExitCode::SUCCESS,
        Ok(Verdict::Failed) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("medic: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
