//! The `file` sink: each record appended as a line. The file is created 0600 (records are what
//! rules saw) and reopened by name on SIGHUP, so logrotate can move it away.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::fs::File;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, mpsc, watch};

/// Records written per write call at most.
const CHUNK: usize = 1024;

pub async fn deliver(
    name: String,
    path: PathBuf,
    mut records: mpsc::Receiver<Vec<u8>>,
    reopen: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut file = open(&name, &path).await;
    let mut chunk = Vec::with_capacity(CHUNK);
    loop {
        tokio::select! {
            n = records.recv_many(&mut chunk, CHUNK) => {
                if n == 0 {
                    return;
                }
                file = write(&name, &path, file, &mut chunk).await;
            }
            _ = reopen.notified() => {
                tracing::info!(sink = name, file = %path.display(), "sink file reopened");
                file = open(&name, &path).await;
            }
            // The guard `wait_for` returns is not `Send`: dropped inside.
            _ = async { drop(stop.wait_for(|stop| *stop).await) } => {
                // What is queued already goes out before medic stops.
                while !records.is_empty() {
                    records.recv_many(&mut chunk, CHUNK).await;
                    file = write(&name, &path, file, &mut chunk).await;
                }
                if let Some(f) = &mut file {
                    let _ = f.flush().await;
                }
                return;
            }
        }
    }
}

async fn open(name: &str, path: &PathBuf) -> Option<File> {
    if let Err(e) = crate::os::create_private_file(path) {
        tracing::error!(sink = name, file = %path.display(), "cannot create the sink file: {e}");
        return None;
    }
    match tokio::fs::OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .await
    {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::error!(sink = name, file = %path.display(), "cannot open the sink file: {e}");
            None
        }
    }
}

/// Write `chunk` (one record a line) and empty it; a failed write drops the chunk (counted) and
/// the file is opened afresh for the next one.
async fn write(
    name: &str,
    path: &PathBuf,
    file: Option<File>,
    chunk: &mut Vec<Vec<u8>>,
) -> Option<File> {
    let mut file = match file {
        Some(f) => f,
        None => match open(name, path).await {
            Some(f) => f,
            None => {
                super::count_n(name, "dropped", chunk.len());
                chunk.clear();
                return None;
            }
        },
    };
    let mut text = Vec::with_capacity(chunk.iter().map(|r| r.len() + 1).sum());
    for record in chunk.iter() {
        text.extend_from_slice(record);
        text.push(b'\n');
    }
    let written = file.write_all(&text).await.and(file.flush().await);
    let n = chunk.len();
    chunk.clear();
    match written {
        Ok(()) => {
            super::count_n(name, "written", n);
            Some(file)
        }
        Err(e) => {
            tracing::error!(sink = name, file = %path.display(), records = n, "sink write failed: {e}; records dropped");
            super::count_n(name, "dropped", n);
            None
        }
    }
}
