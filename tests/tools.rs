//! collectd's own clients against medic's PUTVAL socket, side by side with a real collectd's
//! unixsock: the same `collectdctl putval`s go to both, then `collectdctl getval/listval/flush`
//! and `collectd-nagios` must print the same and exit the same on each (Debian's
//! collectd-utils, collectd 5.12).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use medic_integration::packet::{
    Datagram, HOST, INTERVAL_HR, PLUGIN, TIME_HR, TYPE, TYPE_INSTANCE, cdtime, cdtime_now,
};
use medic_integration::{Collectd, Site, free_udp_port, wait_until};

const WAIT: Duration = Duration::from_secs(20);

/// stdout + stderr, and the exit code.
fn run(program: &str, args: &[&str]) -> (String, i32) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (apt-get install collectd-utils)"));
    (
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        out.status.code().unwrap_or(-1),
    )
}

fn ctl(socket: &Path, args: &[&str]) -> (String, i32) {
    let socket = socket.to_str().unwrap();
    let all: Vec<&str> = ["-s", socket]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    run("collectdctl", &all)
}

fn nagios(socket: &Path, args: &[&str]) -> (String, i32) {
    let socket = socket.to_str().unwrap();
    let all: Vec<&str> = ["-s", socket]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    run("collectd-nagios", &all)
}

