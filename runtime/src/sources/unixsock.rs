//! Polls collectd's unixsock plugin: `LISTVAL`, then `GETVAL` for every identifier matching the
//! configured patterns whose time moved since the last poll. collectd answers GETVAL from its
//! cache with rates already computed for counters and derives, so every value arrives as a
//! gauge. Reconnects with backoff when collectd restarts; never crashes on what it reads.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use medic_rules::PatternSet;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use crate::config::Unixsock as UnixsockConfig;
use crate::event::{Identifier, Ingested, MAX_VALUES, Sample, ValueList, secs_to_ns};
use crate::metrics::{SourceCounters, metrics};
use crate::shutdown::Shutdown;

const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A reply line longer than this is treated as a broken connection.
const MAX_LINE: usize = 64 * 1024;
/// Most identifiers a LISTVAL reply may announce; more ends the poll (a collectd with more
/// series than this is better read over the network protocol).
const MAX_LISTVAL: usize = 1_000_000;
/// A poll that takes longer (collectd stalled mid-reply) ends with an error and a reconnect.
const POLL_TIMEOUT: Duration = Duration::from_secs(60);

/// `<time> <identifier>` from a LISTVAL reply; the identifier may contain spaces.
pub fn parse_listval_line(line: &str) -> Option<(u64, &str)> {
    let (time, identifier) = line.split_once(' ')?;
    let time = time.parse::<f64>().ok().and_then(secs_to_ns)?;
    (!identifier.is_empty()).then_some((time, identifier))
}

/// `name=value` from a GETVAL reply; collectd writes NaN for unknown values.
pub fn parse_getval_line(line: &str) -> Option<(&str, f64)> {
    let (name, value) = line.split_once('=')?;
    let value = if value.eq_ignore_ascii_case("nan") {
        f64::NAN
    } else {
        value.parse().ok()?
    };
    Some((name, value))
}

/// The count in a status line such as `38 Values found`, or the error text of `-1 …`.
pub fn parse_status(line: &str) -> Result<usize, String> {
    let (code, rest) = line.split_once(' ').unwrap_or((line, ""));
    match code.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n as usize),
        Ok(_) => Err(rest.to_string()),
        Err(_) => Err(format!("unexpected reply `{line}`")),
    }
}

