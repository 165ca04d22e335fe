//! Runs allow-listed commands: no shell unless the operator wrote a string, its own process
//! group, a timeout that ends the whole group (SIGTERM, then SIGKILL), and output captured up to
//! a cap while the rest is drained (a child whose pipe is not read would block or die of
//! SIGPIPE).

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc::UnboundedReceiver;

use super::policy::Gate;
use super::{Outcome, Request};
use crate::config::{Command, Config, Program};

/// How long to keep reading output after the command exited, for a background child that
/// still holds the pipe. Past it the output so far is returned; the child is left alone (it may
/// be a daemon the command started on purpose).
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// What one run of a command produced.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub output: String,
    pub error: Option<String>,
    pub timed_out: bool,
    pub duration: Duration,
}

/// Run one command to completion (or timeout). Never panics on the command's behaviour.
pub async fn run(spec: &Command) -> RunResult {
    let started = Instant::now();
    let mut cmd = match &spec.program {
        Program::Argv(argv) => {
            let mut c = tokio::process::Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
        Program::Shell(script) => {
            let mut c = tokio::process::Command::new("/bin/sh");
            c.arg("-c").arg(script);
            c
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return RunResult {
                code: None,
                signal: None,
                output: String::new(),
                error: Some(format!("cannot start {}: {e}", spec.program)),
                timed_out: false,
                duration: started.elapsed(),
            };
        }
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
    let status = match tokio::time::timeout(spec.timeout, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            timed_out = true;
            error = Some(format!(
                "timed out after {:?}; process group killed",
                spec.timeout
            ));
            kill_group(pgid, libc::SIGTERM);
            match tokio::time::timeout(spec.kill_grace, child.wait()).await {
                Ok(status) => {
                    // The leader is gone; make sure nothing of its group outlives it.
                    kill_group(pgid, libc::SIGKILL);
                    status
                }
                Err(_) => {
                    kill_group(pgid, libc::SIGKILL);
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
        duration: started.elapsed(),
    }
}

fn kill_group(pgid: Option<i32>, signal: i32) {
    if let Some(pgid) = pgid.filter(|&p| p > 0) {
        // SAFETY: killpg has no memory-safety preconditions; the group is the child's own
        // (process_group(0) made the child its leader).
        unsafe {
            libc::killpg(pgid, signal);
        }
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

/// Receives run requests, applies the policy gate, runs admitted commands concurrently, and
/// hands every outcome (refusals included) back to whoever asked.
pub struct Executor {
    config: Arc<Config>,
    gate: Arc<Mutex<Gate>>,
}

impl Executor {
    pub fn new(config: Arc<Config>) -> Self {
        Self {
            config,
            gate: Arc::default(),
        }
    }

    pub async fn serve(self, mut requests: UnboundedReceiver<Request>) {
        let me = Arc::new(self);
        while let Some(request) = requests.recv().await {
            let me = me.clone();
            tokio::spawn(async move { me.handle(request).await });
        }
    }

    async fn handle(&self, req: Request) {
        let admitted = self
            .gate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(&self.config, &req.service, &req.command, Instant::now())
            .map(|(spec, token)| (spec.clone(), token));
        let origin = &*req.origin;
        let mut refused = None;
        let result = match admitted {
            Err(refusal) => {
                tracing::warn!(
                    origin,
                    action_id = req.action_id,
                    service = req.service,
                    command = req.command,
                    "command refused: {refusal}"
                );
                let result = RunResult {
                    code: None,
                    signal: None,
                    output: String::new(),
                    error: Some(refusal.to_string()),
                    timed_out: false,
                    duration: Duration::ZERO,
                };
                refused = Some(refusal);
                result
            }
            Ok((spec, token)) => {
                tracing::info!(
                    origin,
                    action_id = req.action_id,
                    service = req.service,
                    command = req.command,
                    program = %spec.program,
                    reason = req.reason,
                    "running command"
                );
                let result = run(&spec).await;
                self.gate
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .finish(token);
                let output = summary(&result.output);
                match (&result.error, result.code) {
                    (None, Some(0)) => tracing::info!(
                        origin, action_id = req.action_id, service = req.service,
                        command = req.command, took = ?result.duration, output, "command succeeded"
                    ),
                    _ => tracing::warn!(
                        origin, action_id = req.action_id, service = req.service,
                        command = req.command, code = ?result.code, signal = ?result.signal,
                        error = ?result.error, took = ?result.duration, output, "command failed"
                    ),
                }
                result
            }
        };
        (req.reply)(Outcome {
            action_id: req.action_id,
            service: req.service,
            command: req.command,
            code: result.code,
            signal: result.signal,
            output: result.output,
            error: result.error,
            refusal: refused,
            timed_out: result.timed_out,
            duration: result.duration,
        });
    }
}

/// The first line or so of output, for a log line.
fn summary(output: &str) -> String {
    let trimmed = output.trim();
    match trimmed.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &trimmed[..i]),
        None => trimmed.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str) -> Command {
        Command::new(Program::Shell(script.into()))
    }

    #[tokio::test]
    async fn exit_codes_output_and_signals() {
        let r = run(&Command::new(Program::Argv(vec![
            "echo".into(),
            "a  b".into(),
        ])))
        .await;
        assert_eq!(
            (r.code, r.signal, r.output.as_str(), r.error),
            (Some(0), None, "a  b\n", None)
        );

        let r = run(&shell("echo out; echo err >&2; exit 3")).await;
        assert_eq!(r.code, Some(3));
        assert!(
            r.output.contains("out\n") && r.output.contains("err\n"),
            "{:?}",
            r.output
        );

        let r = run(&shell("kill -USR1 $$")).await;
        assert_eq!((r.code, r.signal), (None, Some(libc::SIGUSR1)));

        let r = run(&Command::new(Program::Argv(vec![
            "/nonexistent/cmd".into(),
        ])))
        .await;
        assert!(
            r.error
                .unwrap()
                .starts_with("cannot start [\"/nonexistent/cmd\"]")
        );
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_process_tree() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild.pid");
        let mut spec = shell(&format!(
            "sh -c 'echo $$ > {}; sleep 30' & sleep 30",
            pidfile.display()
        ));
        spec.timeout = Duration::from_millis(300);
        spec.kill_grace = Duration::from_millis(200);
        let started = Instant::now();
        let r = run(&spec).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
        assert!(
            r.error
                .as_deref()
                .unwrap()
                .starts_with("timed out after 300ms")
        );
        assert_eq!(r.signal, Some(libc::SIGTERM));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // SAFETY: signal 0 only checks for existence.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true);
        assert!(!alive || zombie, "grandchild {pid} survived the timeout");
    }

    #[tokio::test]
    async fn ignoring_sigterm_gets_sigkill() {
        let mut spec = shell("trap '' TERM; sleep 30");
        spec.timeout = Duration::from_millis(200);
        spec.kill_grace = Duration::from_millis(200);
        let r = run(&spec).await;
        assert_eq!(r.signal, Some(libc::SIGKILL));
    }

    #[tokio::test]
    async fn output_is_capped_and_the_rest_drained() {
        let mut spec = shell("head -c 1000000 /dev/zero | tr '\\0' x; echo done >&2; exit 7");
        spec.output_cap = 100;
        let r = run(&spec).await;
        assert_eq!(r.code, Some(7), "the writer was not killed by SIGPIPE");
        assert!(r.output.starts_with(&"x".repeat(100)));
        assert!(r.output.ends_with("bytes dropped]"), "{}", &r.output[100..]);
    }

    #[tokio::test]
    async fn background_child_holding_the_pipe_does_not_hang_the_result() {
        let started = Instant::now();
        let r = run(&shell("sleep 5 & echo started")).await;
        assert_eq!(r.code, Some(0));
        assert_eq!(r.output, "started\n");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn executor_refuses_a_concurrent_run_and_reports_back() {
        let config = Config::parse(
            "[services.s.commands]\nslow = \"sleep 0.5; echo finished\"\n",
            std::path::Path::new("t.toml"),
            std::path::Path::new("/"),
        )
        .unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(Executor::new(Arc::new(config)).serve(rx));
        let (otx, mut orx) = tokio::sync::mpsc::unbounded_channel();
        for id in 0..2 {
            let otx = otx.clone();
            tx.send(Request {
                origin: "test".into(),
                action_id: id,
                service: "s".into(),
                command: "slow".into(),
                reason: "test".into(),
                reply: Box::new(move |o| {
                    let _ = otx.send(o);
                }),
            })
            .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let first = orx.recv().await.unwrap();
        assert_eq!(first.action_id, 1);
        assert_eq!(
            first.error.as_deref(),
            Some("`s`/`slow` is already running (1 of 1 allowed at once)")
        );
        let second = orx.recv().await.unwrap();
        assert_eq!(
            (second.action_id, second.code, second.output.as_str()),
            (0, Some(0), "finished\n")
        );
    }
}
