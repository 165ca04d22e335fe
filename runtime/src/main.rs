//! The `medic` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use medic::config::Config;
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

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("medic: {message}");
    ExitCode::FAILURE
}
