//! Probes as a source, on real parts: a `[probes.worker]` check watches a real process; when it
//! is killed, the checks fail, the compiled `service-health` rule asks for `worker/restart`,
//! medic runs it (a real new process), the checks pass again. Every check and the restart are
//! in the audit history, and the probe's values are readable like collectd's.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use medic_integration::{Site, wait_until};

const WAIT: Duration = Duration::from_secs(30);

fn pid_in(file: &Path) -> Option<u32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[test]
fn a_failing_probe_makes_a_rule_restart_a_real_process() {
    let site = Site::new();
    site.add_rule("service-health", "service-health");
    let pid_file = site.path("worker.pid");
    // Started in a session of its own, so it outlives the command that started it.
    let start = format!(
        "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $! > {}",
        pid_file.display()
    );
    site.write_config(&format!(
        r#"
[probes.worker]
run = ["sh", "-c", "kill -0 $(cat {pid})"]
every = "1s"
timeout = "2s"

[rules.config.service-health]
probes = ["worker"]
failures = 2
steps = [["worker", "restart"]]

[services.worker.commands]
restart = {{ run = ["sh", "-c", "{start}"], timeout = "5s" }}
"#,
        pid = pid_file.display(),
    ));
    assert!(
        Command::new("sh")
            .args(["-c", &start])
            .status()
            .unwrap()
            .success()
    );
    let first = pid_in(&pid_file).unwrap();
    assert!(alive(first));

    let medic = site.start();
    medic.expect_log("probes scheduled", WAIT);
    // Healthy: checks run and pass, nothing is restarted.
    let checks = |state: &str| {
        site.history()
            .iter()
            .filter(|r| r["origin"] == "probe:worker" && r["state"] == state)
            .count()
    };
    assert!(
        wait_until(WAIT, || checks("succeeded") >= 2),
        "{:?}",
        site.history()
    );
    assert_eq!(pid_in(&pid_file), Some(first));

    Command::new("kill")
        .arg(first.to_string())
        .status()
        .unwrap();
    let restarted = || pid_in(&pid_file).is_some_and(|p| p != first && alive(p));
    assert!(wait_until(WAIT, restarted), "{}", medic.log());
    let second = pid_in(&pid_file).unwrap();

    let rows = site.history();
    let restart = rows
        .iter()
        .find(|r| r["service"] == "worker" && r["command"] == "restart")
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert_eq!(restart["origin"], "service-health", "{restart}");
    assert!(checks("failed") >= 2, "{rows:?}");
    // The checks pass again, and the rule says the probe recovered.
    medic.expect_log("probe worker passes again", WAIT);
    // The probe's latest values, as collectd's GETVAL would give them.
    let mut conn = medic.connect();
    let reply = conn.send_counted(&format!("GETVAL {}/probe-worker/probe", site.node));
    assert_eq!(reply[0], "3 Values found", "{reply:?}");
    assert!(reply.contains(&"ok=1.000000e+00".to_string()), "{reply:?}");
    assert!(
        reply.contains(&"code=0.000000e+00".to_string()),
        "{reply:?}"
    );
    medic.stop();
    Command::new("kill")
        .arg(second.to_string())
        .status()
        .unwrap();
}