/// Everything a socket answers to `line` (until it is quiet for a moment): the raw bytes
/// collectdctl would parse, blank lines included.
fn raw(socket: &Path, line: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream.write_all(format!("{line}\n").as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(out).unwrap()
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn collectdctl_and_collectd_nagios_answer_as_against_collectd() {
    let udp = free_udp_port();
    let site = Site::new();
    site.write_config(&format!(
        "[ingest.network]\nlisten = [\"127.0.0.1:{udp}\"]\n"
    ));
    let medic = site.start();
    let ours = site.socket();
    let theirs = site.path("collectd.sock");
    let _collectd = Collectd::start(
        site.dir.path(),
        &format!(
            "LoadPlugin unixsock\n<Plugin unixsock>\n  SocketFile \"{}\"\n  DeleteSocket true\n\
             </Plugin>\n",
            theirs.display()
        ),
    );
    assert!(
        wait_until(WAIT, || theirs.exists()),
        "collectd's unixsock never appeared"
    );

    // The same values to both: a gauge, a derive twice (a rate), a counter once (no rate yet),
    // and a three-source load.
    let t = now_s() - 15;
    let putvals: Vec<Vec<String>> = vec![
        vec![
            "tools/test/gauge-a".into(),
            "interval=10".into(),
            "N:42.5".into(),
        ],
        vec![
            "tools/test/derive-a".into(),
            "interval=10".into(),
            format!("{t}:100"),
        ],
        vec![
            "tools/test/derive-a".into(),
            "interval=10".into(),
            format!("{}:600", t + 10),
        ],
        vec![
            "tools/test/counter-a".into(),
            "interval=10".into(),
            "N:7".into(),
        ],
        vec![
            "tools/load/load".into(),
            "interval=10".into(),
            "N:0.5:1.5:2.5".into(),
        ],
    ];
    for socket in [&ours, &theirs] {
        for args in &putvals {
            let mut all = vec!["putval"];
            all.extend(args.iter().map(String::as_str));
            let (out, code) = ctl(socket, &all);
            assert_eq!(code, 0, "putval {args:?} on {}: {out}", socket.display());
        }
    }
    // Over the network protocol too (medic only): GETVAL sees it the same way.
    let mut d = Datagram::default();
    d.string(HOST, "tools-net")
        .string(PLUGIN, "net")
        .string(TYPE, "gauge")
        .number(TIME_HR, cdtime_now())
        .number(INTERVAL_HR, cdtime(Duration::from_secs(10)))
        .string(TYPE_INSTANCE, "b")
        .gauge(7.25);
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(d.bytes(), ("127.0.0.1", udp))
        .unwrap();

    // Both have taken every value (each answers PUTVAL before its cache has it).
    for socket in [&ours, &theirs] {
        assert!(
            wait_until(WAIT, || ctl(socket, &["getval", "tools/load/load"]).1 == 0
                && ctl(socket, &["getval", "tools/test/derive-a"]).0
                    == "value=5.000000e+01\n"),
            "{} never had the values: {:?}\n{}",
            socket.display(),
            ctl(socket, &["getval", "tools/test/derive-a"]),
            medic.log()
        );
    }
    assert!(
        wait_until(WAIT, || ctl(&ours, &["getval", "tools-net/net/gauge-b"]).0
            == "value=7.250000e+00\n"),
        "{:?}",
        ctl(&ours, &["getval", "tools-net/net/gauge-b"])
    );

    let same = |what: &str, ours: (String, i32), theirs: (String, i32)| {
        assert_eq!(
            ours, theirs,
            "{what}: medic (left) and collectd (right) differ"
        );
        ours
    };
    for id in [
        "tools/test/gauge-a",
        "tools/test/derive-a",
        "tools/test/counter-a",
        "tools/load/load",
        "tools/nosuch/gauge",
        "tools/test/nosuchtype",
        "tools/test",
    ] {
        let args = ["getval", id];
        same(
            &format!("getval {id}"),
            ctl(&ours, &args),
            ctl(&theirs, &args),
        );
        // And the protocol itself, byte for byte.
        let line = format!("GETVAL \"{id}\"");
        assert_eq!(raw(&ours, &line), raw(&theirs, &line), "{line}");
    }
    for line in [
        "GETVAL tools/load/load extra",
        "LISTVAL extra",
        "FLUSH timeout=x",
        "HELLO",
    ] {
        assert_eq!(raw(&ours, line), raw(&theirs, line), "{line}");
    }
    // LISTVAL: `time identifier`, the time with milliseconds, sorted like collectd's.
    let listed = |socket: &Path| -> Vec<(String, String)> {
        raw(socket, "LISTVAL")
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(' '))
            .filter(|(_, id)| id.starts_with("tools/"))
            .map(|(t, id)| (t.to_string(), id.to_string()))
            .collect()
    };
    let (ours_listed, theirs_listed) = (listed(&ours), listed(&theirs));
    let ids = |l: &[(String, String)]| l.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&ours_listed), ids(&theirs_listed));
    for (time, id) in &ours_listed {
        let (secs, millis) = time.split_once('.').unwrap();
        assert!(
            secs.parse::<u64>().is_ok() && millis.len() == 3,
            "{time} {id}"
        );
    }
    let derive_time = |l: &[(String, String)]| {
        l.iter()
            .find(|(_, id)| id == "tools/test/derive-a")
            .map(|(t, _)| t.clone())
    };
    assert_eq!(derive_time(&ours_listed), Some(format!("{}.000", t + 10)));
    assert_eq!(derive_time(&ours_listed), derive_time(&theirs_listed));
    let (load, _) = ctl(&ours, &["getval", "tools/load/load"]);
    assert_eq!(
        load,
        "shortterm=5.000000e-01\nmidterm=1.500000e+00\nlongterm=2.500000e+00\n"
    );
    // collectdctl prints the `NaN` it reads the way C's printf does.
    assert_eq!(
        ctl(&ours, &["getval", "tools/test/counter-a"]).0,
        "value=nan\n"
    );

    // listval prints identifiers only; collectd also lists its own load and memory plugins.
    let ours_list = ctl(&ours, &["listval"]);
    let theirs_list = ctl(&theirs, &["listval"]);
    assert_eq!((ours_list.1, theirs_list.1), (0, 0));
    let mine = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| l.starts_with("tools/"))
            .map(String::from)
            .collect()
    };
    assert_eq!(mine(&ours_list.0), mine(&theirs_list.0));
    assert_eq!(mine(&ours_list.0).len(), 4, "{}", ours_list.0);

    for args in [
        &["flush"][..],
        &["flush", "plugin=network", "timeout=0"],
        &["flush", "identifier=tools/load/load"],
    ] {
        let (out, code) = same(&format!("{args:?}"), ctl(&ours, args), ctl(&theirs, args));
        assert_eq!(code, 0, "{out}");
    }

    // collectd-nagios: OK 0, WARNING 1, CRITICAL 2, and the same report line.
    for (args, code) in [
        (
            &["-n", "test/gauge-a", "-H", "tools", "-w", "50", "-c", "60"][..],
            0,
        ),
        (
            &["-n", "test/gauge-a", "-H", "tools", "-w", "40", "-c", "60"],
            1,
        ),
        (
            &["-n", "test/gauge-a", "-H", "tools", "-w", "30", "-c", "40"],
            2,
        ),
        (
            &[
                "-n",
                "load/load",
                "-H",
                "tools",
                "-d",
                "midterm",
                "-w",
                "1",
                "-c",
                "2",
            ],
            1,
        ),
        (
            &[
                "-n",
                "test/derive-a",
                "-H",
                "tools",
                "-w",
                "100",
                "-c",
                "200",
            ],
            0,
        ),
    ] {
        let (out, got) = same(
            &format!("collectd-nagios {args:?}"),
            nagios(&ours, args),
            nagios(&theirs, args),
        );
        assert_eq!(got, code, "collectd-nagios {args:?}: {out}");
    }
    medic.stop();
}
