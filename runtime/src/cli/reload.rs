//! `medic reload --config FILE`: check the config as the daemon will read it, then ask the
//! running daemon (its pid is in `state_dir/medic.pid`) to reload it with SIGHUP. A broken
//! config is reported here, with `file:line:col`, and the daemon is not disturbed.

use std::path::Path;

use anyhow::{Context, bail};

use crate::config::Config;

/// Returns the pid that was signalled.
pub fn reload(path: &Path) -> anyhow::Result<u32> {
    let config = Config::load(path)?;
    let pid_file = config.daemon.state_dir.join("medic.pid");
    let text = std::fs::read_to_string(&pid_file).with_context(|| {
        format!(
            "cannot read {} (is medic running with this config?)",
            pid_file.display()
        )
    })?;
    let pid: i32 = text
        .trim()
        .parse()
        .with_context(|| format!("{} does not hold a pid", pid_file.display()))?;
    if pid <= 0 {
        bail!("{} does not hold a pid", pid_file.display());
    }
    ensure_medic(pid).with_context(|| {
        format!(
            "{} names pid {pid}, which is not a running medic (a stale pid file?): not signalled",
            pid_file.display()
        )
    })?;
    let signalled = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    );
    if let Err(e) = signalled {
        bail!(
            "cannot signal medic (pid {pid} from {}): {e}",
            pid_file.display()
        );
    }
    Ok(pid as u32)
}

/// Whether `pid` runs a program of the same name as this one (`/proc/PID/exe`): a stale pid
/// file may name a pid the kernel has since given to another process, which must not get a
/// SIGHUP (most programs exit on it).
fn ensure_medic(pid: i32) -> anyhow::Result<()> {
    let name = |path: &Path| {
        path.file_name().map(|n| {
            n.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_string()
        })
    };
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .with_context(|| format!("cannot read /proc/{pid}/exe"))?;
    let me = std::env::current_exe().context("cannot tell which program this is")?;
    if name(&exe) != name(&me) {
        bail!("pid {pid} runs {}", exe.display());
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, short)]
    config: std::path::PathBuf,
}

pub fn run(args: Args) -> std::process::ExitCode {
    match reload(&args.config) {
        Ok(pid) => {
            println!(
                "medic (pid {pid}) asked to reload {}",
                args.config.display()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => super::fail(format!("{e:#}")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_a_medic_is_signalled() {
        // This test binary is not named medic… but it is itself: the check compares names.
        assert!(super::ensure_medic(std::process::id() as i32).is_ok());
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let err = super::ensure_medic(sleeper.id() as i32).unwrap_err();
        assert!(format!("{err:#}").contains("runs /"), "{err:#}");
        let _ = sleeper.kill();
        let _ = sleeper.wait();
    }
}
