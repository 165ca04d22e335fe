//! The `medic` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use medic::config::{Config, SecurityLevelName};
use medic::decode;
use medic::logging::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "medic",
    version,
    about = "Fault-recovery daemon for collectd, with rules in WebAssembly"
)]
struct Cli {
    /// Log level for medic's own messages (overridden by RUST_LOG).
    #[arg(long, global = true, default_value = "info", value_parser = ["trace", "debug", "info", "warn", "error"])]
    log_level: String,
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// The medic.toml to use.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config and load, init and describe every rule with it; exit 1 on any error.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Decode collectd network-protocol datagrams (one raw datagram per file, or live with
    /// --listen) and print one JSON object per value list or notification.
    Decode {
        #[arg(long, value_enum, default_value_t = SecurityLevelName::None)]
        security_level: SecurityLevelName,
        /// collectd AuthFile (`user: password` lines), for signed and encrypted data.
        #[arg(long)]
        auth_file: Option<PathBuf>,
        /// types.db for data-source names (repeatable).
        #[arg(long, default_value = "/usr/share/collectd/types.db")]
        types_db: Vec<PathBuf>,
        /// Listen on this address and print live traffic instead of reading files.
        #[arg(long, conflicts_with = "files")]
        listen: Option<std::net::SocketAddr>,
        #[arg(required_unless_present = "listen")]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(&cli.log_level, cli.log_format);
    match cli.command {
        Command::Run { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => return fail(format!("cannot start the async runtime: {e}")),
            };
            match runtime.block_on(medic::daemon::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(format!("{e:#}")),
            }
        }
        Command::Decode {
            security_level,
            auth_file,
            types_db,
            listen,
            files,
        } => {
            let options = decode::Options {
                level: security_level.into(),
                auth_file,
                types_db,
            };
            decode_command(options, listen, files)
        }
        Command::Check { config: path } => {
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            match medic::check::check(&config) {
                Ok((report, ok)) => {
                    print!("{report}");
                    if ok {
                        println!("{}: ok", path.display());
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => fail(format!("{e:#}")),
            }
        }
    }
}

fn decode_command(
    options: decode::Options,
    listen: Option<std::net::SocketAddr>,
    files: Vec<PathBuf>,
) -> ExitCode {
    if let Some(addr) = listen {
        let runtime = match tokio::runtime::Runtime::new() {
            Ok(r) => r,
            Err(e) => return fail(format!("cannot start the async runtime: {e}")),
        };
        return match runtime.block_on(decode::listen(&options, addr)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(format!("{e:#}")),
        };
    }
    match decode::files(&options, &files) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => fail(format!("{e:#}")),
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("medic: {message}");
    ExitCode::FAILURE
}