/// Quote an identifier for a command, as collectdctl does.
fn quote(identifier: &str) -> String {
    format!(
        "\"{}\"",
        identifier.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

pub struct Poller {
    socket: PathBuf,
    interval: Duration,
    patterns: PatternSet,
    sink: mpsc::Sender<Ingested>,
    /// Last time seen per identifier, so an unchanged value is not delivered twice.
    seen: HashMap<String, u64>,
    counters: SourceCounters,
}

/// Refusal reasons of this source.
pub const REFUSAL_REASONS: &[&str] = &["unreadable_line", "getval_refused"];

impl Poller {
    pub fn new(config: &UnixsockConfig, sink: mpsc::Sender<Ingested>) -> Self {
        Self {
            socket: config.socket.clone(),
            interval: config.interval,
            patterns: PatternSet::new(&config.patterns),
            sink,
            seen: HashMap::new(),
            counters: metrics().source("unixsock", config.socket.display().to_string()),
        }
    }

    /// Poll until `shutdown` fires (a poll in progress is abandoned: nothing is half-sent).
    pub async fn run(mut self, mut shutdown: Shutdown) {
        tokio::select! {
            _ = self.poll_forever() => {}
            _ = shutdown.wait() => {}
        }
    }

    async fn poll_forever(&mut self) {
        let mut backoff = Duration::from_millis(100);
        let mut down_logged = false;
        loop {
            match UnixStream::connect(&self.socket).await {
                Ok(stream) => {
                    tracing::info!(socket = %self.socket.display(), "unixsock: connected to collectd");
                    metrics().unixsock_connected.set(1);
                    down_logged = false;
                    backoff = Duration::from_millis(100);
                    let (read, mut write) = stream.into_split();
                    let mut read = BufReader::new(read);
                    let mut ticker = tokio::time::interval(self.interval);
                    loop {
                        ticker.tick().await;
                        let polled =
                            tokio::time::timeout(POLL_TIMEOUT, self.poll(&mut read, &mut write))
                                .await
                                .unwrap_or_else(|_| {
                                    Err(anyhow::anyhow!(
                                        "no complete reply within {POLL_TIMEOUT:?}"
                                    ))
                                });
                        if let Err(e) = polled {
                            metrics().unixsock_connected.set(0);
                            tracing::warn!(
                                socket = %self.socket.display(),
                                "unixsock: connection to collectd lost: {e}; reconnecting"
                            );
                            break;
                        }
                    }
                }
                Err(e) => {
                    if !down_logged {
                        tracing::warn!(
                            socket = %self.socket.display(),
                            "unixsock: cannot connect to collectd ({e}); retrying with backoff"
                        );
                        down_logged = true;
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn poll(
        &mut self,
        read: &mut BufReader<OwnedReadHalf>,
        write: &mut OwnedWriteHalf,
    ) -> anyhow::Result<()> {
        write.write_all(b"LISTVAL\n").await?;
        let count = match parse_status(&status_line(read).await?) {
            Ok(n) if n > MAX_LISTVAL => {
                anyhow::bail!("LISTVAL announces {n} values; at most {MAX_LISTVAL} are read")
            }
            Ok(n) => n,
            Err(e) => anyhow::bail!("LISTVAL failed: {e}"),
        };
        let mut wanted = Vec::new();
        for _ in 0..count {
            let line = line(read).await?;
            match parse_listval_line(&line) {
                Some((time, id)) if self.patterns.matches(id) => {
                    if self.seen.get(id) != Some(&time) {
                        wanted.push((time, id.to_string()));
                    }
                }
                Some(_) => {}
                None => {
                    self.counters.refused("unreadable_line");
                    tracing::debug!(line, "unixsock: unreadable LISTVAL line skipped")
                }
            }
        }
        for (time, id) in wanted {
            write
                .write_all(format!("GETVAL {}\n", quote(&id)).as_bytes())
                .await?;
            let n = match parse_status(&status_line(read).await?) {
                Ok(n) => n,
                Err(e) => {
                    self.counters.refused("getval_refused");
                    tracing::debug!(identifier = id, "unixsock: GETVAL refused: {e}");
                    continue;
                }
            };
            if n > MAX_VALUES {
                anyhow::bail!("GETVAL {id} announces {n} values; at most {MAX_VALUES} are read");
            }
            let mut samples = Vec::with_capacity(n);
            for _ in 0..n {
                let l = line(read).await?;
                match parse_getval_line(&l) {
                    Some((_, v)) => samples.push(Sample::Gauge(v)),
                    None => {
                        self.counters.refused("unreadable_line");
                        tracing::debug!(line = l, "unixsock: unreadable GETVAL line skipped")
                    }
                }
            }
            let Some(identifier) = Identifier::parse(&id) else {
                tracing::debug!(identifier = id, "unixsock: identifier not understood");
                continue;
            };
            self.seen.insert(id, time);
            if samples.is_empty() {
                continue;
            }
            let list = ValueList {
                identifier,
                time,
                interval: self.interval.as_nanos() as u64,
                samples,
            };
            if self.sink.send(Ingested::Values(list)).await.is_err() {
                return Ok(());
            }
            self.counters.values.inc();
        }
        Ok(())
    }
}

async fn line(read: &mut BufReader<OwnedReadHalf>) -> anyhow::Result<String> {
    use tokio::io::AsyncReadExt;
    let mut line = String::new();
    // Never buffer more than one line's worth, however long the peer keeps writing.
    let n = read.take(MAX_LINE as u64 + 1).read_line(&mut line).await?;
    if n == 0 {
        anyhow::bail!("collectd closed the socket");
    }
    if line.len() > MAX_LINE {
        anyhow::bail!("reply line longer than {MAX_LINE} bytes");
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// The next status line. collectd sometimes follows an error with an empty line (seen after
/// `GETVAL` of an unknown type); empty lines before a status are skipped.
async fn status_line(read: &mut BufReader<OwnedReadHalf>) -> anyhow::Result<String> {
    loop {
        let l = line(read).await?;
        if !l.trim().is_empty() {
            return Ok(l);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_reply_in_the_fixture_transcripts() {
        let text = crate::test_fixtures::text("unixsock-transcript.txt");
        let lines: Vec<&str> = text.lines().collect();
        let (mut listed, mut values, mut errors) = (0, 0, 0);
        let mut i = 0;
        while i < lines.len() {
            let cmd = lines[i].strip_prefix("-> ").unwrap_or("");
            let upper = cmd.to_ascii_uppercase();
            if upper.starts_with("LISTVAL") || upper.starts_with("GETVAL") {
                let status = lines[i + 1].strip_prefix("<- ").unwrap();
                match parse_status(status) {
                    Ok(n) => {
                        for l in &lines[i + 2..i + 2 + n] {
                            let l = l.strip_prefix("<- ").unwrap();
                            if upper.starts_with("LISTVAL") {
                                assert!(parse_listval_line(l).is_some(), "{l}");
                                listed += 1;
                            } else {
                                assert!(parse_getval_line(l).is_some(), "{l}");
                                values += 1;
                            }
                        }
                    }
                    Err(e) => {
                        assert!(!e.is_empty());
                        errors += 1;
                    }
                }
            }
            i += 1;
        }
        assert_eq!(listed, 38);
        assert!(values >= 8, "{values}");
        assert_eq!(errors, 4);
    }

    #[test]
    fn line_forms() {
        assert_eq!(
            parse_listval_line("1795314056.000 h/sp ace/gauge-with space"),
            Some((1_795_314_056_000_000_000, "h/sp ace/gauge-with space"))
        );
        assert_eq!(parse_listval_line("garbage"), None);
        assert!(parse_getval_line("value=NaN").unwrap().1.is_nan());
        assert!(parse_getval_line("value=nan").unwrap().1.is_nan());
        assert_eq!(parse_getval_line("rx=1.351136e+03"), Some(("rx", 1351.136)));
        assert_eq!(parse_getval_line("rx"), None);
        assert_eq!(parse_status("1 Value found"), Ok(1));
        assert_eq!(
            parse_status("-1 No such value."),
            Err("No such value.".into())
        );
        assert!(parse_status("hello").is_err());
        assert_eq!(quote("h/p/t-a \"b\""), "\"h/p/t-a \\\"b\\\"\"");
    }
}
