//! Replacing the local collectd's config on request (lua-collectd-monitor's send-config), with
//! its result codes. The new text is written beside the live config as `<config>.lock` (0600,
//! also the "replacement in progress" marker), checked with `collectd -T -C` (upstream 5.12's
//! `-t` exits 0 without parsing), then collectd is stopped, the live config kept as
//! `<config>.orig`, the new one moved in, and collectd started; if it does not come up, the
//! old config goes back (the refused one is kept as `<config>.rejected`) and collectd is
//! started on it.
//!
//! Each step is recorded in the database before the next begins, so a medic that is killed in
//! the middle finishes the replacement when it starts again and answers once. The whole
//! replacement is one audit record (service `collectd`, command `replace-config`).
//!
//! It is refused unless `[collectd] allow_remote` turns it on, and over plain `mqtt://` unless
//! `allow_insecure_transport` does too: the check runs the submitted config's plugins. Every
//! program runs with a cleared environment (medic's may hold broker passwords), the check as
//! `[collectd] user` where set, and every text sent back is masked (`redact`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::executor::{Asker, run_until};
use crate::config::{Collectd, Program};
use crate::event::{ConfigRequest, now_ns};
use crate::mqtt::lcm::code;
use crate::store::Store;
use crate::store::history::{Entry, History, state};

/// What lua-collectd-monitor says on success, word for word.
pub const SUCCEEDED: &str = "Succeeded to replace config.";
/// Output of collectd kept in a reply.
const OUTPUT_CAP: usize = 16 * 1024;
/// How long collectd must stay up after its pid appeared to count as started.
const SETTLE: Duration = Duration::from_millis(500);

mod step {
    /// The new config is being written and checked; the live one is untouched.
    pub const WRITING: &str = "writing";
    /// The new config is written and passed `collectd -T`.
    pub const CHECKED: &str = "checked";
    /// collectd is stopped (its pid gone).
    pub const STOPPED: &str = "stopped";
    /// The new config is the live one (the old one is `.orig`).
    pub const REPLACED: &str = "replaced";
}

#[derive(Clone)]
pub struct Replacer {
    collectd: Option<Arc<Collectd>>,
    /// Whether requests arrive over TLS (`mqtts://`).
    tls: bool,
    store: Store,
    history: Option<History>,
    busy: Arc<AtomicBool>,
}

/// Between SIGTERM and SIGKILL for a program past its timeout.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Who asked, for the log and the audit record.
struct Asked {
    origin: Arc<str>,
    action_id: u64,
    task: String,
}

/// A step that failed: the reply's code and message.
type Failed = (i64, String);

impl Replacer {
    /// `tls`: requests come over `mqtts://`.
    pub fn new(
        collectd: Option<Collectd>,
        tls: bool,
        store: Store,
        history: Option<History>,
    ) -> Self {
        Self {
            collectd: collectd.map(Arc::new),
            tls,
            store,
            history,
            busy: Arc::default(),
        }
    }

    /// Take a request; the reply comes when collectd runs again (or could not).
    pub fn handle(&self, req: ConfigRequest) {
        let this = self.clone();
        let ConfigRequest {
            origin,
            action_id,
            task,
            config,
            reply,
        } = req;
        let asked = Asked {
            origin,
            action_id,
            task,
        };
        tokio::spawn(async move {
            let started = Instant::now();
            let (code, message, admitted) = this.serve(&asked, config).await;
            // Whatever a step said (collectd's parser quoting an included file, a start
            // command's error) goes out masked, to the reply, the log and the history alike.
            let message = redact(&message);
            tracing::info!(
                task_id = asked.task,
                action_id,
                code = format!("0x{code:04x}"),
                "collectd config replacement: {message}"
            );
            if admitted {
                this.record_end(action_id, code, &message, started.elapsed());
            }
            reply(code, message);
            if let Err(e) = this.store.replacement_clear(&asked.task) {
                tracing::error!(
                    task_id = asked.task,
                    "cannot clear the replacement's progress: {e}"
                );
            }
        });
    }

