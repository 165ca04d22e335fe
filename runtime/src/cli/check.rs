//! `medic check`: validate a config and try every rule with it, without touching the daemon's
//! state. Each rule is instantiated, `init`ed with its config, `describe`d, and called once with
//! a timer it did not set, `medic-check` (rules must ignore timers they do not know: a new
//! version gets the old one's), so a rule that traps or hangs on a call fails here rather than
//! in service. (An empty batch would not do: the SDK answers it without calling rule code.)

use std::fmt::Write as _;
use std::sync::Arc;

use crate::config::{Config, Program};
use crate::engine::compiler::Compiler;
use crate::engine::instance::Limits;
use crate::engine::registry::{rule_files, rule_name};
use crate::engine::rule::{HostParts, RuleSpec, StartError, rule_config};
use crate::engine::series::SeriesTable;
use crate::mqtt::options::Connect;
use crate::store::Store;
use crate::types_db::TypesDb;

/// The timer every rule is called with once.
const CHECK_TIMER: &str = "medic-check";

pub struct RuleReport {
    pub name: String,
    pub version: String,
    pub subscriptions: String,
    pub result: Result<(), String>,
}

/// Returns the report lines and whether everything passed.
pub fn check(config: &Config) -> anyhow::Result<(String, bool)> {
    crate::effects::executor::check_accounts(config).map_err(anyhow::Error::msg)?;
    let compiler = Compiler::new(None)?;
    let host = HostParts {
        state: Store::in_memory()?,
        held: Default::default(),
        series: Arc::new(SeriesTable::new(Arc::new(TypesDb::default()))),
        clock: Default::default(),
        limits: Limits::from_config(&config.rules),
        history: None,
    };
    let mut reports = Vec::new();
    let files = if config.rules.dir.exists() {
        rule_files(&config.rules.dir)?
    } else {
        Vec::new()
    };
    for path in &files {
        let name = rule_name(path).unwrap_or_default().to_string();
        reports.push(check_rule(&compiler, &host, config, path, name));
    }

    let mut out = String::new();
    let mut ok = true;
    let width = reports
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "{:width$}  {:10}  {:6}  SUBSCRIPTIONS / ERROR",
        "RULE", "VERSION", "STATUS"
    )?;
    for r in &reports {
        let (status, detail) = match &r.result {
            Ok(()) => ("ok", r.subscriptions.clone()),
            Err(e) => {
                ok = false;
                ("FAILED", e.clone())
            }
        };
        writeln!(
            out,
            "{:width$}  {:10}  {:6}  {detail}",
            r.name, r.version, status
        )?;
    }
    if files.is_empty() {
        writeln!(out, "(no .wasm rules in {})", config.rules.dir.display())?;
    }
    for name in config.rules.config.keys() {
        if !reports.iter().any(|r| &r.name == name) {
            writeln!(
                out,
                "warning: [rules.config.{name}] has no {name}.wasm in the rules directory"
            )?;
        }
    }
    if let Some(m) = &config.mqtt {
        // Credentials and TLS material are read now, not at the first connection.
        let ready = Connect::from_config(m, &config.daemon.node).and_then(|c| c.check());
        match ready {
            Ok(_) => writeln!(out, "mqtt: {} (credentials and TLS ok)", m.broker)?,
            Err(e) => {
                ok = false;
                writeln!(out, "mqtt: FAILED: {e:#}")?;
            }
        }
        // Keys are read now too: a start must not be the first to find one unreadable.
        let signing =
            crate::mqtt::signed::Senders::load(&m.auth, m.max_clock_skew).and_then(|_| {
                m.auth.key_file.as_deref().map_or(Ok(()), |key| {
                    crate::mqtt::signed::Signer::load(&config.daemon.node, key).map(drop)
                })
            });
        match signing {
            Ok(()) if m.auth.senders.is_empty() && m.auth.key_file.is_none() => {}
            Ok(()) => writeln!(
                out,
                "mqtt.auth: {} sender key(s){}{} ok",
                m.auth.senders.len(),
                if m.auth.key_file.is_some() {
                    " and this node's key"
                } else {
                    ""
                },
                if m.auth.require_signed {
                    ", signatures required,"
                } else {
                    ""
                },
            )?,
            Err(e) => {
                ok = false;
                writeln!(out, "mqtt.auth: FAILED: {e:#}")?;
            }
        }
        for rule in m.grants.keys() {
            if !reports.iter().any(|r| &r.name == rule) {
                writeln!(
                    out,
                    "warning: mqtt.grants.{rule} names no rule in the rules directory"
                )?;
            }
        }
    }
    for (service, s) in &config.services {
        for (command, c) in &s.commands {
            if let Program::Argv(argv) = &c.program
                && !program_exists(&argv[0])
            {
                writeln!(
                    out,
                    "warning: services.{service}.commands.{command}: `{}` not found",
                    argv[0]
                )?;
            }
        }
    }
    Ok((out, ok))
}

fn check_rule(
    compiler: &Compiler,
    host: &HostParts,
    config: &Config,
    path: &std::path::Path,
    name: String,
) -> RuleReport {
    let mut report = RuleReport {
        name: name.clone(),
        version: "-".into(),
        subscriptions: String::new(),
        result: Ok(()),
    };
    let attempt = || -> Result<(String, String), String> {
        let compiled = compiler.compile_file(path).map_err(|e| format!("{e:#}"))?;
        let spec = RuleSpec {
            name: name.as_str().into(),
            config: rule_config(&config.rules, &name).map_err(|e| format!("{e:#}"))?,
            topics_granted: crate::engine::rule::topics_granted(&config.rules, &name),
            compiled,
        };
        let instance = spec
            .instantiate(host)
            .map_err(|e| StartError::from(e).to_string())?;
        let mut started = spec.start(instance).map_err(|e| e.to_string())?;
        let info = &started.subscription.info;
        let mut subs: Vec<String> = Vec::new();
        subs.extend(info.values.iter().map(|p| format!("values {p}")));
        subs.extend(
            info.notifications
                .iter()
                .map(|p| format!("notifications {p}")),
        );
        subs.extend(info.topics.iter().map(|p| format!("topic {p}")));
        let version = info.version.clone();
        let mut probe = crate::engine::batch::BatchBuilder::default();
        probe.push_event(crate::engine::bindings::Event::Timer(CHECK_TIMER.into()));
        started
            .instance
            .on_events(probe.batch())
            .map_err(|e| format!("faulted on a `{CHECK_TIMER}` timer: {e}"))?;
        Ok((version, subs.join(", ")))
    };
    match attempt() {
        Ok((version, subs)) => {
            report.version = version;
            report.subscriptions = if subs.is_empty() {
                "(none)".into()
            } else {
                subs
            };
        }
        Err(e) => report.result = Err(e),
    }
    report
}

fn program_exists(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, short)]
    config: std::path::PathBuf,
}

pub fn run(args: Args) -> std::process::ExitCode {
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return super::fail(e),
    };
    match check(&config) {
        Ok((report, ok)) => {
            print!("{report}");
            if ok {
                println!("{}: ok", args.config.display());
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => super::fail(format!("{e:#}")),
    }
}
