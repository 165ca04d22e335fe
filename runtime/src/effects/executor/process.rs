//! How one command runs, for the executor and for collectd.conf replacement alike: no shell
//! unless the operator wrote a string, a cleared environment, its own process group, a timeout
//! that ends the whole group (SIGTERM, then SIGKILL), and output captured up to a cap while the
//! rest is drained (a child whose pipe is not read would block or die of SIGPIPE).

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

use crate::config::{Command, Config, Program};
use crate::event::RunResult;

/// How long to keep reading output after the command exited, for a background child that
/// still holds the pipe. Past it the output so far is returned; the child is left alone (it may
/// be a daemon the command started on purpose).
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// The `PATH` commands run with (systemd's default for services).
const COMMAND_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Commands that set `user` or `group`: medic must be root, and the accounts must exist.
/// Checked at start (and by `medic check`), so a mistake is a config error, not a failed run
/// at 3 a.m.
pub fn check_accounts(config: &Config) -> Result<(), String> {
    for (service, svc) in &config.services {
        for (name, command) in &svc.commands {
            if command.user.is_none() && command.group.is_none() {
                continue;
            }
            let at = format!("services.{service}.commands.{name}");
            if !crate::os::is_root() {
                return Err(format!(
                    "{at} sets `user` or `group`: medic must run as root to change them"
                ));
            }
            crate::os::account(command.user.as_deref(), command.group.as_deref())
                .map_err(|e| format!("{at}: {e}"))?;
        }
    }
    Ok(())
}

/// Who asked for a run and why: given to the command as `MEDIC_ACTION_ID`, `MEDIC_ORIGIN` and
/// `MEDIC_REASON`.
#[derive(Debug, Clone, Default)]
pub struct Asker {
    pub action_id: u64,
    pub origin: String,
    pub reason: String,
}

