//! Unit tests of `executor`.

use super::*;
use crate::config::Program;
use crate::event::ReplyTo;

/// Run to completion, never stopped early.
async fn run(spec: &Command) -> RunResult {
    let (_keep, mut never) = watch::channel(false);
    run_until(spec, &Asker::default(), &mut never).await
}

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

/// A request from `test` for `s`/`command`, answered into `results`.
fn ask(
    id: u64,
    command: &str,
    results: &tokio::sync::mpsc::UnboundedSender<CommandResult>,
) -> CommandRequest {
    let results = results.clone();
    CommandRequest {
        build: None,
        origin: "test".into(),
        action_id: id,
        service: "s".into(),
        command: command.into(),
        reason: "test".into(),
        reply: ReplyTo::new(id, "s", command, move |o| {
            let _ = results.send(o);
        }),
    }
}

#[tokio::test]
async fn executor_refuses_a_concurrent_run_and_reports_back() {
    let config = Config::parse(
        "[services.s.commands]\nslow = \"sleep 0.5; echo finished\"\n",
        std::path::Path::new("t.toml"),
        std::path::Path::new("/"),
    )
    .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(Executor::new(Arc::new(config)).serve(rx));
    let (otx, mut orx) = tokio::sync::mpsc::unbounded_channel();
    for id in 0..2 {
        tx.try_send(ask(id, "slow", &otx)).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = orx.recv().await.unwrap();
    assert_eq!(first.action_id, 1);
    assert_eq!(
        first.run.error.as_deref(),
        Some("`s`/`slow` is already running (1 of 1 allowed at once)")
    );
    let second = orx.recv().await.unwrap();
    assert_eq!(
        (
            second.action_id,
            second.run.code,
            second.run.output.as_str()
        ),
        (0, Some(0), "finished\n")
    );
}

/// Requests are admitted in the order they were made: of 20 asks queued at once for a command
/// that runs one at a time, the first runs and the 19 after it are refused (before, each ask
/// was admitted in a task of its own, and any of them could win).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_admits_requests_in_the_order_they_were_made() {
    let config = Config::parse(
        "[services.s.commands]
slow = \"sleep 0.3\"
",
        std::path::Path::new("t.toml"),
        std::path::Path::new("/"),
    )
    .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let (otx, mut orx) = tokio::sync::mpsc::unbounded_channel();
    for id in 0..20 {
        tx.try_send(ask(id, "slow", &otx)).unwrap();
    }
    tokio::spawn(Executor::new(Arc::new(config)).serve(rx));
    let mut ran = Vec::new();
    for _ in 0..20 {
        let r = orx.recv().await.unwrap();
        if r.refusal.is_none() {
            ran.push(r.action_id);
        }
    }
    assert_eq!(ran, [0], "only the first ask runs");
}

