//! Group-committed appends to one local file: the local connectors' effect files.
//!
//! Each file has a writer thread. Callers submit a line and wait for it to be durable; the
//! writer takes every line submitted meanwhile (at most [`MAX_GROUP`]), writes them with one
//! `write` and one `fdatasync`, and answers them all, so many runs in flight share a sync as the
//! span WAL's and the audit log's appends do. Lines reach the file in the order they were
//! submitted. A caller alone still pays one sync.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use tokio::sync::oneshot;

/// The most lines one group writes.
pub const MAX_GROUP: usize = 1024;

type Job = (Vec<u8>, oneshot::Sender<Result<(), String>>);

/// The writer of one file.
#[derive(Debug)]
pub(crate) struct Appender {
    tx: mpsc::Sender<Job>,
}

impl Appender {
    /// Starts the writer of `path` (created, with its directory, at its first write).
    pub(crate) fn start(path: PathBuf) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        std::thread::Builder::new()
            .name(format!("custos-append-{name}"))
            .spawn(move || write_groups(&path, &rx))?;
        Ok(Self { tx })
    }

    /// Queues `bytes` (whole lines) and returns what answers once they are durable, or why they
    /// are not. Empty `bytes` is a barrier: answered once everything queued before is written.
    pub(crate) fn submit(&self, bytes: Vec<u8>) -> oneshot::Receiver<Result<(), String>> {
        let (done, wait) = oneshot::channel();
        if let Err(mpsc::SendError((_, done))) = self.tx.send((bytes, done)) {
            let _ = done.send(Err("the file's writer has stopped".into()));
        }
        wait
    }
}

/// The writer thread: until every sender is gone, one group per wake-up.
fn write_groups(path: &Path, rx: &mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let bytes: Vec<u8> = group.iter().flat_map(|(b, _)| b.iter().copied()).collect();
        let result = if bytes.is_empty() {
            Ok(())
        } else {
            append(path, &bytes).map_err(|e| e.to_string())
        };
        for (_, done) in group {
            let _ = done.send(result.clone());
        }
    }
}

/// Appends `bytes` to `path` and syncs it (and, for a new file, its directory entry).
pub(crate) fn append(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let created = !path.exists();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    // A new file is durable only once its directory entry is.
    if created && let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_lines_all_land_whole_and_in_submission_order() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("sub").join("effects.jsonl");
        let appender = Appender::start(path.clone()).unwrap_or_else(|e| panic!("{e}"));
        let waits: Vec<_> = (0..500)
            .map(|i| appender.submit(format!("{{\"seq\":{i}}}\n").into_bytes()))
            .collect();
        for w in waits {
            w.await
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        appender
            .submit(Vec::new())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        let want: String = (0..500).map(|i| format!("{{\"seq\":{i}}}\n")).collect();
        assert_eq!(text, want);
    }

    #[tokio::test]
    async fn a_write_that_fails_answers_every_caller_with_the_error() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        // A directory where the file should be: every write fails.
        let path = dir.path().join("effects.jsonl");
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("{e}"));
        let appender = Appender::start(path).unwrap_or_else(|e| panic!("{e}"));
        let answer = appender
            .submit(b"{}\n".to_vec())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(answer.is_err(), "{answer:?}");
    }
}
