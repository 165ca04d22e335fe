//! What a rule prints (`println!`, `eprintln!`, its panic message) goes to medic's log, one log
//! line per printed line, tagged with the rule's name: a rule has no terminal, and an author's
//! first debugging tool should work. Bounded: a rule that prints in a loop gets at most
//! [`LINES_PER_SECOND`] lines a second into the log, the rest is counted and said once a second,
//! and a line longer than [`MAX_LINE`] is cut.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::logging::Untrusted;

pub const LINES_PER_SECOND: u32 = 50;
pub const MAX_LINE: usize = 4096;

/// The guest's stdout or stderr, for one rule instance.
#[derive(Clone)]
pub struct RuleOutput {
    lines: Arc<Mutex<Lines>>,
}

struct Lines {
    rule: Arc<str>,
    stream: &'static str,
    partial: Vec<u8>,
    window: Instant,
    in_window: u32,
    dropped: u64,
}

impl RuleOutput {
    pub fn new(rule: Arc<str>, stream: &'static str) -> Self {
        Self {
            lines: Arc::new(Mutex::new(Lines {
                rule,
                stream,
                partial: Vec::new(),
                window: Instant::now(),
                in_window: 0,
                dropped: 0,
            })),
        }
    }

    fn write(&self, bytes: &[u8]) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines.take(bytes);
    }
}

impl Lines {
    fn take(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            self.append(&bytes[..end]);
            let line = std::mem::take(&mut self.partial);
            self.emit(&line);
            bytes = &bytes[end + 1..];
        }
        self.append(bytes);
        // A line that never ends is said once it is full, not kept growing.
        if self.partial.len() >= MAX_LINE {
            let line = std::mem::take(&mut self.partial);
            self.emit(&line);
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn emit(&mut self, line: &[u8]) {
        if self.window.elapsed() >= Duration::from_secs(1) {
            if self.dropped > 0 {
                tracing::warn!(
                    rule = &*self.rule,
                    stream = self.stream,
                    "rule output: {} lines were not logged (over {LINES_PER_SECOND} a second)",
                    self.dropped
                );
            }
            self.window = Instant::now();
            self.in_window = 0;
            self.dropped = 0;
        }
        if self.in_window >= LINES_PER_SECOND {
            if self.dropped == 0 {
                tracing::warn!(
                    rule = &*self.rule,
                    stream = self.stream,
                    "rule printed more than {LINES_PER_SECOND} lines a second; the rest of \
                     this second's are counted, not logged"
                );
            }
            self.dropped += 1;
            return;
        }
        self.in_window += 1;
        let text = String::from_utf8_lossy(line);
        tracing::info!(
            rule = &*self.rule,
            stream = self.stream,
            "rule printed: {}",
            Untrusted(&text)
        );
    }
}

impl IsTerminal for RuleOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for RuleOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for RuleOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        RuleOutput::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for RuleOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for RuleOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines() -> Lines {
        Lines {
            rule: Arc::from("r"),
            stream: "stdout",
            partial: Vec::new(),
            window: Instant::now(),
            in_window: 0,
            dropped: 0,
        }
    }

    #[test]
    fn lines_are_cut_at_newlines_and_at_the_cap_and_floods_are_counted() {
        let mut l = lines();
        l.take(b"one\ntw");
        assert_eq!(l.in_window, 1);
        l.take(b"o\n");
        assert_eq!((l.in_window, l.partial.len()), (2, 0));
        l.take(&vec![b'x'; MAX_LINE + 10]);
        assert_eq!(l.in_window, 3, "a full line is said without its newline");
        assert!(
            l.partial.is_empty(),
            "the rest of an overlong line is dropped"
        );
        for _ in 0..100 {
            l.take(b"spam\n");
        }
        assert_eq!(l.in_window, LINES_PER_SECOND);
        assert_eq!(l.dropped, 100 - u64::from(LINES_PER_SECOND - 3));
    }
}
