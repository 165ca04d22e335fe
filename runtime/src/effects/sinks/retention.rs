//! Batches an `http` sink could not deliver, kept on disk in order (`state_dir/sinks/<name>/`,
//! one file per batch: `<sequence>-<records>.batch`, 0600) until the destination takes them,
//! also across a restart. Bounded: past `max_bytes` the oldest batches go first, counted.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

pub struct Retention {
    dir: PathBuf,
    max_bytes: u64,
    /// Oldest first: sequence, records, bytes.
    batches: VecDeque<(u64, usize, u64)>,
    bytes: u64,
    next: u64,
}

impl Retention {
    /// Open the directory (made private if new) and take what an earlier run left.
    pub fn open(dir: PathBuf, max_bytes: u64) -> std::io::Result<Self> {
        crate::os::own_private_dir(&dir)?;
        let mut batches: Vec<(u64, usize, u64)> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let (seq, records) = name.strip_suffix(".batch")?.split_once('-')?;
                let bytes = e.metadata().ok()?.len();
                Some((seq.parse().ok()?, records.parse().ok()?, bytes))
            })
            .collect();
        batches.sort_unstable();
        let bytes = batches.iter().map(|b| b.2).sum();
        let next = batches.last().map_or(0, |b| b.0 + 1);
        Ok(Self {
            dir,
            max_bytes,
            batches: batches.into(),
            bytes,
            next,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn path(&self, seq: u64, records: usize) -> PathBuf {
        self.dir.join(format!("{seq:020}-{records}.batch"))
    }

    /// Keep a batch at the end. Returns how many records older batches lost to the bound.
    pub fn push(&mut self, body: &[u8], records: usize) -> std::io::Result<usize> {
        let seq = self.next;
        let path = self.path(seq, records);
        let tmp = self.dir.join(format!(".{seq}.tmp"));
        crate::os::write_private_file(&tmp, body)?;
        std::fs::rename(&tmp, &path)?;
        self.next += 1;
        self.batches.push_back((seq, records, body.len() as u64));
        self.bytes += body.len() as u64;
        let mut lost = 0;
        while self.bytes > self.max_bytes && self.batches.len() > 1 {
            lost += self.pop_oldest();
        }
        Ok(lost)
    }

    /// The oldest batch: its body and record count.
    pub fn oldest(&self) -> Option<std::io::Result<(Vec<u8>, usize)>> {
        let &(seq, records, bytes) = self.batches.front()?;
        Some(read_batch(&self.path(seq, records), bytes).map(|body| (body, records)))
    }

    /// Forget the oldest batch (delivered, or lost); returns its record count.
    pub fn pop_oldest(&mut self) -> usize {
        let Some((seq, records, bytes)) = self.batches.pop_front() else {
            return 0;
        };
        let _ = std::fs::remove_file(self.path(seq, records));
        self.bytes -= bytes;
        records
    }
}

/// Where sink `name` keeps its batches.
pub fn dir(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("sinks").join(name)
}

/// A batch file: not through a link, and never more than it was when it was written.
fn read_batch(path: &Path, bytes: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let mut body = Vec::with_capacity(bytes as usize);
    file.take(bytes).read_to_end(&mut body)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_come_back_in_order_after_a_restart_and_the_oldest_go_past_the_bound() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sinks/vm");
        let mut r = Retention::open(dir.clone(), 10).unwrap();
        assert!(r.is_empty());
        assert_eq!(r.push(b"aaaa", 4).unwrap(), 0);
        assert_eq!(r.push(b"bbbb", 4).unwrap(), 0);
        assert_eq!(
            r.push(b"cccc", 2).unwrap(),
            4,
            "12 bytes > 10: the oldest went"
        );
        drop(r);
        let mut r = Retention::open(dir, 10).unwrap();
        assert_eq!(r.bytes(), 8);
        assert_eq!(r.oldest().unwrap().unwrap(), (b"bbbb".to_vec(), 4));
        assert_eq!(r.pop_oldest(), 4);
        assert_eq!(r.oldest().unwrap().unwrap(), (b"cccc".to_vec(), 2));
        assert_eq!(r.push(b"dd", 1).unwrap(), 0);
        r.pop_oldest();
        assert_eq!(r.oldest().unwrap().unwrap(), (b"dd".to_vec(), 1));
    }
}