/// Run one command to completion (or timeout). Never panics on the command's behaviour.
/// `stop` turning true ends it early: its process group is killed as on a timeout (medic is
/// stopping and its deadline has passed).
pub async fn run_until(
    spec: &Command,
    asker: &Asker,
    stop: &mut watch::Receiver<bool>,
) -> RunResult {
    let started = Instant::now();
    let not_started = |error: String| RunResult {
        duration: started.elapsed(),
        ..RunResult::not_run(error)
    };
    // The program is found here, in the PATH the command will get, rather than by the child:
    // a command whose PATH differs from medic's would make the standard library fork medic's
    // whole address space instead of using posix_spawn (ARCHITECTURE.md, "Spawning commands").
    let path = spec.env.get("PATH").map_or(COMMAND_PATH, String::as_str);
    let mut cmd = match &spec.program {
        Program::Argv(argv) => {
            let Some(program) = find_program(&argv[0], path) else {
                return not_started(format!(
                    "cannot start {}: `{}` is not an executable file in PATH {path}",
                    spec.program, argv[0]
                ));
            };
            let mut c = tokio::process::Command::new(program);
            c.arg0(&argv[0]).args(&argv[1..]);
            c
        }
        Program::Shell(script) => {
            let mut c = tokio::process::Command::new("/bin/sh");
            c.arg("-c").arg(script);
            c
        }
    };
    // Nothing of medic's own environment (credentials, say) reaches a command: a fixed PATH
    // and locale, who asked, and what the config gives it (which may override them).
    cmd.env_clear()
        .env("PATH", COMMAND_PATH)
        .env("LANG", "C.UTF-8")
        .env("MEDIC_ACTION_ID", asker.action_id.to_string())
        .env("MEDIC_ORIGIN", &asker.origin)
        .env("MEDIC_REASON", &asker.reason)
        .envs(&spec.env);
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    match crate::os::account(spec.user.as_deref(), spec.group.as_deref()) {
        // std drops the supplementary groups when a root parent sets the uid.
        Ok((uid, gid)) => {
            if let Some(gid) = gid {
                cmd.gid(gid);
            }
            if let Some(uid) = uid {
                cmd.uid(uid);
            }
        }
        Err(e) => return not_started(format!("cannot run {} as configured: {e}", spec.program)),
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return not_started(format!("cannot start {}: {e}", spec.program)),
    };
    let pgid = child.id().map(|id| id as i32);
    let capture = Arc::new(Mutex::new(Capture::new(spec.output_cap)));
    let readers = [
        child
            .stdout
            .take()
            .map(|p| tokio::spawn(drain(p, capture.clone()))),
        child
            .stderr
            .take()
            .map(|p| tokio::spawn(drain(p, capture.clone()))),
    ];

    let mut error = None;
    let mut timed_out = false;
    let mut interrupted = false;
    let ended = tokio::select! {
        status = child.wait() => Some(status),
        _ = tokio::time::sleep(spec.timeout) => {
            timed_out = true;
            error = Some(format!(
                "timed out after {:?}; process group killed",
                spec.timeout
            ));
            None
        }
        _ = stop.wait_for(|stop| *stop) => {
            error = Some("medic is stopping: process group killed".to_string());
            interrupted = true;
            None
        }
    };
    let status = match ended {
        Some(status) => status,
        None => {
            kill_group(pgid, nix::sys::signal::Signal::SIGTERM);
            match tokio::time::timeout(spec.kill_grace, child.wait()).await {
                Ok(status) => {
                    // The leader is gone; make sure nothing of its group outlives it.
                    kill_group(pgid, nix::sys::signal::Signal::SIGKILL);
                    status
                }
                Err(_) => {
                    kill_group(pgid, nix::sys::signal::Signal::SIGKILL);
                    child.wait().await
                }
            }
        }
    };
    let deadline = tokio::time::Instant::now() + PIPE_GRACE;
    for reader in readers.into_iter().flatten() {
        let abort = reader.abort_handle();
        if tokio::time::timeout_at(deadline, reader).await.is_err() {
            abort.abort();
        }
    }
    let output = capture.lock().unwrap_or_else(|p| p.into_inner()).finish();
    let (code, signal) = match status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            (s.code(), s.signal())
        }
        Err(e) => {
            error.get_or_insert(format!("cannot wait for the command: {e}"));
            (None, None)
        }
    };
    RunResult {
        code,
        signal,
        output,
        error,
        timed_out,
        interrupted,
        duration: started.elapsed(),
    }
}

/// Where `program` is: itself when it names a path, else the first executable file of that name
/// in `path` (as execvp would search).
fn find_program(program: &str, path: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        return Some(program.into());
    }
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Signal the child's own process group (`process_group(0)` made the child its leader).
fn kill_group(pgid: Option<i32>, signal: nix::sys::signal::Signal) {
    if let Some(pgid) = pgid.filter(|&p| p > 0) {
        // Gone already is fine: there is nothing left to stop.
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), signal);
    }
}

/// Combined stdout and stderr in arrival order, up to a cap.
struct Capture {
    buf: Vec<u8>,
    cap: usize,
    dropped: u64,
}

impl Capture {
    fn new(cap: usize) -> Self {
        Self {
            buf: Vec::new(),
            cap,
            dropped: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = self.cap.saturating_sub(self.buf.len());
        let take = room.min(bytes.len());
        self.buf.extend_from_slice(&bytes[..take]);
        self.dropped += (bytes.len() - take) as u64;
    }

    fn finish(&mut self) -> String {
        let mut s = String::from_utf8_lossy(&self.buf).into_owned();
        if self.dropped > 0 {
            s.push_str(&format!(
                "\n[medic: output truncated, {} bytes dropped]",
                self.dropped
            ));
        }
        s
    }
}

async fn drain(mut pipe: impl AsyncRead + Unpin, capture: Arc<Mutex<Capture>>) {
    let mut chunk = [0u8; 8192];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => capture
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(&chunk[..n]),
        }
    }
}