    /// The reply's code and message, and whether the request was admitted (its audit record
    /// then gets an end).
    async fn serve(&self, req: &Asked, config: Option<String>) -> (i64, String, bool) {
        let Some(cfg) = self.collectd.clone() else {
            let why = "this medic has no [collectd] section: it does not replace collectd's config";
            self.record_start(req, config.as_ref().map_or(0, String::len), Some(why));
            return (code::REFUSED, why.into(), false);
        };
        if let (Some(text), Some(why)) = (&config, self.refusal(&cfg)) {
            self.record_start(req, text.len(), Some(why));
            return (code::REFUSED, why.into(), false);
        }
        let run = Run {
            cfg,
            store: self.store.clone(),
            task: req.task.clone(),
            action_id: req.action_id,
        };
        match &config {
            Some(text) => {
                if self.busy.swap(true, Ordering::SeqCst) {
                    let (code, message) = in_progress();
                    self.record_start(req, text.len(), Some(&message));
                    return (code, message, false);
                }
                self.record_start(req, text.len(), None);
                let result = run.replace(text).await;
                self.busy.store(false, Ordering::SeqCst);
                let (code, message) = result.map_or_else(|e| e, |()| (0, SUCCEEDED.into()));
                (code, message, true)
            }
            None => {
                self.busy.store(true, Ordering::SeqCst);
                let result = run.resume().await;
                self.busy.store(false, Ordering::SeqCst);
                let (code, message) = result.map_or_else(|e| e, |()| (0, SUCCEEDED.into()));
                (code, message, true)
            }
        }
    }

    /// Why a new replacement is refused here, if it is. (One that a previous medic process
    /// began is still finished: collectd must not be left stopped.)
    fn refusal(&self, cfg: &Collectd) -> Option<&'static str> {
        if !cfg.allow_remote {
            return Some(
                "replacing collectd's config is off on this node ([collectd] allow_remote = \
                 true turns it on)",
            );
        }
        if !self.tls && !cfg.allow_insecure_transport {
            return Some(
                "replacing collectd's config is refused over plain mqtt:// (use mqtts://, or \
                 [collectd] allow_insecure_transport = true)",
            );
        }
        None
    }

    /// The audit record's first half; a refused request (`refusal`) has no second.
    fn record_start(&self, req: &Asked, bytes: usize, refusal: Option<&str>) {
        if let Some(h) = &self.history {
            h.record(Entry::Asked {
                action_id: req.action_id,
                at_ns: now_ns(),
                origin: req.origin.clone(),
                build: None,
                reason: format!("new collectd.conf ({bytes} bytes)"),
                service: "collectd".into(),
                command: "replace-config".into(),
                refusal: refusal.map(String::from),
            });
        }
    }

    fn record_end(&self, action_id: u64, code: i64, message: &str, took: Duration) {
        if let Some(h) = &self.history {
            h.record(Entry::Ended {
                action_id,
                at_ns: now_ns(),
                state: if code == 0 {
                    state::SUCCEEDED
                } else {
                    state::FAILED
                },
                code: i32::try_from(code).ok(),
                signal: None,
                timed_out: false,
                duration: took,
                output: message.to_string(),
                error: (code != 0).then(|| format!("code 0x{code:04x}")),
            });
        }
    }
}

fn in_progress() -> (i64, String) {
    (
        code::CONFIG_IN_PROGRESS,
        "Already attempting to replace collectd config!".into(),
    )
}

/// One replacement.
struct Run {
    cfg: Arc<Collectd>,
    store: Store,
    task: String,
    action_id: u64,
}

impl Run {
    fn lock(&self) -> PathBuf {
        with_suffix(&self.cfg.config, ".lock")
    }

    fn orig(&self) -> PathBuf {
        with_suffix(&self.cfg.config, ".orig")
    }

    fn step(&self, step: &str) {
        if let Err(e) = self.store.replacement_set(&self.task, step, self.action_id) {
            tracing::error!(
                task_id = self.task,
                "cannot record the replacement's progress ({step}): {e}; a restart now would \
                 answer it as interrupted"
            );
        }
    }

    async fn replace(&self, text: &str) -> Result<(), Failed> {
        let lock = self.lock();
        if lock.exists() {
            return Err(in_progress());
        }
        // Recorded first: a medic killed from here on finds the row and removes its lock file
        // at the next start, instead of leaving it to refuse every later replacement.
        self.step(step::WRITING);
        if let Err(e) = write_new(&lock, text.as_bytes()) {
            let _ = std::fs::remove_file(&lock);
            return Err((
                code::CONFIG_CANNOT_WRITE,
                format!("Failed to write new config: {e}"),
            ));
        }
        if let Err(e) = self.check_account(&lock) {
            let _ = std::fs::remove_file(&lock);
            return Err((code::CONFIG_CANNOT_WRITE, e));
        }
        let checked = self
            .command_as(
                &Program::Argv(vec![
                    self.cfg.binary.display().to_string(),
                    "-T".into(),
                    "-C".into(),
                    lock.display().to_string(),
                ]),
                true,
            )
            .await;
        if let Err(output) = checked {
            let _ = std::fs::remove_file(&lock);
            return Err((
                code::CONFIG_BROKEN,
                format!("New config seems broken!: {}", redact(&output)),
            ));
        }
        self.step(step::CHECKED);
        self.after_check().await
    }

