//! The tamper-evident audit trail: every governance decision, appended durably and hash-chained.
//!
//! The record format and the appender are here; the verifier is in `verify`. Both follow the
//! chain's rules through one definition of what is hashed ([`Record::digest`]).
//!
//! This crate owns the audit log of a data directory (`DATA/audit/`): appending records before a
//! decision is returned, reading them back (for the `audit` SQL table and reports), and verifying
//! the chain (`custos audit verify`).
//!
//! # On-disk format
//!
//! - `audit.jsonl`: one record per line, UTF-8 JSON, in append order. Fields, in this order:
//!   `seq` (1, 2, 3, ... without gaps), `time` (RFC 3339, UTC, microseconds), `kind` (`gate`,
//!   `authorize`, `review`, `policy_change`), `principal`, `action`, `resource`, `decision`,
//!   `policies` (determining policy ids), `advice`, `errors`, `context` (what was evaluated),
//!   `policy_hash` (the deciding policy set), `prev_hash`, `hash`.
//! - `hash` is the SHA-256 (hex) of the record's JSON serialization without the `hash` field;
//!   `prev_hash` is the previous record's `hash` (64 zeros for the first record). Each record thus
//!   commits to the whole history before it.
//! - `audit.head`: `{"seq": N, "hash": "...", "public_key": "...", "signature": "..."}` of the
//!   last appended record, signed with the directory's ed25519 key (`audit.key`, public key in
//!   `audit.pub`; see `head`) and replaced atomically after each append. It lets verification
//!   notice records cut from the end, which the chain alone cannot, and an append refuses a log
//!   that is behind it. It may lag the log by the last record after a crash; it must never be
//!   ahead of it.
//!
//! # Invariants
//!
//! - A record is acknowledged (its decision returned) only after its line is written and
//!   `fdatasync`ed. A crash mid-append leaves at most one partial last line, which was never
//!   acknowledged; the next writer truncates it and verification reports it without failing.
//! - Writers serialize on an exclusive lock of `audit.jsonl` (in-process mutex plus an OS file
//!   lock), so a server and a CLI gate run on the same data directory extend one chain.
//! - Verification recomputes every hash and follows `seq` and `prev_hash`; it names the first
//!   record that was modified, deleted, inserted or reordered. Someone able to rewrite the whole
//!   file and the head can forge a consistent chain: publish the head hash elsewhere (the audit
//!   report's manifest carries it) to anchor it, as CloudTrail digests do.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

mod head;
mod verify;
pub use head::{KEY_FILE, PUBLIC_KEY_FILE, public_key};
pub use verify::{Finding, Tamper, Verification, verify, verify_anchored};

/// The largest record the log takes (its context is the caller's; the API bounds it sooner).
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// Errors of the audit crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("audit log `{path}`: {cause}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// The last record cannot be read, so the chain cannot be extended.
    #[error(
        "audit log `{path}`: the last record is unreadable ({message}); run `custos audit verify`"
    )]
    Corrupt {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A record could not be serialized.
    #[error("cannot serialize an audit record: {0}")]
    Serialize(String),
    /// The head's signing key cannot be read or made.
    #[error("audit signing key `{path}`: {message}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The log is behind its signed head (records were cut) or the head was replaced: appending
    /// would hide it, so nothing is recorded and nothing is allowed.
    #[error(
        "the audit log cannot be extended: {0}; run `custos audit verify`, and restore the log from a backup (or move the audit directory away, keeping it as evidence, to start a new chain)"
    )]
    Truncated(String),
}

/// Result type of the audit crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Log file name inside the audit directory.
pub const LOG_FILE: &str = "audit.jsonl";
/// Head file name inside the audit directory.
pub const HEAD_FILE: &str = "audit.head";

/// What a caller records: the decision and what it was about.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry {
    /// `gate`, `authorize`, `review` or `policy_change`.
    pub kind: String,
    /// Who asked (a Cedar entity reference).
    pub principal: String,
    /// The action.
    pub action: String,
    /// The resource.
    pub resource: String,
    /// `allow`, `deny`, or what was recorded.
    pub decision: String,
    /// Determining policy ids.
    pub policies: Vec<String>,
    /// Advice given with the decision.
    pub advice: Vec<String>,
    /// Errors met while deciding.
    pub errors: Vec<String>,
    /// The context that was evaluated.
    pub context: Value,
    /// Hash of the policy set that decided.
    pub policy_hash: String,
}

/// One line of the audit log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// When it was recorded (RFC 3339, UTC).
    pub time: String,
    /// `gate`, `authorize`, `review` or `policy_change`.
    pub kind: String,
    /// Who asked.
    pub principal: String,
    /// The action.
    pub action: String,
    /// The resource.
    pub resource: String,
    /// The decision.
    pub decision: String,
    /// Determining policy ids.
    pub policies: Vec<String>,
    /// Advice given.
    pub advice: Vec<String>,
    /// Errors met.
    pub errors: Vec<String>,
    /// The evaluated context.
    pub context: Value,
    /// The deciding policy set's hash.
    pub policy_hash: String,
    /// The previous record's hash.
    pub prev_hash: String,
    /// This record's hash.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
}

