//! Rules' notifications handed to a local collectd as `PUTNOTIF` over its unixsock plugin
//! (`[notify] collectd_socket`), as lua-collectd-monitor's local mode does: collectd's own
//! notification plugins (logfile, network to a central host, …) then carry them on.
//!
//! A bounded queue feeds one task that connects for each notification (they are rare) with a
//! timeout; a collectd that is away costs a rate-limited log line, never a stalled rule.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::event::{MAX_MESSAGE_LEN, MAX_NAME_LEN, NotifySource, Severity};
use crate::logging::RateLimited;

/// Notifications waiting for collectd; past it new ones are dropped and counted.
const QUEUE: usize = 256;
/// Connecting, writing and reading the reply, together.
const TIMEOUT: Duration = Duration::from_secs(2);

/// One notification as collectd gets it.
#[derive(Debug, Clone)]
pub struct Notice {
    pub severity: Severity,
    pub time_ns: u64,
    pub node: String,
    pub rule: String,
    pub message: String,
    /// Where the rule said it comes from; none: plugin `medic`, plugin instance the rule.
    pub source: Option<NotifySource>,
}

/// Hands notifications to the sink task. Cheap to clone.
#[derive(Clone)]
pub struct CollectdNotify {
    tx: mpsc::Sender<Notice>,
    node: std::sync::Arc<str>,
}

impl CollectdNotify {
    /// Deliver to the unixsock at `socket`, as host `node`.
    pub fn start(socket: PathBuf, node: &str) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(deliver(socket, rx));
        Self {
            tx,
            node: node.into(),
        }
    }

    pub fn send(
        &self,
        rule: &str,
        severity: Severity,
        message: &str,
        source: Option<&NotifySource>,
    ) {
        let notice = Notice {
            severity,
            time_ns: crate::event::now_ns(),
            node: self.node.to_string(),
            rule: rule.to_string(),
            message: message.to_string(),
            source: source.cloned(),
        };
        if self.tx.try_send(notice).is_err() {
            tracing::warn!("collectd notification queue full or closed: notification dropped");
        }
    }
}

async fn deliver(socket: PathBuf, mut rx: mpsc::Receiver<Notice>) {
    let mut failed = RateLimited::new(Duration::from_secs(60));
    while let Some(notice) = rx.recv().await {
        let line = putnotif(&notice);
        match tokio::time::timeout(TIMEOUT, send(&socket, &line)).await {
            Ok(Ok(reply)) if reply.starts_with("0 ") => {}
            outcome => {
                let why = match outcome {
                    Ok(Ok(reply)) => format!("collectd answered `{reply}`"),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no answer within {TIMEOUT:?}"),
                };
                failed.log(|suppressed| {
                    tracing::warn!(
                        socket = %socket.display(),
                        suppressed,
                        "notification not handed to collectd: {why}"
                    )
                });
            }
        }
    }
}

async fn send(socket: &std::path::Path, line: &str) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(socket).await?;
    stream.write_all(line.as_bytes()).await?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).await?;
    Ok(reply.trim_end().to_string())
}

/// The `PUTNOTIF` line: host is this node, plugin `medic` and plugin instance the rule unless
/// the rule named a source. Values are quoted and escaped as collectd's option parser reads
/// them, cut to collectd's limits, control characters replaced: a message cannot add an option
/// or a second command.
pub fn putnotif(n: &Notice) -> String {
    let from = match &n.source {
        None => format!(
            "plugin=medic plugin_instance={}",
            quoted(&n.rule, MAX_NAME_LEN)
        ),
        Some(s) => {
            let mut from = format!("plugin={}", quoted(&s.plugin, MAX_NAME_LEN));
            for (key, value) in [
                ("plugin_instance", &s.plugin_instance),
                ("type", &s.type_),
                ("type_instance", &s.type_instance),
            ] {
                if !value.is_empty() {
                    from.push_str(&format!(" {key}={}", quoted(value, MAX_NAME_LEN)));
                }
            }
            from
        }
    };
    format!(
        "PUTNOTIF severity={} time={} host={} {from} message={}\n",
        n.severity.as_str(),
        n.time_ns / 1_000_000_000,
        quoted(&n.node, MAX_NAME_LEN),
        quoted(&n.message, MAX_MESSAGE_LEN),
    )
}

fn quoted(value: &str, max_bytes: usize) -> String {
    let mut cut = String::new();
    for c in value.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if cut.len() + c.len_utf8() > max_bytes {
            break;
        }
        cut.push(c);
    }
    let mut out = String::with_capacity(cut.len() + 2);
    out.push('"');
    for c in cut.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_putnotif_line_cannot_be_broken_out_of() {
        let line = putnotif(&Notice {
            severity: Severity::Warning,
            time_ns: 1_700_000_000_123_456_789,
            node: "web-1".into(),
            rule: "disk".into(),
            message: "full \"now\"\nPUTVAL x/y/z N:1 \\".into(),
            source: None,
        });
        assert_eq!(
            line,
            "PUTNOTIF severity=warning time=1700000000 host=\"web-1\" plugin=medic \
             plugin_instance=\"disk\" message=\"full \\\"now\\\" PUTVAL x/y/z N:1 \\\\\"\n"
        );
        let long = putnotif(&Notice {
            severity: Severity::Okay,
            time_ns: 0,
            node: "n".into(),
            rule: "r".into(),
            message: "é".repeat(300),
            source: None,
        });
        let message = long.split("message=\"").nth(1).unwrap();
        assert!(message.len() <= MAX_MESSAGE_LEN + 2, "{}", message.len());
    }

    #[test]
    fn a_named_source_replaces_plugin_medic() {
        let line = putnotif(&Notice {
            severity: Severity::Okay,
            time_ns: 1_700_000_000_000_000_000,
            node: "web-1".into(),
            rule: "lcm_lua".into(),
            message: "{\"code\":0}".into(),
            source: Some(NotifySource {
                plugin: "lua-collectd-monitor-local".into(),
                type_: "/etc/local/a.lua::metric::low".into(),
                ..Default::default()
            }),
        });
        assert_eq!(
            line,
            "PUTNOTIF severity=okay time=1700000000 host=\"web-1\" \
             plugin=\"lua-collectd-monitor-local\" type=\"/etc/local/a.lua::metric::low\" \
             message=\"{\\\"code\\\":0}\"\n"
        );
    }
}
