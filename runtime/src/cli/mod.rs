//! medic's subcommands: each module owns its command-line arguments (`Args`, a clap struct)
//! and a `run` that turns them into an exit status; `main.rs` only lists them. Each is a small
//! program over the same parts the daemon uses, so what they accept and print agrees with
//! what the daemon does.

pub mod check;
pub mod decode;
pub mod history;
pub mod import_lcm;
pub mod new_rule;
pub mod record;
pub mod reload;
pub mod replay;
pub mod run;
pub mod send;
pub mod status;

use std::process::ExitCode;

use crate::config::SecurityLevel;

/// Say what went wrong, as every subcommand does: `medic: …` on stderr, exit status 1.
pub fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("medic: {message}");
    ExitCode::FAILURE
}

/// A tokio runtime for a subcommand that needs one (the daemon, `record`, `decode --listen`).
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|e| fail(format!("cannot start the async runtime: {e}")))
}

/// `--security-level`, spelled as in collectd's config, with the choices in `--help`.
fn security_level() -> impl clap::builder::TypedValueParser<Value = SecurityLevel> {
    use clap::builder::TypedValueParser;
    let names = SecurityLevel::ALL.map(SecurityLevel::as_str);
    clap::builder::PossibleValuesParser::new(names)
        .map(|name| name.parse().expect("one of the possible values"))
}
