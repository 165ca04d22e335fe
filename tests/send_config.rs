//! lua-collectd-monitor's "send collectd.conf", on real parts: a real collectd (Debian's
//! collectd-core, started and stopped by scripts the test controls), a real mosquitto, and
//! `medic send-config` as the sender. Good, broken, failing-at-start and concurrent configs,
//! and a medic killed in the middle of a replacement that answers once after its restart.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use medic_integration::broker::{self, Mosquitto};
use medic_integration::{Site, free_udp_port, medic_bin, wait_until};

const WAIT: Duration = Duration::from_secs(30);

/// A collectd the test owns: its directory, config, pid file and start/stop scripts.
struct Collectd {
    dir: PathBuf,
    port: u16,
}

impl Collectd {
    fn new(site: &Site) -> Self {
        let dir = site.path("collectd");
        std::fs::create_dir(&dir).unwrap();
        let c = Collectd {
            dir,
            port: free_udp_port(),
        };
        // Starting fails (exit 1) for a config that asks for it: one that passes `-T`.
        c.script(
            "start.sh",
            &format!(
                "grep -q FAIL_AT_START '{conf}' && {{ echo 'refusing to start' >&2; exit 1; }}\n\
                 exec /usr/sbin/collectd -C '{conf}' -P '{pid}'\n",
                conf = c.conf().display(),
                pid = c.pid_file().display()
            ),
        );
        // Stopping is slow while the `slow-stop` file exists.
        c.script(
            "stop.sh",
            &format!(
                "[ -e '{slow}' ] && sleep 3\nkill $(cat '{pid}')\n",
                slow = c.dir.join("slow-stop").display(),
                pid = c.pid_file().display()
            ),
        );
        std::fs::write(c.conf(), c.config("LoadPlugin load\n")).unwrap();
        let started = Command::new("sh")
            .arg(c.dir.join("start.sh"))
            .status()
            .unwrap();
        assert!(started.success());
        assert!(
            wait_until(WAIT, || c.pid().is_some()),
            "collectd did not start"
        );
        c
    }

    fn script(&self, name: &str, body: &str) {
        std::fs::write(self.dir.join(name), format!("#!/bin/sh\n{body}")).unwrap();
    }

    fn conf(&self) -> PathBuf {
        self.dir.join("collectd.conf")
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("collectd.pid")
    }

    /// A config sending to medic's network listener, with `plugins`.
    fn config(&self, plugins: &str) -> String {
        format!(
            r#"Hostname "lcm-test"
FQDNLookup false
Interval 1
BaseDir "{dir}"
PIDFile "{pid}"
TypesDB "/usr/share/collectd/types.db"
LoadPlugin logfile
<Plugin logfile>
  LogLevel info
  File "{dir}/collectd.log"
</Plugin>
LoadPlugin network
<Plugin network>
  Server "127.0.0.1" "{port}"
</Plugin>
{plugins}"#,
            dir = self.dir.display(),
            pid = self.pid_file().display(),
            port = self.port
        )
    }

    fn pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }

    /// A config (written to `file`) whose `<Plugin python>` imports module `module`, which
    /// appends the Python expression `line` to `seen` each time it is imported: once by the
    /// check, once by the start.
    fn python_config(&self, file: &Path, module: &str, line: &str, seen: &Path) {
        std::fs::write(
            self.dir.join(format!("{module}.py")),
            format!(
                "import os\nwith open({seen:?}, 'a') as f:\n    f.write({line} + '\\n')\n",
                seen = seen.display().to_string()
            ),
        )
        .unwrap();
        let plugins = format!(
            "LoadPlugin load\nLoadPlugin python\n<Plugin python>\n  ModulePath {dir:?}\n  \
             Import \"{module}\"\n</Plugin>\n",
            dir = self.dir.display().to_string()
        );
        std::fs::write(file, self.config(&plugins)).unwrap();
    }

    /// The `[collectd]` section medic needs, replacements allowed over the test's plain
    /// `mqtt://` broker.
    fn section(&self) -> String {
        self.section_with("allow_remote = true\nallow_insecure_transport = true\n")
    }

    /// The `[collectd]` section with `opt_in` lines of its own.
    fn section_with(&self, opt_in: &str) -> String {
        format!(
            "[collectd]\n{opt_in}config = {conf:?}\npid_file = {pid:?}\nstart = [\"sh\", {start:?}]\n\
             stop = [\"sh\", {stop:?}]\ntimeout = \"10s\"\n",
            conf = self.conf().display().to_string(),
            pid = self.pid_file().display().to_string(),
            start = self.dir.join("start.sh").display().to_string(),
            stop = self.dir.join("stop.sh").display().to_string(),
        )
    }
}

