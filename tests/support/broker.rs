//! A real mosquitto (Debian's package) on a free loopback port and a temp config, and the
//! mosquitto-clients tools to publish and watch topics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{Site, wait_until};

pub const USER: &str = "medic";
pub const PASSWORD: &str = "s3cret";

/// A TCP port free on loopback right now.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Tls {
    pub ca: PathBuf,
}

/// A mosquitto with a password file (user [`USER`], password [`PASSWORD`]); killed when dropped.
pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    pub tls: Option<Tls>,
}

impl Mosquitto {
    /// Plain TCP. `persistent`: sessions and queued messages survive a broker restart.
    pub fn start(persistent: bool) -> Self {
        Self::launch(persistent, false)
    }

    /// TLS with a CA and server certificate made for the test (CN/SAN 127.0.0.1, localhost).
    pub fn start_tls() -> Self {
        Self::launch(false, true)
    }

    fn launch(persistent: bool, tls: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_tcp_port();
        let pw = dir.path().join("passwd");
        run(Command::new("mosquitto_passwd")
            .args(["-b", "-c"])
            .arg(&pw)
            .args([USER, PASSWORD]));
        let mut conf = format!(
            "listener {port} 127.0.0.1\n\
             allow_anonymous false\n\
             password_file {}\n\
             # QoS 2 messages are lost past the inflight limit: no limit in tests.\n\
             max_inflight_messages 0\n\
             max_queued_messages 100000\n\
             # As root, stay root so the temp files stay readable.\n\
             user root\n\
             log_type all\n",
            pw.display()
        );
        if persistent {
            conf.push_str(&format!(
                "persistence true\npersistence_location {}/\n",
                dir.path().display()
            ));
        } else {
            conf.push_str("persistence false\n");
        }
        let tls = tls.then(|| {
            let ca = make_certs(dir.path());
            conf.push_str(&format!(
                "cafile {}\ncertfile {}\nkeyfile {}\n",
                ca.display(),
                dir.path().join("server.crt").display(),
                dir.path().join("server.key").display()
            ));
            Tls { ca }
        });
        std::fs::write(dir.path().join("mosquitto.conf"), conf).unwrap();
        let mut m = Self {
            child: None,
            port,
            dir,
            tls,
        };
        m.resume();
        m
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "mqtts" } else { "mqtt" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The `[mqtt]` section of a medic at `site` that talks to this broker: its password in
    /// `mqtt-password` beside the config (written here), the CA when the broker speaks TLS, a
    /// quick reconnect. More `[mqtt]` keys may follow it.
    pub fn medic_section(&self, site: &Site) -> String {
        std::fs::write(site.path("mqtt-password"), format!("{PASSWORD}\n")).unwrap();
        let ca = self
            .tls
            .as_ref()
            .map(|t| format!("ca_file = {:?}\n", t.ca.display().to_string()))
            .unwrap_or_default();
        format!(
            "[mqtt]\nbroker = \"{}\"\nusername = \"{USER}\"\npassword_file = \"mqtt-password\"\n\
             {ca}reconnect_interval = \"100ms\"\n",
            self.url()
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Start (again) on the same port and config; returns once it accepts connections.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mosquitto.log"))
            .unwrap();
        let mut child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("mosquitto is not installed (apt install mosquitto)");
        let port = self.port;
        let up = wait_until(Duration::from_secs(10), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("mosquitto exited: {status}");
            }
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "mosquitto did not listen on {port}:\n{}", self.log());
        self.child = Some(child);
    }

    /// SIGTERM (a persistent broker saves its sessions) and wait.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: plain kill(2) on our own child.
            unsafe { crate::libc_kill(child.id() as i32, 15) };
            let _ = child.wait();
        }
    }

    /// `mosquitto_pub` one message (QoS 2) with the test credentials.
    pub fn publish(&self, topic: &str, payload: &str) {
        let mut cmd = Command::new("mosquitto_pub");
        self.client_args(&mut cmd);
        run(cmd.args(["-q", "2", "-t", topic, "-m", payload]));
    }

    /// Publish the contents of `file` (for payloads too large for a command line).
    pub fn publish_file(&self, topic: &str, file: &std::path::Path) {
        let mut cmd = Command::new("mosquitto_pub");
        self.client_args(&mut cmd);
        run(cmd.args(["-q", "1", "-t", topic, "-f"]).arg(file));
    }

    fn client_args(&self, cmd: &mut Command) {
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-u", USER, "-P", PASSWORD]);
        if let Some(tls) = &self.tls {
            cmd.arg("--cafile").arg(&tls.ca);
        }
    }

    /// Watch a topic: every payload received becomes a line of the watcher's file. With
    /// `session`, it keeps a persistent session under that client id (messages published
    /// while it is away are kept for it). Returns once it is surely subscribed.
    pub fn watch(&self, topic: &str, session: Option<&str>) -> Watcher {
        let file = self.dir.path().join(format!(
            "watch-{}.txt",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let out = std::fs::File::create(&file).unwrap();
        let mut cmd = Command::new("mosquitto_sub");
        self.client_args(&mut cmd);
        cmd.args(["-q", "2", "-t", topic]);
        if let Some(id) = session {
            cmd.args(["-c", "-i", id]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub is not installed (apt install mosquitto-clients)");
        let w = Watcher {
            child,
            file,
            topic: topic.to_string(),
        };
        // Probe until the subscription demonstrably works.
        let probe = "probe";
        let ok = wait_until(Duration::from_secs(10), || {
            self.publish(topic, probe);
            std::thread::sleep(Duration::from_millis(50));
            w.lines().iter().any(|l| l == probe)
        });
        assert!(ok, "mosquitto_sub did not subscribe to {topic}");
        w
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Payloads seen on a topic, one per line (probes excluded).
pub struct Watcher {
    child: Child,
    file: PathBuf,
    pub topic: String,
}

impl Watcher {
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.file)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// Messages, as JSON, excluding probes.
    pub fn json(&self) -> Vec<serde_json::Value> {
        self.lines()
            .iter()
            .filter(|l| *l != "probe")
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Replies for one task id.
    pub fn replies(&self, task_id: u64) -> Vec<serde_json::Value> {
        self.json()
            .into_iter()
            .filter(|v| v["task_id"].as_u64() == Some(task_id))
            .collect()
    }

    /// Wait for the first reply for `task_id`.
    pub fn reply(&self, task_id: u64, timeout: Duration) -> serde_json::Value {
        let mut found = None;
        let ok = wait_until(timeout, || {
            found = self.replies(task_id).into_iter().next();
            found.is_some()
        });
        assert!(
            ok,
            "no reply for task {task_id} on {} within {timeout:?}; saw: {:?}",
            self.topic,
            self.lines()
        );
        found.unwrap()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command request in lua-collectd-monitor's format.
pub fn request(task_id: u64, service: &str, command: &str) -> String {
    serde_json::json!({
        "task_id": task_id,
        "timestamp": now_iso(),
        "service": service,
        "command": command,
    })
    .to_string()
}

fn now_iso() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it, with the openssl tool. Keys are
/// 0644: mosquitto started as root may read them after dropping privileges.
fn make_certs(dir: &Path) -> PathBuf {
    let ca = dir.join("ca.crt");
    let ext = dir.join("san.ext");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(Command::new("openssl")
        .args(["req", "-x509", "-days", "2", "-subj", "/CN=medic test CA"])
        .args(ec)
        .arg("-keyout")
        .arg(dir.join("ca.key"))
        .arg("-out")
        .arg(&ca));
    run(Command::new("openssl")
        .args(["req", "-subj", "/CN=127.0.0.1"])
        .args(ec)
        .arg("-keyout")
        .arg(dir.join("server.key"))
        .arg("-out")
        .arg(dir.join("server.csr")));
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
        .arg("-in")
        .arg(dir.join("server.csr"))
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(dir.join("ca.key"))
        .arg("-out")
        .arg(dir.join("server.crt"))
        .arg("-extfile")
        .arg(&ext));
    for key in ["ca.key", "server.key"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join(key), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    ca
}
