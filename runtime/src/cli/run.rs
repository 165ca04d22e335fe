//! `medic run`: the daemon (`crate::daemon`) on one config, until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{fail, runtime};
use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// The medic.toml to use.
    #[arg(long, short)]
    config: PathBuf,
}

pub fn run(args: Args) -> ExitCode {
    crate::daemon::before_threads();
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let run = async {
        let stop = crate::daemon::signal();
        crate::daemon::run(config, &args.config, stop).await
    };
    match runtime.block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format!("{e:#}")),
    }
}
