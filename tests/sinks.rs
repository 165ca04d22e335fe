//! Rules as stream connectors, on real parts: the compiled `influx-forward` rule turns values
//! that reach medic's PUTVAL socket into Influx line protocol for a `file` sink; a rule not
//! granted the sink is refused; the file is reopened on SIGHUP after logrotate moved it; what
//! is queued is written before medic stops.

use std::time::Duration;

use medic_integration::{Site, wait_until};

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn emitted_records_reach_a_file_sink_only_from_granted_rules() {
    let site = Site::new();
    site.add_rule("influx-forward", "influx-forward");
    site.add_rule("influx-forward", "rogue");
    let out = site.path("records.log");
    site.write_config(&format!(
        r#"
[rules.config.influx-forward]
patterns = ["*/load/load"]
sink = "archive"

[rules.config.rogue]
patterns = ["*/memory/*"]
sink = "archive"

[rules.grants.influx-forward]
sinks = ["archive"]

[sinks.archive]
kind = "file"
path = {path:?}
"#,
        path = out.display().to_string()
    ));
    let medic = site.start();
    let replies = medic.putval(&[
        "PUTVAL web/load/load interval=10 1764500000:0.5:1:1.5",
        "PUTVAL web/memory/memory-free interval=10 1764500000:1000",
        "PUTVAL web/load/load interval=10 1764500010.25:0.75:1:1.5",
    ]);
    assert!(replies.iter().all(|r| r.starts_with("0 ")), "{replies:?}");
    let lines = || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert!(wait_until(WAIT, || lines().len() >= 2), "{:?}", lines());
    assert_eq!(
        lines(),
        [
            "load,host=web,type=load shortterm=0.5,midterm=1.0,longterm=1.5 1764500000000000000",
            "load,host=web,type=load shortterm=0.75,midterm=1.0,longterm=1.5 1764500010250000000",
        ]
    );
    medic.expect_log(
        "emit refused: sink `archive` is not granted to this rule (rules.grants.rogue.sinks)",
        WAIT,
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&out).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // logrotate: move the file, SIGHUP; new records go to a new file of the same name.
    let rotated = site.path("records.log.1");
    std::fs::rename(&out, &rotated).unwrap();
    medic.signal(1);
    medic.expect_log("sink file reopened", WAIT);
    medic.putval(&["PUTVAL web/load/load interval=10 1764500020:2:1:1.5"]);
    assert!(wait_until(WAIT, || lines().len() == 1), "{:?}", lines());
    assert!(lines()[0].contains("shortterm=2.0"), "{:?}", lines());
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap().lines().count(),
        2
    );

    // Queued records are written before medic stops.
    medic.putval(&["PUTVAL web/load/load interval=10 1764500030:3:1:1.5"]);
    medic.stop();
    assert!(
        lines().iter().any(|l| l.contains("shortterm=3.0")),
        "{:?}",
        lines()
    );
}