impl Drop for Collectd {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

/// A medic site with its own collectd running, configured to replace that collectd's config.
fn setup(broker: &Mosquitto) -> (Site, Collectd) {
    let site = Site::new();
    let collectd = Collectd::new(&site);
    configure(&site, broker, &collectd, &collectd.section());
    (site, collectd)
}

/// Write the site's config with `collectd_section`.
fn configure(site: &Site, broker: &Mosquitto, collectd: &Collectd, collectd_section: &str) {
    site.write_config(&format!(
        r#"
[ingest.network]
listen = ["127.0.0.1:{port}"]

{mqtt}max_reconnect_interval = "500ms"
max_age = "1h"

{collectd_section}
"#,
        port = collectd.port,
        mqtt = broker.medic_section(site),
    ));
}

/// Now, as lua-collectd-monitor's senders write `timestamp`.
fn now_iso() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    text(&out.stdout).trim().to_string()
}

fn send_config(broker: &Mosquitto, file: &Path, task_id: u64) -> Output {
    Command::new(medic_bin())
        .arg("send-config")
        .arg(file)
        .args([
            "--broker",
            &broker.url(),
            "--node",
            "test",
            "--user",
            broker::USER,
        ])
        .args(["--task-id", &task_id.to_string(), "--timeout", "60s"])
        .env("MEDIC_MQTT_PASSWORD", broker::PASSWORD)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Values of `identifier` have reached medic (GETVAL on its PUTVAL socket).
fn has_values(medic: &medic_integration::Medic, identifier: &str) -> bool {
    let mut conn = medic.connect();
    let reply = conn.send(&format!("GETVAL {identifier}"));
    !reply.starts_with('-')
}

#[test]
fn configs_are_checked_replaced_and_rolled_back_like_lua_collectd_monitor() {
    let broker = Mosquitto::start(false);
    let (site, collectd) = setup(&broker);
    let medic = site.start();
    medic.expect_log("MQTT: subscribed", WAIT);
    assert!(wait_until(WAIT, || has_values(
        &medic,
        "lcm-test/load/load"
    )));
    assert!(!has_values(&medic, "lcm-test/memory/memory-free"));
    let results = broker.watch("medic/test/result", None);
    let old = std::fs::read_to_string(collectd.conf()).unwrap();
    let first_pid = collectd.pid().unwrap();

    // Broken: refused by `collectd -T`, secrets masked, the live config and collectd untouched.
    let broken = site.path("broken.conf");
    std::fs::write(
        &broken,
        collectd.config("LoadPlugin memory\n<Plugin network>\n  Password \"hunter2\"\n<Plugin"),
    )
    .unwrap();
    let out = send_config(&broker, &broken, 1);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let r = results.reply(1, WAIT);
    assert_eq!(r["code"], 0x2002, "{r}");
    let message = r["message"].as_str().unwrap();
    assert!(
        message.starts_with("New config seems broken!: "),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
    assert_eq!(std::fs::read_to_string(collectd.conf()).unwrap(), old);
    assert_eq!(collectd.pid(), Some(first_pid));
    assert!(!collectd.dir.join("collectd.conf.lock").exists());

    // Good: collectd restarts on it, and the plugin it adds reaches medic.
    let good = site.path("good.conf");
    let new = collectd.config("LoadPlugin load\nLoadPlugin memory\n");
    std::fs::write(&good, &new).unwrap();
    let out = send_config(&broker, &good, 2);
    assert_eq!(
        text(&out.stdout),
        "Succeeded to replace config.\n",
        "{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(collectd.conf()).unwrap(), new);
    assert_eq!(
        std::fs::read_to_string(collectd.dir.join("collectd.conf.orig")).unwrap(),
        old
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(collectd.conf())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "written 0600 from the start");
    let second_pid = collectd.pid().unwrap();
    assert_ne!(second_pid, first_pid);
    assert!(wait_until(WAIT, || has_values(
        &medic,
        "lcm-test/memory/memory-free"
    )));

    // Passes `-T`, fails at start: the old config is back and collectd runs on it.
    let failing = site.path("failing.conf");
    std::fs::write(
        &failing,
        collectd.config("# FAIL_AT_START\nLoadPlugin load\n"),
    )
    .unwrap();
    let out = send_config(&broker, &failing, 3);
    assert_eq!(out.status.code(), Some(1));
    let r = results.reply(3, WAIT);
    assert_eq!(r["code"], 0x2007, "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("refusing to start"),
        "{r}"
    );
    assert_eq!(std::fs::read_to_string(collectd.conf()).unwrap(), new);
    assert!(collectd.pid().is_some());
    assert!(
        std::fs::read_to_string(collectd.dir.join("collectd.conf.rejected"))
            .unwrap()
            .contains("FAIL_AT_START")
    );

    // Two at once: the second is refused while the first (slowed down) runs.
    std::fs::write(collectd.dir.join("slow-stop"), "").unwrap();
    let first = {
        let (broker_url, good) = (broker.url(), good.clone());
        std::thread::spawn(move || {
            Command::new(medic_bin())
                .arg("send-config")
                .arg(&good)
                .args([
                    "--broker",
                    &broker_url,
                    "--node",
                    "test",
                    "--user",
                    broker::USER,
                ])
                .args(["--task-id", "4", "--timeout", "60s"])
                .env("MEDIC_MQTT_PASSWORD", broker::PASSWORD)
                .output()
                .unwrap()
        })
    };
    assert!(wait_until(WAIT, || collectd
        .dir
        .join("collectd.conf.lock")
        .exists()));
    let out = send_config(&broker, &good, 5);
    assert_eq!(out.status.code(), Some(1));
    let r = results.reply(5, WAIT);
    assert_eq!(r["code"], 0x2000, "{r}");
    assert_eq!(
        r["message"],
        "Already attempting to replace collectd config!"
    );
    let out = first.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // One audit record per request: the concurrent one refused, the others with their end.
    let rows: Vec<_> = site
        .history()
        .into_iter()
        .filter(|r| r["command"] == "replace-config")
        .collect();
    assert_eq!(rows.len(), 5, "{rows:?}");
    let state = |task: &str| {
        let row = rows.iter().find(|r| r["origin"] == format!("mqtt:{task}"));
        row.and_then(|r| r["state"].as_str()).unwrap_or("absent")
    };
    let states: Vec<&str> = ["1", "2", "3", "4", "5"].into_iter().map(state).collect();
    assert_eq!(
        states,
        ["failed", "succeeded", "failed", "succeeded", "refused"],
        "{rows:?}"
    );
    medic.stop();
}

#[test]
fn a_medic_killed_mid_replacement_answers_once_after_its_restart() {
    let broker = Mosquitto::start(false);
    let (site, collectd) = setup(&broker);
    let mut medic = site.start();
    medic.expect_log("MQTT: subscribed", WAIT);
    let results = broker.watch("medic/test/result", None);
    std::fs::write(collectd.dir.join("slow-stop"), "").unwrap();
    let good = site.path("good.conf");
    let new = collectd.config("LoadPlugin load\nLoadPlugin memory\n");
    std::fs::write(&good, &new).unwrap();
    broker.publish_file("medic/test/command", &{
        let request = site.path("request.json");
        let payload = serde_json::json!({"task_id": 7, "timestamp": now_iso(), "config": new});
        std::fs::write(&request, payload.to_string()).unwrap();
        request
    });
    // Killed while collectd is being stopped.
    medic.expect_log("collectd config replacement received", WAIT);
    assert!(wait_until(WAIT, || collectd
        .dir
        .join("collectd.conf.lock")
        .exists()));
    std::thread::sleep(Duration::from_millis(500));
    medic.signal(9);
    assert!(wait_until(WAIT, || !medic.is_running()));
    assert!(results.replies(7).is_empty());

    let medic = site.start();
    medic.expect_log("finishing it", WAIT);
    let r = results.reply(7, WAIT);
    assert_eq!(r["code"], 0, "{r}");
    assert_eq!(std::fs::read_to_string(collectd.conf()).unwrap(), new);
    assert!(wait_until(WAIT, || collectd.pid().is_some()));
    // Never two.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(results.replies(7).len(), 1, "{:?}", results.lines());
    medic.stop();
}

/// Off unless `allow_remote`; over plain `mqtt://` only with `allow_insecure_transport`; not
/// without `mqtt.max_age`. With the opt-in, the check and the start see none of medic's
/// environment, and a config that `Include`s a secret file gets no fragment of it back.
#[test]
fn replacement_is_opt_in_and_leaks_neither_environment_nor_included_files() {
    let broker = Mosquitto::start(false);
    let site = Site::new();
    let collectd = Collectd::new(&site);
    let old = std::fs::read_to_string(collectd.conf()).unwrap();
    let good = site.path("good.conf");
    std::fs::write(&good, collectd.config("LoadPlugin load\n")).unwrap();
    let results = broker.watch("medic/test/result", None);
    let refused = |task: u64, says: &str| {
        let out = send_config(&broker, &good, task);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        let r = results.reply(task, WAIT);
        assert_eq!(r["code"], 0x1005, "{r}");
        assert!(r["message"].as_str().unwrap().contains(says), "{r}");
        assert_eq!(std::fs::read_to_string(collectd.conf()).unwrap(), old);
    };

    // Not turned on: refused, and recorded as refused.
    configure(&site, &broker, &collectd, &collectd.section_with(""));
    let medic = site.start();
    medic.expect_log("MQTT: subscribed", WAIT);
    refused(1, "allow_remote = true");
    medic.stop();
    // On, but the broker is plain mqtt://.
    configure(
        &site,
        &broker,
        &collectd,
        &collectd.section_with("allow_remote = true\n"),
    );
    let medic = site.start();
    medic.expect_log("MQTT: subscribed", WAIT);
    refused(2, "plain mqtt://");
    medic.stop();
    let states: Vec<String> = site
        .history()
        .iter()
        .filter(|r| r["command"] == "replace-config")
        .map(|r| r["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["refused", "refused"]);
    // And never without a replay bound.
    let text_now = std::fs::read_to_string(site.path("medic.toml")).unwrap();
    std::fs::write(
        site.path("medic.toml"),
        text_now.replace("max_age = \"1h\"\n", ""),
    )
    .unwrap();
    let check = site.check();
    assert!(!check.status.success());
    assert!(
        text(&check.stderr).contains("collectd.allow_remote needs mqtt.max_age"),
        "{}",
        text(&check.stderr)
    );

    // Turned on: a <Plugin python> block runs at the check (and the start), without medic's
    // environment.
    configure(&site, &broker, &collectd, &collectd.section());
    let medic = site.start_with_env(&[("MEDIC_TEST_SECRET", "env-s3cret")]);
    medic.expect_log("MQTT: subscribed", WAIT);
    let seen = collectd.dir.join("environment.seen");
    let python = site.path("python.conf");
    collectd.python_config(&python, "show_env", "repr(dict(os.environ))", &seen);
    let out = send_config(&broker, &python, 3);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let environments = std::fs::read_to_string(&seen).unwrap();
    assert!(
        environments.lines().count() >= 2,
        "the check and the start: {environments}"
    );
    assert!(!environments.contains("env-s3cret"), "{environments}");
    assert!(
        !environments.contains("MEDIC_TEST_SECRET"),
        "{environments}"
    );
    assert!(!environments.contains("mqtt-password"), "{environments}");

    // A config that includes a secret file: the parser quotes it, the reply does not.
    let secret = site.path("shadow");
    std::fs::write(&secret, "root:x:0:0\n\"hunter2-quoted\" x\n").unwrap();
    let including = site.path("including.conf");
    std::fs::write(
        &including,
        collectd.config(&format!("Include {:?}\n", secret.display().to_string())),
    )
    .unwrap();
    let out = send_config(&broker, &including, 4);
    assert_eq!(out.status.code(), Some(1));
    let r = results.reply(4, WAIT);
    assert_eq!(r["code"], 0x2002, "{r}");
    let message = r["message"].as_str().unwrap();
    assert!(!message.contains("hunter2"), "{message}");
    assert!(message.contains("near `****'"), "{message}");
    assert!(!medic.log().contains("hunter2"), "{}", medic.log());
    medic.stop();

    // With `user`, the check loads the submitted plugins as that account (the start, which
    // manages the service, stays medic's). Its directories must be open to that account, as
    // /etc/collectd is.
    use std::os::unix::fs::PermissionsExt;
    let open = |p: &Path, mode| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    open(&site.path(""), 0o755);
    open(&collectd.dir, 0o755);
    let uids = site.path("uids");
    std::fs::create_dir(&uids).unwrap();
    open(&uids, 0o777);
    let seen = uids.join("seen");
    configure(
        &site,
        &broker,
        &collectd,
        &collectd.section_with(
            "allow_remote = true\nallow_insecure_transport = true\nuser = \"nobody\"\n\
             group = \"nogroup\"\n",
        ),
    );
    let medic = site.start();
    medic.expect_log("MQTT: subscribed", WAIT);
    let as_nobody = site.path("as-nobody.conf");
    collectd.python_config(&as_nobody, "show_uid", "str(os.getuid())", &seen);
    let out = send_config(&broker, &as_nobody, 5);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let uids: Vec<String> = std::fs::read_to_string(&seen)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        uids.first().map(String::as_str),
        Some("65534"),
        "the check: {uids:?}"
    );
    medic.stop();
}
