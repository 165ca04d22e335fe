//! The local collectd as a process: its pid file, whether that pid is collectd, whether a
//! systemd unit runs it, and waiting for it to come or go.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The pid in `pid_file`, if that process is alive (not a zombie).
pub(super) fn running_pid(pid_file: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the command name in parentheses.
    let state = stat.rsplit_once(") ")?.1.chars().next()?;
    (pid > 0 && state != 'Z' && state != 'X').then_some(pid)
}

/// Whether `pid` runs `binary` (`/proc/PID/exe`): a stale pid file may name a pid the kernel
/// has since given to another process, which must not get collectd's SIGTERM.
pub(super) fn is_collectd(pid: u32, binary: &Path) -> Result<(), String> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).map_err(|e| {
        format!("cannot tell what pid {pid} runs (/proc/{pid}/exe: {e}): not signalled")
    })?;
    let expected = std::fs::canonicalize(binary).unwrap_or_else(|_| binary.to_path_buf());
    if exe == expected {
        Ok(())
    } else {
        Err(format!(
            "collectd's pid file names pid {pid}, which runs {}, not {}: not signalled",
            exe.display(),
            expected.display()
        ))
    }
}

pub(super) async fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// collectd runs under systemd here: systemd is init and knows a collectd unit.
pub(super) async fn systemd_unit() -> bool {
    if !Path::new("/run/systemd/system").exists() {
        return false;
    }
    let status = tokio::process::Command::new("systemctl")
        .args(["cat", "collectd.service"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    status.is_ok_and(|s| s.success())
}
