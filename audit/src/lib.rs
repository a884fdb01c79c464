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
//!   `fdatasync`ed. Concurrent appends share the write and the sync (group commit, see `log`). A crash mid-append leaves at most one partial last line, which was never
//!   acknowledged; the next writer truncates it and verification reports it without failing.
//! - Writers serialize on an exclusive lock of `audit.jsonl` (in-process mutex plus an OS file
//!   lock), so a server and a CLI gate run on the same data directory extend one chain.
//! - Verification recomputes every hash and follows `seq` and `prev_hash`; it names the first
//!   record that was modified, deleted, inserted or reordered. Someone able to rewrite the whole
//!   file and the head can forge a consistent chain: publish the head hash elsewhere (the audit
//!   report's manifest carries it) to anchor it, as CloudTrail digests do.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

mod head;
mod log;
mod verify;
pub use head::{KEY_FILE, PUBLIC_KEY_FILE, public_key};
pub use log::{AuditLog, Scrub};
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

    /// Sets `hash` (over the serialization without it, as [`Record::digest`]) and returns the
    /// record's line without its newline. Serializes once: `hash` is the format's last field, so
    /// the line is the hashed body closed with it.
    pub(crate) fn seal(&mut self) -> Result<Vec<u8>> {
        self.hash = String::new();
        let mut line = serde_json::to_vec(&*self).map_err(|e| Error::Serialize(e.to_string()))?;
        self.hash = hex::encode(Sha256::digest(&line));
        if line.pop() != Some(b'}') {
            return Err(Error::Serialize("a record is not a JSON object".into()));
        }
        line.extend_from_slice(b",\"hash\":\"");
        line.extend_from_slice(self.hash.as_bytes());
        line.extend_from_slice(b"\"}");
        Ok(line)
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
    fn a_sealed_line_is_the_records_serialization_with_its_digest() {
        let mut r = Record {
            seq: 7,
            time: "2026-12-07T10:00:00.000001Z".into(),
            kind: "authorize".into(),
            principal: "User::\"ana\"".into(),
            action: "Action::\"execute\"".into(),
            resource: "Step::\"a \\ b\"".into(),
            decision: "allow".into(),
            policies: vec!["p1".into()],
            advice: vec!["ünïcode".into()],
            errors: vec![],
            context: serde_json::json!({"amount": 1.5, "nested": {"k": [1, null]}}),
            policy_hash: "ph".into(),
            prev_hash: GENESIS.into(),
            hash: "stale".into(),
        };
        let line = r.seal().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.hash, r.digest().unwrap_or_else(|e| panic!("{e}")));
        let whole = serde_json::to_vec(&r).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            String::from_utf8_lossy(&line),
            String::from_utf8_lossy(&whole)
        );
    }
}