    /// Finish what a previous medic process left at its last recorded step.
    async fn resume(&self) -> Result<(), Failed> {
        let step = match self.store.replacement(&self.task) {
            Ok(Some((step, _))) => step,
            Ok(None) => String::new(),
            Err(e) => {
                tracing::error!(
                    task_id = self.task,
                    "cannot read the replacement's progress: {e}"
                );
                String::new()
            }
        };
        tracing::warn!(
            task_id = self.task,
            step,
            "medic stopped during a collectd config replacement: finishing it"
        );
        match step.as_str() {
            step::CHECKED if self.lock().exists() => self.after_check().await,
            step::STOPPED if self.lock().exists() => self.after_stop().await,
            // Killed right after moving the new config in, before recording it.
            step::STOPPED if self.orig().exists() && self.cfg.config.exists() => {
                self.after_replace().await
            }
            step::REPLACED => self.after_replace().await,
            // Before the check passed (`writing`), or its lock file is gone: the live config
            // was never touched.
            _ => {
                let _ = std::fs::remove_file(self.lock());
                self.recover("medic stopped before the new config was checked".into())
                    .await
            }
        }
    }

    async fn after_check(&self) -> Result<(), Failed> {
        if let Err(e) = self.stop().await {
            let _ = std::fs::remove_file(self.lock());
            return Err(e);
        }
        self.step(step::STOPPED);
        self.after_stop().await
    }

    async fn after_stop(&self) -> Result<(), Failed> {
        let (config, orig, lock) = (&self.cfg.config, self.orig(), self.lock());
        // A medic killed between the two renames finds the live config already moved.
        if config.exists()
            && let Err(e) = std::fs::rename(config, &orig)
        {
            let _ = std::fs::remove_file(&lock);
            let _ = self.start().await;
            return Err((
                code::CONFIG_CANNOT_BACK_UP,
                format!("Failed to back up old config file!: {e}"),
            ));
        }
        if let Err(e) = std::fs::rename(&lock, config) {
            let _ = std::fs::rename(&orig, config);
            let _ = std::fs::remove_file(&lock);
            let _ = self.start().await;
            return Err((
                code::CONFIG_CANNOT_REPLACE,
                format!("Failed to replace config file!: {e}"),
            ));
        }
        self.step(step::REPLACED);
        self.after_replace().await
    }

    async fn after_replace(&self) -> Result<(), Failed> {
        match self.start().await {
            Ok(()) => Ok(()),
            Err(why) => {
                tracing::error!(
                    task_id = self.task,
                    "collectd did not start on the new config: {why}"
                );
                let rejected = with_suffix(&self.cfg.config, ".rejected");
                let _ = std::fs::rename(&self.cfg.config, &rejected);
                if let Err(e) = std::fs::rename(self.orig(), &self.cfg.config) {
                    return Err((
                        code::CONFIG_CANNOT_RECOVER,
                        format!("Failed to recover old config file!: {e}"),
                    ));
                }
                self.recover(why).await
            }
        }
    }

    /// The old config is live again: start collectd on it. Ok is still a failure of the
    /// replacement (0x2007, with `why`).
    async fn recover(&self, why: String) -> Result<(), Failed> {
        match self.start().await {
            Ok(()) => Err((code::CONFIG_RECOVERED, why)),
            Err(e) => Err((
                code::CONFIG_CANNOT_RECOVER,
                format!("Failed to start collectd with old config!: {e}"),
            )),
        }
    }

