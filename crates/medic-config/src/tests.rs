//! Tests of config parsing and validation.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("medic.toml"), Path::new("/etc/medic"))
}

#[test]
fn full_example_parses_with_defaults_and_resolved_paths() {
    let c = parse(
        r#"
        [daemon]
        node = "web1"
        state_dir = "state"
        [rules]
        dir = "/opt/rules"
        call_timeout = "20ms"
        [rules.config.threshold]
        below = 5
        [ingest.putval]
        socket = "putval.sock"
        [services.hello.commands]
        exec = "echo Hello World!"
        argv = ["echo", "hi"]
        slow = { run = ["sleep", "9"], timeout = "2s", cooldown = "1m", output_cap = 10 }
        "#,
    )
    .unwrap();
    assert_eq!(c.daemon.state_dir, Path::new("/etc/medic/state"));
    assert_eq!(c.rules.dir, Path::new("/opt/rules"));
    assert_eq!(c.rules.call_timeout, Duration::from_millis(20));
    assert_eq!(c.rules.memory_limit_mib, 64);
    assert_eq!(
        c.ingest.putval.unwrap().socket,
        Path::new("/etc/medic/putval.sock")
    );
    let hello = &c.services["hello"].commands;
    assert_eq!(
        hello["exec"].program,
        Program::Shell("echo Hello World!".into())
    );
    assert_eq!(hello["exec"].timeout, Duration::from_secs(60));
    assert_eq!(
        hello["argv"].program,
        Program::Argv(vec!["echo".into(), "hi".into()])
    );
    let slow = &hello["slow"];
    assert_eq!(slow.timeout, Duration::from_secs(2));
    assert_eq!(slow.cooldown, Duration::from_secs(60));
    assert_eq!(slow.output_cap, 10);
    assert_eq!(c.rules.config["threshold"]["below"].as_integer(), Some(5));
}

#[test]
fn errors_have_line_and_column() {
    let err = parse("[daemon]\nnode = \"a\"\nbogus = 1\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("medic.toml:3:1: unknown field `bogus`"),
        "{err}"
    );

    let err = parse("[rules]\ncall_timeout = \"soon\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("medic.toml:2:16: "), "{err}");
    assert!(err.contains("soon"), "{err}");

    let err = parse("[services.s.commands]\nx = []\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("medic.toml:2:5: an argv array needs at least the program"),
        "{err}"
    );

    let err = parse("[services.s.commands]\nx = 5\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("2:5: invalid type: integer `5`, expected a command"),
        "{err}"
    );

    let err = parse("[services.s.commands]\nx = { run = \"a\", tiemout = \"1s\" }\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `tiemout`"), "{err}");

    let err = parse("[daemon\n").unwrap_err().to_string();
    assert!(err.starts_with("medic.toml:1:"), "{err}");
}

#[test]
fn semantic_errors_name_the_key() {
    let err = parse("[rules]\nmemory_limit_mib = 0\n")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "medic.toml: rules.memory_limit_mib must be more than 0"
    );
    let err = parse("[services.s]\ncommands = {}\n")
        .unwrap_err()
        .to_string();
    assert_eq!(err, "medic.toml: services.s has no commands");
}
