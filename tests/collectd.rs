//! Real collectd → medic over the network protocol (plain, signed, encrypted), values reaching
//! compiled rules; a wrong password is refused and logged.

use std::time::Duration;

use medic_integration::{Collectd, Medic, Site, free_udp_port, max_seen, wait_until};

const BOUND: Duration = Duration::from_secs(20);

fn network_client(port: u16, security: &str, password: &str) -> String {
    let auth = if security == "None" {
        String::new()
    } else {
        format!(
            "    SecurityLevel {security}\n    Username \"fixture-user\"\n    Password \"{password}\"\n"
        )
    };
    format!(
        "<LoadPlugin network>\n  FlushInterval 1\n</LoadPlugin>\n<Plugin network>\n  \
         <Server \"127.0.0.1\" \"{port}\">\n{auth}  </Server>\n</Plugin>\n"
    )
}

/// medic with two counter rules (one on load, one on free memory) listening at `level`.
fn medic_site(port: u16, level: &str) -> Site {
    let site = Site::new();
    site.add_rule("counter", "load");
    site.add_rule("counter", "mem");
    std::fs::write(site.path("passwd"), "fixture-user: fixture-secret\n").unwrap();
    site.write_config(&format!(
        r#"
[rules.config.load]
pattern = "medic-test/load/load"
[rules.config.mem]
pattern = "medic-test/memory/memory-free"

[ingest.network]
listen = ["127.0.0.1:{port}"]
security_level = "{level}"
auth_file = "passwd"
"#
    ));
    site
}

/// The highest `seen=` count the counter rule `rule` has logged.
fn seen(medic: &Medic, rule: &str) -> u64 {
    let lines = medic.log_lines_with(&format!("rule=\"{rule}\""));
    max_seen(lines.iter().map(String::as_str))
}

fn values_reach_rules(level: &str, collectd_security: &str) {
    let port = free_udp_port();
    let site = medic_site(port, level);
    let medic = site.start();
    let _collectd = Collectd::start(
        site.dir.path(),
        &network_client(port, collectd_security, "fixture-secret"),
    );
    for rule in ["load", "mem"] {
        assert!(
            wait_until(BOUND, || seen(&medic, rule) >= 2),
            "rule {rule} saw no values from collectd ({level}):\n{}",
            medic.log()
        );
    }
    assert!(!medic.log().contains("refused"), "{}", medic.log());
    medic.stop();
}

#[test]
fn plain_values_from_collectd_reach_rules() {
    values_reach_rules("none", "None");
}

#[test]
fn signed_values_from_collectd_reach_rules() {
    values_reach_rules("sign", "Sign");
}

#[test]
fn encrypted_values_from_collectd_reach_rules() {
    values_reach_rules("encrypt", "Encrypt");
}

#[test]
fn a_wrong_password_is_refused_and_logged() {
    let port = free_udp_port();
    let site = medic_site(port, "sign");
    let medic = site.start();
    let _collectd = Collectd::start(site.dir.path(), &network_client(port, "Sign", "wrong"));
    medic.expect_log(
        "datagram refused: signature of user `fixture-user` does not verify",
        BOUND,
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        seen(&medic, "load") + seen(&medic, "mem"),
        0,
        "{}",
        medic.log()
    );
    medic.stop();
}

#[test]
fn unixsock_polling_delivers_values_and_survives_a_collectd_restart() {
    let site = Site::new();
    site.add_rule("counter", "mem");
    let sock = site.path("collectd.sock");
    site.write_config(&format!(
        r#"
[rules.config.mem]
pattern = "medic-test/memory/memory-free"

[ingest.unixsock]
socket = "{}"
interval = "500ms"
patterns = ["*/memory/*", "*/load/load"]
"#,
        sock.display()
    ));
    let unixsock = format!(
        "LoadPlugin unixsock\n<Plugin unixsock>\n  SocketFile \"{}\"\n  DeleteSocket true\n</Plugin>\n",
        sock.display()
    );
    let medic = site.start();
    let collectd = Collectd::start(site.dir.path(), &unixsock);
    assert!(
        wait_until(BOUND, || seen(&medic, "mem") >= 2),
        "{}",
        medic.log()
    );
    drop(collectd);
    medic.expect_log("unixsock: connection to collectd lost", BOUND);
    let before = seen(&medic, "mem");
    let _collectd = Collectd::start(site.dir.path(), &unixsock);
    assert!(
        wait_until(BOUND, || seen(&medic, "mem") >= before + 2),
        "no values after collectd came back:\n{}",
        medic.log()
    );
    assert_eq!(
        medic
            .log_lines_with("unixsock: connected to collectd")
            .len(),
        2
    );
    medic.stop();
}

/// `[notify] collectd_socket`: a rule's notification reaches a real collectd as `PUTNOTIF`
/// over its unixsock plugin, and collectd's logfile plugin logs it like any notification.
#[test]
fn rule_notifications_reach_collectd() {
    let site = Site::new();
    site.add_rule("counter", "counter");
    let sock = site.path("collectd-notify.sock");
    site.write_config(&format!(
        r#"
[rules.config.counter]
pattern = "*/load/load"
run = ["hello", "exec"]

[services.hello.commands]
exec = "echo Hello"

[notify]
collectd_socket = "{}"
"#,
        sock.display()
    ));
    let collectd = Collectd::start(
        site.dir.path(),
        &format!(
            "LoadPlugin unixsock\n<Plugin unixsock>\n  SocketFile \"{}\"\n  DeleteSocket true\n</Plugin>\n",
            sock.display()
        ),
    );
    assert!(
        wait_until(BOUND, || sock.exists()),
        "collectd made no socket"
    );
    let medic = site.start();
    medic.putval(&["PUTVAL h/load/load N:1:1:1"]);
    medic.expect_log(
        "notification: counter: result and timer both arrived",
        BOUND,
    );
    let expected = "Notification: severity = OKAY, host = test, plugin = medic, \
                    plugin_instance = counter, message = counter: result and timer both arrived";
    assert!(
        wait_until(BOUND, || std::fs::read_to_string(&collectd.log)
            .unwrap_or_default()
            .contains(expected)),
        "{}\n{}",
        std::fs::read_to_string(&collectd.log).unwrap_or_default(),
        medic.log()
    );
    medic.stop();
}