impl Record {
    /// The SHA-256 this record should carry: over its serialization without `hash`.
    pub fn digest(&self) -> Result<String> {
        let mut body = self.clone();
        body.hash = String::new();
        let bytes = serde_json::to_vec(&body).map_err(|e| Error::Serialize(e.to_string()))?;
        Ok(hex::encode(Sha256::digest(&bytes)))
    }
}

#[derive(Debug)]
struct Tail {
    /// File length after the last record this process saw.
    len: u64,
    seq: u64,
    hash: String,
    policy_hash: Option<String>,
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
        let mut tail = self
            .tail
            .lock()
            .map_err(|_| Error::Serialize("audit log lock poisoned".into()))?;
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
    /// is on disk.
    pub fn append(&self, mut entry: Entry) -> Result<Record> {
        if let Some(scrub) = &self.scrub {
            scrub(&entry.action, &mut entry.context);
            // Error messages may quote the request.
            let mut errors = Value::from(std::mem::take(&mut entry.errors));
            scrub("", &mut errors);
            entry.errors = serde_json::from_value(errors).unwrap_or_default();
        }
        let path = self.log_path();
        let result = OpenOptions::new()
            .append(true)
            .read(true)
            .open(&path)
            .map_err(io(&path))
            .and_then(|mut file| {
                file.lock().map_err(io(&path))?;
                let result = self.append_locked(&mut file, entry);
                let _ = file.unlock();
                result
            });
        if let Ok(mut f) = self.failing.lock() {
            *f = result.as_ref().err().map(|e| e.to_string());
        }
        result
    }

    /// The error of the last append, if it failed: the log cannot take records right now.
    pub fn failing(&self) -> Option<String> {
        self.failing.lock().ok().and_then(|f| f.clone())
    }

    fn append_locked(&self, file: &mut File, entry: Entry) -> Result<Record> {
        let path = self.log_path();
        self.refresh(file, true)?;
        let mut tail = self
            .tail
            .lock()
            .map_err(|_| Error::Serialize("audit log lock poisoned".into()))?;
        head::check_before_append(&self.dir, tail.seq, &tail.hash)?;
        let mut record = Record {
            seq: tail.seq + 1,
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
            prev_hash: tail.hash.clone(),
            hash: String::new(),
        };
        record.hash = record.digest()?;
        let mut line = serde_json::to_vec(&record).map_err(|e| Error::Serialize(e.to_string()))?;
        if line.len() > MAX_RECORD_BYTES {
            return Err(Error::Serialize(format!(
                "a record of {} bytes is over the limit of {MAX_RECORD_BYTES}; its context is \
                 too large to keep",
                line.len()
            )));
        }
        line.push(b'\n');
        if let Err(cause) = file.write_all(&line).and_then(|_| file.sync_data()) {
            // Leave no partial record behind when possible.
            let _ = file.set_len(tail.len);
            return Err(Error::Io { path, cause });
        }
        tail.len += line.len() as u64;
        tail.seq = record.seq;
        tail.hash = record.hash.clone();
        tail.policy_hash = Some(record.policy_hash.clone());
        drop(tail);
        head::write(&self.dir, record.seq, &record.hash)?;
        Ok(record)
    }
}

/// Reads every complete record of the audit log in `dir` (an absent log has none). Lines that do
/// not parse are errors: run [`verify`] for a full diagnosis.
pub fn read_all(dir: &Path) -> Result<Vec<Record>> {
    let path = dir.join(LOG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(cause) => return Err(Error::Io { path, cause }),
    };
    let complete = text.rfind('\n').map_or("", |i| &text[..i]);
    complete
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| Error::Corrupt {
                path: path.clone(),
                message: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}

/// The record with sequence number `seq` in the audit log in `dir`, if there is one. In an
/// intact log record `seq` is line `seq`, so that line is tried first; otherwise every line is
/// read. Lines that do not parse are skipped here: run [`verify`] for a diagnosis.
pub fn read_one(dir: &Path, seq: u64) -> Result<Option<Record>> {
    let path = dir.join(LOG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(cause) => return Err(Error::Io { path, cause }),
    };
    let complete = text.rfind('\n').map_or("", |i| &text[..i]);
    let parse = |l: &str| {
        serde_json::from_str::<Record>(l)
            .ok()
            .filter(|r| r.seq == seq)
    };
    let guess = usize::try_from(seq.saturating_sub(1)).ok();
    if let Some(r) = guess.and_then(|n| complete.lines().nth(n)).and_then(parse) {
        return Ok(Some(r));
    }
    Ok(complete.lines().find_map(parse))
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
        let report = verify::verify(dir.path()).unwrap_or_else(|e| panic!("{e}"));
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
}
