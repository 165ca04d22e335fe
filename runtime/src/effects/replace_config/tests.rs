//! Tests of collectd.conf replacement.

use super::*;

#[test]
fn secrets_in_collectd_output_are_masked() {
    let out = "Parse error in line 12: Password \"hunter2\"\n\
               Plugin network: SecurityLevel Encrypt\n\
               Secret: abc\n  KeyFile /etc/ssl/key.pem\nno secrets here: none";
    assert_eq!(
        redact(out),
        "Parse error in line 12: Password ****\n\
         Plugin network: SecurityLevel Encrypt\n\
         Secret ****\nKeyFile ****\nno secrets ****"
    );
    assert_eq!(redact("Password"), "Password");
}

#[test]
fn what_the_issue_found_passing_is_masked_too() {
    for (line, secret) in [
        ("Community \"public-s3cret\"", "s3cret"),
        ("AuthPassphrase \"p4ss\"", "p4ss"),
        ("PrivacyPassphrase \"p4ss\"", "p4ss"),
        ("Token \"t0ken\"", "t0ken"),
        ("Header \"Authorization: Basic dXNlcjpwdw==\"", "dXNlcjpwdw"),
        ("URL \"https://admin:hunter2@influx:8086/write\"", "hunter2"),
        ("could not connect to mqtt://bob:pw@broker/x", "bob:pw"),
        (
            "Parse error in file `/etc/shadow', line 1 near `root:$6$hash': syntax error",
            "$6$hash",
        ),
        (":$$::::::*:::::", "$$"),
    ] {
        let masked = redact(line);
        assert!(!masked.contains(secret), "{line} -> {masked}");
    }
    assert_eq!(
        redact("URL \"https://admin:hunter2@influx:8086/write\""),
        "URL \"https://****@influx:8086/write\""
    );
    assert_eq!(
        redact("Parse error in file `/etc/shadow', line 1 near `root:x': syntax error"),
        "Parse error in file `/etc/shadow', line 1 near `****': syntax error"
    );
}

#[test]
fn only_a_process_running_the_collectd_binary_is_signalled() {
    let me = std::process::id();
    let exe = std::env::current_exe().unwrap();
    assert_eq!(is_collectd(me, &exe), Ok(()));
    let why = is_collectd(me, Path::new("/usr/sbin/collectd")).unwrap_err();
    assert!(why.contains("not signalled"), "{why}");
}

#[test]
fn a_pid_counts_only_while_its_process_lives() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pid");
    assert_eq!(running_pid(&file), None);
    std::fs::write(&file, format!("{}\n", std::process::id())).unwrap();
    assert_eq!(running_pid(&file), Some(std::process::id()));
    std::fs::write(&file, "999999999").unwrap();
    assert_eq!(running_pid(&file), None);
}
