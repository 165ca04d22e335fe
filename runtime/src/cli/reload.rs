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
    // SAFETY: kill(2) with a positive pid signals that one process; no memory is involved.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        let e = std::io::Error::last_os_error();
        bail!(
            "cannot signal medic (pid {pid} from {}): {e}",
            pid_file.display()
        );
    }
    Ok(pid as u32)
}
