//! The appender: records chained and made durable in groups.
//!
//! Concurrent appends share a sync (group commit, as the span WAL does): the first caller that
//! finds no write under way leads a group. It takes the entries queued so far (its own among
//! them, at most [`MAX_GROUP`]), chains them under the log's file lock, writes them with one
//! `write` and one `fdatasync`, signs one head for the last, and hands every caller its record.
//! Callers that arrive meanwhile queue for the next group, which one of them leads. A caller
//! alone is a group of one, so a single decision still costs one sync. Each caller returns only
//! once its own record is on disk; a group that fails fails every caller in it, and none of its
//! records is kept.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use chrono::{SecondsFormat, Utc};
use serde_json::Value;

use crate::{Entry, Error, GENESIS, LOG_FILE, MAX_RECORD_BYTES, Record, Result, head};

/// The most records one group writes (a few MiB at typical sizes): the queue behind it forms
/// the next group.
pub const MAX_GROUP: usize = 1024;

#[derive(Debug)]
struct Tail {
    /// File length after the last record this process saw.
    len: u64,
    seq: u64,
    hash: String,
    policy_hash: Option<String>,
}

/// Appends waiting for a group, and the outcomes of written groups not yet collected.
#[derive(Default)]
struct Queue {
    next: u64,
    pending: Vec<(u64, Entry)>,
    writing: bool,
    done: HashMap<u64, Result<Record>>,
}

/// What an audit log does to every record's `context` before it is chained, given the record's
/// action (the server redacts personal data and secrets with it, and stores the context fields
/// the policy schema marks `@sensitive` for that action as pseudonyms), so the chain never holds
/// what it takes out. Error messages go through it with an empty action.
pub type Scrub = std::sync::Arc<dyn Fn(&str, &mut Value) + Send + Sync>;

/// The audit log of one data directory.
pub struct AuditLog {
    dir: PathBuf,
    tail: Mutex<Tail>,
    scrub: Option<Scrub>,
    /// The error of the last append, when it failed (readiness reports it).
    failing: Mutex<Option<String>>,
    queue: Mutex<Queue>,
    /// Signalled when a group is written.
    written: Condvar,
    /// Groups written (each one sync), for the records-per-sync figure.
    groups: AtomicU64,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.dir)
            .field("scrub", &self.scrub.is_some())
            .finish()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |cause| Error::Io {
        path: path.to_path_buf(),
        cause,
    }
}

fn poisoned() -> Error {
    Error::Serialize("audit log lock poisoned".into())
}

/// The same error for another caller of a failed group (`std::io::Error` is not `Clone`).
fn duplicate(e: &Error) -> Error {
    match e {
        Error::Io { path, cause } => Error::Io {
            path: path.clone(),
            cause: std::io::Error::new(cause.kind(), cause.to_string()),
        },
        Error::Corrupt { path, message } => Error::Corrupt {
            path: path.clone(),
            message: message.clone(),
        },
        Error::Serialize(m) => Error::Serialize(m.clone()),
        Error::Key { path, message } => Error::Key {
            path: path.clone(),
            message: message.clone(),
        },
        Error::Truncated(m) => Error::Truncated(m.clone()),
    }
}

/// The last complete line of `file` (one ending in `\n`) and the file length up to and including
/// it; `(None, 0)` when there is no complete line.
fn last_line(file: &mut File, path: &Path) -> Result<(Option<String>, u64)> {
    const CHUNK: u64 = 64 * 1024;
    let len = file.metadata().map_err(io(path))?.len();
    // `buf` holds the bytes `start..len` of the file.
    let mut start = len;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        if let Some(end) = buf.iter().rposition(|&b| b == b'\n') {
            let before = buf.get(..end).unwrap_or_default();
            let complete = start + end as u64 + 1;
            if let Some(nl) = before.iter().rposition(|&b| b == b'\n') {
                let line = before.get(nl + 1..).unwrap_or_default();
                return Ok((Some(String::from_utf8_lossy(line).into_owned()), complete));
            }
            if start == 0 {
                return Ok((Some(String::from_utf8_lossy(before).into_owned()), complete));
            }
        } else if start == 0 {
            return Ok((None, 0));
        }
        let from = start.saturating_sub(CHUNK);
        let mut part = vec![0u8; (start - from) as usize];
        file.seek(SeekFrom::Start(from)).map_err(io(path))?;
        file.read_exact(&mut part).map_err(io(path))?;
        part.extend_from_slice(&buf);
        buf = part;
        start = from;
    }
}