    /// Stop collectd and wait for its pid to go.
    async fn stop(&self) -> Result<(), Failed> {
        let Some(pid) = running_pid(&self.cfg.pid_file) else {
            return Ok(());
        };
        let stopped = match &self.cfg.stop {
            Some(program) => self.command(program).await,
            None if systemd_unit().await => {
                self.command(&Program::Argv(argv(&["systemctl", "stop", "collectd"])))
                    .await
            }
            None => match is_collectd(pid, &self.cfg.binary) {
                Err(why) => return Err((code::CONFIG_CANNOT_STOP, why)),
                Ok(()) => nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                )
                .map(drop)
                .map_err(|e| format!("cannot signal collectd (pid {pid}): {e}")),
            },
        };
        if let Err(output) = stopped {
            // Stopped anyway (by someone else meanwhile, or a stop command that complains
            // about a pid file collectd already removed): what was asked for happened.
            if running_pid(&self.cfg.pid_file) == Some(pid) {
                return Err((code::CONFIG_CANNOT_STOP, output));
            }
            tracing::info!(
                pid,
                "collectd's stop command failed, but collectd is gone: {output}"
            );
        }
        let gone = wait_for(self.cfg.timeout, || {
            running_pid(&self.cfg.pid_file) != Some(pid)
        })
        .await;
        if !gone {
            return Err((
                code::CONFIG_PID_REMAINS,
                "Cannot detect removing pid file of collectd!".into(),
            ));
        }
        Ok(())
    }

    /// Start collectd (unless it runs) and wait for a live pid that stays up.
    async fn start(&self) -> Result<(), String> {
        if running_pid(&self.cfg.pid_file).is_some() {
            return Ok(());
        }
        let program = match &self.cfg.start {
            Some(p) => p.clone(),
            None if systemd_unit().await => {
                Program::Argv(argv(&["systemctl", "start", "collectd"]))
            }
            None => Program::Argv(vec![
                self.cfg.binary.display().to_string(),
                "-C".into(),
                self.cfg.config.display().to_string(),
                "-P".into(),
                self.cfg.pid_file.display().to_string(),
            ]),
        };
        self.command(&program).await?;
        let up = wait_for(self.cfg.timeout, || {
            running_pid(&self.cfg.pid_file).is_some()
        })
        .await;
        if !up {
            return Err("Cannot detect new pid of collectd!".into());
        }
        tokio::time::sleep(SETTLE).await;
        match running_pid(&self.cfg.pid_file) {
            Some(_) => Ok(()),
            None => Err("collectd exited right after it started".into()),
        }
    }

    /// Hand the new config to the account `collectd -T` runs as (`[collectd] user`/`group`),
    /// so it can read it (it stays 0600).
    fn check_account(&self, lock: &Path) -> Result<(), String> {
        let (uid, gid) = crate::os::account(self.cfg.user.as_deref(), self.cfg.group.as_deref())
            .map_err(|e| format!("collectd.user/group: {e}"))?;
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::chown(lock, uid, gid)
                .map_err(|e| format!("Failed to hand the new config to collectd.user: {e}"))?;
        }
        Ok(())
    }

    /// Run `program` as medic; see `command_as`.
    async fn command(&self, program: &Program) -> Result<(), String> {
        self.command_as(program, false).await
    }

    /// Run `program` to completion within the timeout through the executor's runner (cleared
    /// environment, both pipes read at once and capped, the whole process group killed on
    /// timeout), as `[collectd] user`/`group` when `as_account`: `Err(output)` unless it exits 0.
    async fn command_as(&self, program: &Program, as_account: bool) -> Result<(), String> {
        let mut spec = crate::config::Command::new(program.clone());
        spec.timeout = self.cfg.timeout;
        spec.output_cap = OUTPUT_CAP;
        spec.kill_grace = KILL_GRACE;
        spec.env.insert("LC_ALL".into(), "C".into());
        if as_account {
            spec.user = self.cfg.user.clone();
            spec.group = self.cfg.group.clone();
        }
        let asker = Asker {
            action_id: self.action_id,
            origin: format!("mqtt:{}", self.task),
            reason: "replace collectd's config".into(),
        };
        // Never set: a replacement runs to its end (a medic stopped mid-way resumes it).
        let (_never, mut stop) = tokio::sync::watch::channel(false);
        let result = run_until(&spec, &asker, &mut stop).await;
        let output = result.output.trim_end();
        match (result.error, result.code) {
            (Some(error), _) if output.is_empty() => Err(format!("{program}: {error}")),
            (Some(error), _) => Err(format!("{program}: {error}: {output}")),
            (None, Some(0)) => Ok(()),
            (None, code) if output.is_empty() => Err(match (code, result.signal) {
                (Some(code), _) => format!("{program}: exit status {code}"),
                (None, Some(signal)) => format!("{program}: killed by signal {signal}"),
                (None, None) => format!("{program}: ended without a status"),
            }),
            (None, _) => Err(output.to_string()),
        }
    }
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Create `path` (0600) with `content`; an existing file is an error (another replacement).
fn write_new(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content)?;
    f.sync_all()
}

mod collectd_process;
mod redact;

use collectd_process::{is_collectd, running_pid, systemd_unit, wait_for};
use redact::redact;

#[cfg(test)]
mod tests;
