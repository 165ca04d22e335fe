//! Helpers for integration tests: start the real `medic` binary on a temp directory, talk to its
//! sockets, and read its log. Rules come from `target/rules/` (built by scripts/build-rules.sh).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod bench;
pub mod broker;
pub mod packet;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` (relative to the workspace, where the scripts
/// run cargo) or `target/`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => workspace().join(dir),
        None => workspace().join("target"),
    }
}

/// The medic binary under test (`MEDIC_BIN`, or target/debug/medic).
pub fn medic_bin() -> PathBuf {
    let bin = std::env::var_os("MEDIC_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("debug/medic"));
    assert!(
        bin.exists(),
        "{} is missing: run scripts/test.sh (it builds medic and the rules first)",
        bin.display()
    );
    bin
}

/// A compiled rule from target/rules/.
pub fn rule(name: &str) -> PathBuf {
    let path = target_dir().join("rules").join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-rules.sh (or scripts/test.sh)",
        path.display()
    );
    path
}

/// Poll `f` until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A temp directory laid out for one medic: `rules/`, `state/`, `medic.toml`, `medic.log`.
pub struct Site {
    pub dir: tempfile::TempDir,
    /// `daemon.node`.
    pub node: String,
}

impl Site {
    pub fn new() -> Self {
        Self::named("test")
    }

    /// A site whose medic calls itself `node`.
    pub fn named(node: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        Self {
            dir,
            node: node.to_string(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn rules_dir(&self) -> PathBuf {
        self.path("rules")
    }

    pub fn socket(&self) -> PathBuf {
        self.path("putval.sock")
    }

    /// Install a compiled rule under another name (its rule name is the file stem).
    pub fn add_rule(&self, build: &str, as_name: &str) {
        std::fs::copy(
            rule(build),
            self.rules_dir().join(format!("{as_name}.wasm")),
        )
        .unwrap();
    }

    /// Deploy a file the way deploy tools do: write beside, then rename over.
    pub fn deploy(&self, src: &Path, as_name: &str) {
        let tmp = self.rules_dir().join(format!(".{as_name}.tmp"));
        std::fs::copy(src, &tmp).unwrap();
        std::fs::rename(&tmp, self.rules_dir().join(format!("{as_name}.wasm"))).unwrap();
    }

    /// Write medic.toml: the daemon, rules and putval sections, then `extra`.
    pub fn write_config(&self, extra: &str) -> PathBuf {
        let config = format!(
            r#"
[daemon]
node = "{node}"
state_dir = "state"

[rules]
dir = "rules"
call_timeout = "50ms"
memory_limit_mib = 32
fault_backoff = "200ms"
max_backoff = "2s"

[ingest]
types_db = ["/usr/share/collectd/types.db"]

[ingest.putval]
socket = "putval.sock"

{extra}
"#,
            node = self.node
        );
        let path = self.path("medic.toml");
        std::fs::write(&path, config).unwrap();
        path
    }

    /// Add `line` to section `[section]` of the config written by `write_config`.
    pub fn set(&self, section: &str, line: &str) {
        let path = self.path("medic.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let header = format!("[{section}]\n");
        assert!(text.contains(&header), "no [{section}] in medic.toml");
        std::fs::write(
            &path,
            text.replacen(&header, &format!("{header}{line}\n"), 1),
        )
        .unwrap();
    }

    pub fn check(&self) -> Output {
        Command::new(medic_bin())
            .args(["check", "--config"])
            .arg(self.path("medic.toml"))
            .output()
            .unwrap()
    }

    /// `medic history --json` on this site's config: every row, newest first.
    pub fn history(&self) -> Vec<serde_json::Value> {
        let out = Command::new(medic_bin())
            .args(["history", "--json", "--limit", "10000", "--config"])
            .arg(self.path("medic.toml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "medic history failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// SHA-256 of the rule deployed as `name`, as medic records it.
    pub fn build_of(&self, name: &str) -> String {
        let out = Command::new("sha256sum")
            .arg(self.rules_dir().join(format!("{name}.wasm")))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()[..64].to_string()
    }

    /// Start `medic run` on this site's config and wait for its socket.
    pub fn start(&self) -> Medic {
        self.start_binary(&medic_bin(), "debug")
    }

    /// Start a given medic binary (benchmarks run the release build) at a log level.
    pub fn start_binary(&self, bin: &Path, log_level: &str) -> Medic {
        self.start_limited(bin, log_level, None, &[])
    }

    /// Start medic with variables added to its environment.
    pub fn start_with_env(&self, env: &[(&str, &str)]) -> Medic {
        self.start_limited(&medic_bin(), "debug", None, env)
    }

    /// Start medic with its open-files limit (soft and hard) at `nofile`, as a service manager
    /// with `LimitNOFILE=` would.
    pub fn start_with_open_files(&self, nofile: u64) -> Medic {
        self.start_limited(&medic_bin(), "debug", Some(nofile), &[])
    }

    fn start_limited(
        &self,
        bin: &Path,
        log_level: &str,
        nofile: Option<u64>,
        env: &[(&str, &str)],
    ) -> Medic {
        let log = self.path("medic.log");
        // The log is appended to across restarts: wait for this run's own start line.
        let runs_before = std::fs::read_to_string(&log)
            .map(|l| l.matches("medic running").count())
            .unwrap_or(0);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut command = Command::new(bin);
        command
            .args(["run", "--log-level", log_level, "--config"])
            .arg(self.path("medic.toml"))
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        if let Some(limit) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit(2) is async-signal-safe and touches only the child.
            unsafe {
                command.pre_exec(move || {
                    let l = Rlimit {
                        cur: limit,
                        max: limit,
                    };
                    if libc_setrlimit(RLIMIT_NOFILE, &l) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command.spawn().unwrap();
        let medic = Medic {
            child,
            log,
            socket: self.socket(),
        };
        assert!(
            wait_until(Duration::from_secs(60), || {
                medic.log().matches("medic running").count() > runs_before
            }),
            "medic did not start:\n{}",
            medic.log()
        );
        medic
    }
}

impl Default for Site {
    fn default() -> Self {
        Self::new()
    }
}

/// A running medic; killed when dropped.
pub struct Medic {
    child: Child,
    log: PathBuf,
    socket: PathBuf,
}

impl Medic {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_lines_with(&self, needle: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(needle))
            .map(String::from)
            .collect()
    }

    /// Wait for a log line containing `needle`; panics with the log (and, where gdb is
    /// installed, every thread's stack: a medic that stopped moving shows where) if none comes.
    pub fn expect_log(&self, needle: &str, timeout: Duration) {
        assert!(
            wait_until(timeout, || self.log().contains(needle)),
            "no log line containing {needle:?} within {timeout:?}; log:\n{}{}",
            self.log(),
            self.thread_stacks()
        );
    }

    /// Whether medic still runs, and if so each thread's stack (`gdb -batch`, where gdb is
    /// installed): what a test that waited in vain prints, so a crash or a hang shows itself.
    pub fn thread_stacks(&self) -> String {
        // Not waited for yet, so a dead medic is a zombie whose exit status /proc still has.
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()));
        let fields: Vec<String> = stat
            .unwrap_or_default()
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().map(String::from).collect())
            .unwrap_or_default();
        if fields.first().is_some_and(|state| state == "Z") {
            // Field 52 of stat, the 50th after the name: the wait status.
            let status: i32 = fields.get(49).and_then(|f| f.parse().ok()).unwrap_or(-1);
            return format!(
                "\nmedic is not running: it ended with wait status {status} (signal {}, exit \
                 code {})",
                status & 0x7f,
                (status >> 8) & 0xff
            );
        }
        let out = Command::new("gdb")
            .args(["-p", &self.child.id().to_string(), "-batch", "-ex"])
            .arg("thread apply all bt 24")
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(out) if out.status.success() => format!(
                "\nmedic's threads:\n{}",
                String::from_utf8_lossy(&out.stdout)
            ),
            _ => String::new(),
        }
    }

    pub fn connect(&self) -> Connection {
        let stream = UnixStream::connect(&self.socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Connection {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    /// Send lines on a fresh connection and return one reply per line.
    pub fn putval(&self, lines: &[&str]) -> Vec<String> {
        let mut c = self.connect();
        lines.iter().map(|l| c.send(l)).collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal (SIGHUP = 1, SIGTERM = 15).
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc_kill(self.child.id() as i32, sig) };
    }

    /// Still running (not crashed)?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM and wait: the graceful stop (rules are suspended).
    pub fn stop(self) {
        self.stop_status();
    }

    /// SIGTERM, wait, and say how medic exited and how long the stop took.
    pub fn stop_status(mut self) -> (std::process::ExitStatus, Duration) {
        let asked = Instant::now();
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc_kill(self.child.id() as i32, 15) };
        let status = self.child.wait().unwrap();
        (status, asked.elapsed())
    }
}

impl Drop for Medic {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[repr(C)]
struct Rlimit {
    cur: u64,
    max: u64,
}

const RLIMIT_NOFILE: i32 = 7;

/// Raise this (test) process's soft open-files limit to its hard one: a test that opens
/// thousands of connections must not depend on the shell it was started from.
pub fn raise_own_open_files() -> u64 {
    let mut l = Rlimit { cur: 0, max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass, nothing else.
    unsafe {
        if libc_getrlimit(RLIMIT_NOFILE, &mut l) == 0 && l.cur < l.max {
            l.cur = l.max;
            libc_setrlimit(RLIMIT_NOFILE, &l);
        }
        libc_getrlimit(RLIMIT_NOFILE, &mut l);
    }
    l.cur
}

unsafe extern "C" {
    #[link_name = "getrlimit"]
    fn libc_getrlimit(resource: i32, limit: *mut Rlimit) -> i32;
    #[link_name = "setrlimit"]
    fn libc_setrlimit(resource: i32, limit: *const Rlimit) -> i32;
    #[link_name = "kill"]
    pub(crate) fn libc_kill(pid: i32, sig: i32) -> i32;
    #[link_name = "umask"]
    fn libc_umask(mask: u32) -> u32;
}

impl Site {
    /// Start medic with the process umask set to `mask` (restored right after the spawn; the
    /// umask is process-wide, so keep such tests in a binary that tolerates it).
    pub fn start_with_umask(&self, mask: u32) -> Medic {
        // SAFETY: umask(2) only changes this process's file mode creation mask.
        let before = unsafe { libc_umask(mask) };
        let medic = self.start();
        unsafe { libc_umask(before) };
        medic
    }
}

/// One PUTVAL connection.
pub struct Connection {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Connection {
    pub fn send(&mut self, line: &str) -> String {
        self.writer.write_all(line.as_bytes()).unwrap();
        self.writer.write_all(b"\n").unwrap();
        let mut reply = String::new();
        self.reader.read_line(&mut reply).unwrap();
        reply.trim_end().to_string()
    }

    /// Send a command whose reply is a count line (`3 Values found`) and that many lines;
    /// returns them all.
    pub fn send_counted(&mut self, line: &str) -> Vec<String> {
        let first = self.send(line);
        let count: usize = first
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .filter(|n: &usize| *n > 0)
            .unwrap_or(0);
        let mut all = vec![first];
        for _ in 0..count {
            let mut reply = String::new();
            self.reader.read_line(&mut reply).unwrap();
            all.push(reply.trim_end().to_string());
        }
        all
    }

    /// Write many lines, then read their replies (pipelined, as collectd's exec plugin does).
    pub fn send_many(&mut self, lines: &[String]) -> Vec<String> {
        let mut buf = String::new();
        for l in lines {
            buf.push_str(l);
            buf.push('\n');
        }
        self.writer.write_all(buf.as_bytes()).unwrap();
        (0..lines.len())
            .map(|_| {
                let mut reply = String::new();
                self.reader.read_line(&mut reply).unwrap();
                reply.trim_end().to_string()
            })
            .collect()
    }
}

/// The highest `seen=N` the test `counter` rule logged in `lines` (0 when none): how many
/// values reached it.
pub fn max_seen<'a>(lines: impl IntoIterator<Item = &'a str>) -> u64 {
    lines
        .into_iter()
        .filter_map(|l| {
            l.split(" seen=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

/// Lines in a marker file (one per command run).
pub fn marker_count(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// A UDP port free on loopback right now.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real collectd (Debian's collectd-core) in the foreground on a temp config; killed when
/// dropped.
pub struct Collectd {
    child: Child,
    pub log: PathBuf,
}

impl Collectd {
    /// Start collectd with `Interval 1`, the load and memory plugins, a log file, and `plugins`
    /// (more config text) appended.
    pub fn start(dir: &Path, plugins: &str) -> Self {
        let log = dir.join("collectd.log");
        let conf = dir.join("collectd.conf");
        std::fs::write(
            &conf,
            format!(
                r#"Hostname "medic-test"
FQDNLookup false
Interval 1
BaseDir "{dir}"
PIDFile "{dir}/collectd.pid"
TypesDB "/usr/share/collectd/types.db"
LoadPlugin logfile
<Plugin logfile>
  LogLevel info
  File "{log}"
</Plugin>
LoadPlugin load
LoadPlugin memory
{plugins}
"#,
                dir = dir.display(),
                log = log.display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/collectd")
            .args(["-f", "-C"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("collectd is missing: apt-get install collectd-core");
        Self { child, log }
    }
}

impl Collectd {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Collectd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on loopback (for medic's `[http] listen`).
pub fn free_tcp_port() -> u16 {
    broker::free_tcp_port()
}

/// `GET path` from `addr` (`127.0.0.1:port`) over HTTP/1.0, with an optional bearer token:
/// the status code and the body. HTTP/1.0 so the body is never chunked and ends at close.
pub fn http_get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or((response.as_str(), ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {head}"));
    (code, body.to_string())
}