/// The shutdown order's step 3: wait for running commands up to the grace, then kill what is
/// left; every asker still gets its result, and nothing new starts.
#[tokio::test]
async fn drain_waits_then_kills_and_refuses_new_runs() {
    let config = Config::parse(
        "[services.s.commands]\nquick = \"sleep 0.2; echo done\"\n\
         slow = { run = \"sleep 30\", kill_grace = \"1s\" }\n",
        std::path::Path::new("t.toml"),
        std::path::Path::new("/"),
    )
    .unwrap();
    let executor = Executor::new(Arc::new(config));
    let handle = executor.handle();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(executor.serve(rx));
    let (otx, mut orx) = tokio::sync::mpsc::unbounded_channel();
    let send = |id: u64, command: &str| tx.try_send(ask(id, command, &otx)).unwrap();
    send(1, "quick");
    send(2, "slow");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let forced = handle.drain(Duration::from_millis(500)).await;
    assert_eq!(forced, vec!["s/slow".to_string()]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let mut results = [orx.recv().await.unwrap(), orx.recv().await.unwrap()];
    results.sort_by_key(|r| r.action_id);
    assert_eq!(
        (results[0].run.code, results[0].run.output.as_str()),
        (Some(0), "done\n")
    );
    assert_eq!(
        results[1].run.error.as_deref(),
        Some("medic is stopping: process group killed")
    );
    send(3, "quick");
    let refused = orx.recv().await.unwrap();
    assert_eq!(refused.refusal, Some(Refusal::Stopping));
}

/// A command sees a fixed PATH and locale, who asked, and what its config gives it, never
/// medic's own environment.
#[tokio::test]
async fn commands_get_a_clean_environment() {
    // SAFETY: set before any command starts; nothing else in this test reads it concurrently.
    unsafe { std::env::set_var("MEDIC_SECRET_FOR_TEST", "leaked") };
    let mut spec = Command::new(Program::Argv(vec!["env".into()]));
    spec.env.insert("SERVICE_ENV".into(), "given".into());
    let r = run(&spec).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    let mut vars: Vec<&str> = r.output.lines().collect();
    vars.sort();
    assert_eq!(
        vars,
        vec![
            "LANG=C.UTF-8",
            "MEDIC_ACTION_ID=0",
            "MEDIC_ORIGIN=",
            "MEDIC_REASON=",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "SERVICE_ENV=given"
        ]
    );
}

#[tokio::test]
async fn a_command_learns_who_asked_and_runs_where_configured() {
    let mut spec = shell("echo $MEDIC_ACTION_ID $MEDIC_ORIGIN $MEDIC_REASON $LANG; pwd");
    spec.cwd = Some("/tmp".into());
    let asker = Asker {
        action_id: 42,
        origin: "threshold".into(),
        reason: "load 9.5 > 8".into(),
    };
    let (_keep, mut never) = watch::channel(false);
    let r = run_until(&spec, &asker, &mut never).await;
    assert_eq!(r.output, "42 threshold load 9.5 > 8 C.UTF-8\n/tmp\n");
}

#[tokio::test]
async fn an_unknown_account_is_an_error_not_a_run() {
    let mut spec = shell("true");
    spec.user = Some("no-such-user-here".into());
    let r = run(&spec).await;
    assert_eq!(r.code, None);
    assert!(
        r.error
            .as_deref()
            .unwrap()
            .contains("no user `no-such-user-here`"),
        "{r:?}"
    );
}

/// The program is looked up in the PATH the command gets (its config may give it its own), and
/// one that is not there is reported before anything is started.
#[tokio::test]
async fn programs_are_found_in_the_commands_own_path() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let tool = dir.path().join("site-tool");
    std::fs::write(&tool, "#!/bin/sh\necho \"site tool as $0\"\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut spec = Command::new(Program::Argv(vec!["site-tool".into()]));
    let r = run(&spec).await;
    assert_eq!(r.code, None);
    let error = r.error.unwrap();
    assert!(
        error.contains("`site-tool` is not an executable file in PATH /usr/local/sbin:"),
        "{error}"
    );

    spec.env.insert(
        "PATH".into(),
        format!("/nonexistent:{}:/usr/bin:/bin", dir.path().display()),
    );
    let r = run(&spec).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    // A script sees its path as $0, as it would under execvp.
    assert_eq!(
        r.output,
        format!("site tool as {}\n", tool.display()),
        "{r:?}"
    );

    // A file that is not executable is passed over.
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(run(&spec).await.error.is_some());
}

/// medic catches SIGXFSZ (a write past RLIMIT_FSIZE fails instead of killing it); the commands
/// it runs still get the default disposition, as they would outside medic.
#[tokio::test]
async fn commands_get_default_signal_dispositions() {
    crate::os::catch_file_size_signal().unwrap();
    let r = run(&Command::new(Program::Argv(vec![
        "grep".into(),
        "-E".into(),
        "^Sig(Ign|Cgt):".into(),
        "/proc/self/status".into(),
    ])))
    .await;
    assert_eq!(r.code, Some(0), "{r:?}");
    let xfsz = 1u64 << (libc::SIGXFSZ - 1);
    for line in r.output.lines() {
        let (name, mask) = line.split_once(':').unwrap();
        let mask = u64::from_str_radix(mask.trim(), 16).unwrap();
        assert_eq!(mask & xfsz, 0, "SIGXFSZ in the command's {name}: {line}");
    }
}