impl AuditLog {
    /// The same log, passing every record's `context` through `scrub` before it is chained.
    pub fn scrubbing(mut self, scrub: Scrub) -> Self {
        self.scrub = Some(scrub);
        self
    }

    /// Opens (creating when needed) the audit log in `dir`. A partial last line left by a crash
    /// is removed: it was never acknowledged.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let log = Self {
            scrub: None,
            failing: Mutex::new(None),
            queue: Mutex::new(Queue::default()),
            written: Condvar::new(),
            groups: AtomicU64::new(0),
            dir: dir.to_path_buf(),
            tail: Mutex::new(Tail {
                len: u64::MAX,
                seq: 0,
                hash: GENESIS.into(),
                policy_hash: None,
            }),
        };
        let path = log.log_path();
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(io(&path))?;
        if created {
            // A new log is durable only once its directory entry is.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
        }
        file.lock().map_err(io(&path))?;
        let result = log.refresh(&mut file, true);
        let _ = file.unlock();
        result?;
        Ok(log)
    }

    /// The log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// The audit directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Re-reads the tail when the file changed behind this process; truncates a partial line.
    fn refresh(&self, file: &mut File, repair: bool) -> Result<()> {
        let path = self.log_path();
        let len = file.metadata().map_err(io(&path))?.len();
        let mut tail = self.tail.lock().map_err(|_| poisoned())?;
        if tail.len == len {
            return Ok(());
        }
        let (line, complete) = last_line(file, &path)?;
        if complete < len && repair {
            tracing::warn!(
                path = %path.display(),
                bytes = len - complete,
                "removing a partial audit record left by a crash (never acknowledged)"
            );
            file.set_len(complete).map_err(io(&path))?;
            file.sync_data().map_err(io(&path))?;
        }
        match line {
            None => {
                tail.seq = 0;
                tail.hash = GENESIS.into();
                tail.policy_hash = None;
            }
            Some(line) => {
                let r: Record = serde_json::from_str(&line).map_err(|e| Error::Corrupt {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                tail.seq = r.seq;
                tail.hash = r.hash;
                tail.policy_hash = Some(r.policy_hash);
            }
        }
        tail.len = complete;
        Ok(())
    }

    /// The policy set hash of the last record, if any.
    pub fn last_policy_hash(&self) -> Option<String> {
        self.tail.lock().ok().and_then(|t| t.policy_hash.clone())
    }

    /// Appends `entry` durably and returns the record as written. Returns only after the record
    /// is on disk; concurrent calls share the sync (see the module's documentation).
    pub fn append(&self, mut entry: Entry) -> Result<Record> {
        if let Some(scrub) = &self.scrub {
            scrub(&entry.action, &mut entry.context);
            // Error messages may quote the request.
            let mut errors = Value::from(std::mem::take(&mut entry.errors));
            scrub("", &mut errors);
            entry.errors = serde_json::from_value(errors).unwrap_or_default();
        }
        let mut queue = self.queue.lock().map_err(|_| poisoned())?;
        let id = queue.next;
        queue.next += 1;
        queue.pending.push((id, entry));
        loop {
            if let Some(result) = queue.done.remove(&id) {
                return result;
            }
            if queue.writing {
                queue = self.written.wait(queue).map_err(|_| poisoned())?;
                continue;
            }
            queue = self.lead(queue)?;
        }
    }

    /// Writes one group as its leader: the queue is unlocked while the group is written.
    fn lead<'a>(&'a self, mut queue: MutexGuard<'a, Queue>) -> Result<MutexGuard<'a, Queue>> {
        queue.writing = true;
        let take = queue.pending.len().min(MAX_GROUP);
        let group: Vec<(u64, Entry)> = queue.pending.drain(..take).collect();
        drop(queue);
        let (ids, entries): (Vec<u64>, Vec<Entry>) = group.into_iter().unzip();
        let outcome = self.write_group(entries);
        self.groups.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.failing.lock() {
            *f = outcome.as_ref().err().map(|e| e.to_string());
        }
        let mut queue = self.queue.lock().map_err(|_| poisoned())?;
        match outcome {
            Ok(records) => queue.done.extend(ids.into_iter().zip(records)),
            Err(e) => {
                let failed: Vec<_> = ids.into_iter().map(|id| (id, Err(duplicate(&e)))).collect();
                queue.done.extend(failed);
            }
        }
        queue.writing = false;
        self.written.notify_all();
        Ok(queue)
    }

    /// How many groups this process has written (each one `fdatasync`): with the records
    /// appended, the records per sync.
    pub fn groups_written(&self) -> u64 {
        self.groups.load(Ordering::Relaxed)
    }

    /// The error of the last append, if it failed: the log cannot take records right now.
    pub fn failing(&self) -> Option<String> {
        self.failing.lock().ok().and_then(|f| f.clone())
    }

    /// Chains and writes `entries` under the file lock: one write, one sync, one head. A record
    /// over [`MAX_RECORD_BYTES`] is refused alone (it takes no place in the chain).
    fn write_group(&self, entries: Vec<Entry>) -> Result<Vec<Result<Record>>> {
        let path = self.log_path();
        let mut file = OpenOptions::new()
            .append(true)
            .read(true)
            .open(&path)
            .map_err(io(&path))?;
        file.lock().map_err(io(&path))?;
        let result = self.write_locked(&mut file, entries);
        let _ = file.unlock();
        result
    }

    fn write_locked(&self, file: &mut File, entries: Vec<Entry>) -> Result<Vec<Result<Record>>> {
        let path = self.log_path();
        self.refresh(file, true)?;
        let mut tail = self.tail.lock().map_err(|_| poisoned())?;
        head::check_before_append(&self.dir, tail.seq, &tail.hash)?;
        let (mut seq, mut prev) = (tail.seq, tail.hash.clone());
        let mut bytes = Vec::new();
        let mut records = Vec::with_capacity(entries.len());
        for entry in entries {
            let mut record = Record {
                seq: seq + 1,
                time: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
                kind: entry.kind,
                principal: entry.principal,
                action: entry.action,
                resource: entry.resource,
                decision: entry.decision,
                policies: entry.policies,
                advice: entry.advice,
                errors: entry.errors,
                context: entry.context,
                policy_hash: entry.policy_hash,
                prev_hash: prev.clone(),
                hash: String::new(),
            };
            let line = record.seal()?;
            if line.len() > MAX_RECORD_BYTES {
                records.push(Err(Error::Serialize(format!(
                    "a record of {} bytes is over the limit of {MAX_RECORD_BYTES}; its context is \
                     too large to keep",
                    line.len()
                ))));
                continue;
            }
            bytes.extend_from_slice(&line);
            bytes.push(b'\n');
            seq = record.seq;
            prev = record.hash.clone();
            records.push(Ok(record));
        }
        if bytes.is_empty() {
            return Ok(records);
        }
        if let Err(cause) = file.write_all(&bytes).and_then(|_| file.sync_data()) {
            // Leave no partial record behind when possible.
            let _ = file.set_len(tail.len);
            return Err(Error::Io { path, cause });
        }
        tail.len += bytes.len() as u64;
        tail.seq = seq;
        tail.hash = prev.clone();
        if let Some(Ok(last)) = records.iter().rev().find(|r| r.is_ok()) {
            tail.policy_hash = Some(last.policy_hash.clone());
        }
        drop(tail);
        head::write(&self.dir, seq, &prev)?;
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrubbed_log_chains_the_scrubbed_context_and_verifies() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let scrub: Scrub = std::sync::Arc::new(|_: &str, v: &mut Value| {
            if let Some(m) = v.as_object_mut() {
                m.insert("email".into(), Value::String("[EMAIL]".into()));
            }
        });
        let log = AuditLog::open(dir.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .scrubbing(scrub);
        let r = log
            .append(Entry {
                kind: "test".into(),
                context: serde_json::json!({"email": "ana@example.com", "n": 1}),
                ..Entry::default()
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.context["email"], "[EMAIL]");
        let text = std::fs::read_to_string(log.log_path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(!text.contains("ana@example.com") && text.contains("[EMAIL]"));
        let report = crate::verify(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(report.ok(), "{report:?}");
    }

    #[test]
    fn last_line_finds_the_last_complete_record() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = dir.path().join("f");
        std::fs::write(&p, b"one\ntwo\nthr").unwrap_or_else(|e| panic!("{e}"));
        let mut f = File::open(&p).unwrap_or_else(|e| panic!("{e}"));
        let (line, len) = last_line(&mut f, &p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(line.as_deref(), Some("two"));
        assert_eq!(len, 8);
        std::fs::write(&p, b"only\n").unwrap_or_else(|e| panic!("{e}"));
        let mut f = File::open(&p).unwrap_or_else(|e| panic!("{e}"));
        let (line, len) = last_line(&mut f, &p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((line.as_deref(), len), (Some("only"), 5));
        std::fs::write(&p, b"partial").unwrap_or_else(|e| panic!("{e}"));
        let mut f = File::open(&p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            last_line(&mut f, &p).unwrap_or_else(|e| panic!("{e}")),
            (None, 0)
        );
    }

    #[test]
    fn appends_waiting_for_a_write_are_written_as_one_group() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let log = std::sync::Arc::new(AuditLog::open(dir.path()).unwrap_or_else(|e| panic!("{e}")));
        // Hold the log's file lock as another writer would: the first append leads a group and
        // waits for the lock, the others queue behind it.
        let blocker = File::open(log.log_path()).unwrap_or_else(|e| panic!("{e}"));
        blocker.lock().unwrap_or_else(|e| panic!("{e}"));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let log = std::sync::Arc::clone(&log);
                std::thread::spawn(move || {
                    log.append(Entry {
                        kind: "test".into(),
                        context: serde_json::json!({ "i": i }),
                        ..Entry::default()
                    })
                })
            })
            .collect();
        let queued = || log.queue.lock().map(|q| (q.writing, q.pending.len())).ok();
        let started = std::time::Instant::now();
        while queued() != Some((true, 7)) {
            assert!(started.elapsed().as_secs() < 30, "{:?}", queued());
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        blocker.unlock().unwrap_or_else(|e| panic!("{e}"));
        let mut seqs: Vec<u64> = threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| panic!("append thread"))
                    .unwrap_or_else(|e| panic!("{e}"))
                    .seq
            })
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=8).collect::<Vec<u64>>());
        // The leader's own record, then the seven that queued behind it: two syncs for eight.
        assert_eq!(log.groups_written(), 2);
        let report = crate::verify(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(report.ok(), "{report:?}");
        assert_eq!(report.records, 8, "{report:?}");
    }

    #[test]
    fn a_record_over_the_limit_is_refused_alone_in_its_group() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let log = AuditLog::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let big = Entry {
            kind: "test".into(),
            context: Value::String("x".repeat(MAX_RECORD_BYTES)),
            ..Entry::default()
        };
        let small = Entry {
            kind: "test".into(),
            ..Entry::default()
        };
        let records = log
            .write_group(vec![small.clone(), big, small])
            .unwrap_or_else(|e| panic!("{e}"));
        let seqs: Vec<Option<u64>> = records
            .iter()
            .map(|r| r.as_ref().ok().map(|r| r.seq))
            .collect();
        assert_eq!(seqs, vec![Some(1), None, Some(2)]);
        let err = records[1]
            .as_ref()
            .err()
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(err.contains("over the limit"), "{err}");
        let report = crate::verify(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(report.ok() && report.records == 2, "{report:?}");
    }
}
