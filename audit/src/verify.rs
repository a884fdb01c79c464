//! Verification of the whole chain: every record parses, follows its predecessor by `seq`,
//! matches its own hash and commits to the one before; the head file catches records cut from
//! the end. The first problem is reported as a [`Finding`] naming the record and the line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::head::{Head, check};
use crate::{Error, GENESIS, HEAD_FILE, LOG_FILE, Record, Result};

/// What kind of tampering verification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tamper {
    /// A record's content no longer matches its hash, or a later record does not commit to it.
    Modified,
    /// Records are missing from the chain or from its end.
    Deleted,
    /// A record that does not belong to the chain was added.
    Inserted,
    /// Records are out of order.
    Reordered,
    /// The head is not signed by this log's key, or its signature does not verify.
    HeadSignature,
    /// A head published elsewhere (an anchor) is not in the log.
    AnchorMissing,
}

/// The first problem verification found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What happened.
    pub tamper: Tamper,
    /// The record (`seq`) it concerns.
    pub seq: u64,
    /// The 1-based line of the log where it was noticed.
    pub line: usize,
    /// A full sentence for people.
    pub message: String,
}

/// The result of verifying an audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// The log file.
    pub path: PathBuf,
    /// Records read.
    pub records: u64,
    /// `seq` of the last record.
    pub last_seq: u64,
    /// Hash of the last record: the value to anchor elsewhere.
    pub last_hash: String,
    /// Whether the log ends in a partial record left by a crash (never acknowledged).
    pub partial_tail: bool,
    /// The ed25519 public key (hex) that signed the head; `None` for a log from before signing.
    pub signed_by: Option<String>,
    /// The anchor checked (`--anchor`), if one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anchor: Option<String>,
    /// The first problem, if any.
    pub finding: Option<Finding>,
}

impl Verification {
    /// Whether the chain is intact.
    pub fn ok(&self) -> bool {
        self.finding.is_none()
    }
}

/// Verifies the whole chain of the audit log in `dir`.
pub fn verify(dir: &Path) -> Result<Verification> {
    verify_anchored(dir, None)
}

/// Verifies the chain and, with `anchor` (a record hash published elsewhere, such as an earlier
/// report's manifest), that the log still holds that record.
pub fn verify_anchored(dir: &Path, anchor: Option<&str>) -> Result<Verification> {
    let path = dir.join(LOG_FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(cause) => return Err(Error::Io { path, cause }),
    };
    let complete_len = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut v = Verification {
        path: path.clone(),
        records: 0,
        last_seq: 0,
        last_hash: GENESIS.into(),
        partial_tail: complete_len < text.len(),
        signed_by: None,
        anchor: anchor.map(str::to_string),
        finding: None,
    };
    // Parse every line first: reordering is told apart from deletion by looking ahead.
    let records = match parse(text.get(..complete_len).unwrap_or_default()) {
        Ok(records) => records,
        Err(finding) => {
            v.finding = Some(finding);
            return Ok(v);
        }
    };
    v.finding = chain(&records, &mut v)?;
    if v.finding.is_none() {
        v.finding = head(dir, &records, &mut v);
    }
    if v.finding.is_none()
        && let Some(a) = anchor
        && !records
            .iter()
            .any(|(_, r)| r.hash.eq_ignore_ascii_case(a.trim()))
    {
        v.finding = Some(Finding {
            tamper: Tamper::AnchorMissing,
            seq: v.last_seq,
            line: 0,
            message: format!(
                "the anchor `{a}` is not the hash of any record: the log no longer contains the history that was published"
            ),
        });
    }
    Ok(v)
}

/// Every record with its 1-based line, or the first line that is not one.
fn parse(body: &[u8]) -> std::result::Result<Vec<(usize, Record)>, Finding> {
    let mut records: Vec<(usize, Record)> = Vec::new();
    for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        if raw.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Record>(raw) {
            Ok(r) => records.push((line, r)),
            Err(e) => {
                let seq = records.last().map_or(1, |(_, r)| r.seq + 1);
                return Err(Finding {
                    tamper: Tamper::Modified,
                    seq,
                    line,
                    message: format!(
                        "line {line} is not an audit record ({e}): the record after seq {} was modified",
                        seq - 1
                    ),
                });
            }
        }
    }
    Ok(records)
}

/// Walks the chain, counting intact records into `v`, up to the first break.
fn chain(records: &[(usize, Record)], v: &mut Verification) -> Result<Option<Finding>> {
    let lines_of: HashMap<u64, Vec<usize>> =
        records.iter().fold(HashMap::new(), |mut m, (line, r)| {
            m.entry(r.seq).or_default().push(*line);
            m
        });
    let mut prev_seq = 0u64;
    let mut prev_hash = GENESIS.to_string();
    for (line, r) in records {
        let (line, expected) = (*line, prev_seq + 1);
        let find = |tamper, seq, message: String| {
            Some(Finding {
                tamper,
                seq,
                line,
                message,
            })
        };
        if r.seq != expected {
            let expected_later = lines_of
                .get(&expected)
                .and_then(|ls| ls.iter().find(|&&l| l > line).copied());
            return Ok(out_of_sequence(r.seq, prev_seq, line, expected_later));
        }
        if r.digest()? != r.hash {
            return Ok(find(
                Tamper::Modified,
                r.seq,
                format!(
                    "record seq {} (line {line}) was modified: its content does not match its hash",
                    r.seq
                ),
            ));
        }
        if r.prev_hash != prev_hash {
            return Ok(if prev_seq == 0 {
                find(
                    Tamper::Inserted,
                    r.seq,
                    format!(
                        "record seq {} (line {line}) does not start a chain: it was inserted or the log was cut at the front",
                        r.seq
                    ),
                )
            } else {
                find(
                    Tamper::Modified,
                    prev_seq,
                    format!(
                        "record seq {prev_seq} was modified or replaced: record seq {} (line {line}) commits to a different one",
                        r.seq
                    ),
                )
            });
        }
        prev_seq = r.seq;
        prev_hash = r.hash.clone();
        v.records += 1;
        v.last_seq = r.seq;
        v.last_hash = r.hash.clone();
    }
    Ok(None)
}

/// A record whose `seq` is not the one after `prev_seq`: inserted, reordered (the expected
/// record comes later, at `expected_later`) or the records between were deleted.
fn out_of_sequence(
    seq: u64,
    prev_seq: u64,
    line: usize,
    expected_later: Option<usize>,
) -> Option<Finding> {
    let expected = prev_seq + 1;
    let (tamper, at, message) = if seq < expected {
        (
            Tamper::Inserted,
            seq,
            format!(
                "line {line} holds a record with seq {seq} after seq {prev_seq}: it was inserted"
            ),
        )
    } else if let Some(later) = expected_later {
        (
            Tamper::Reordered,
            expected,
            format!(
                "records are out of order: seq {seq} is at line {line}, before seq {expected} at line {later}"
            ),
        )
    } else {
        let gone = if seq - 1 == expected {
            format!("record seq {expected} was deleted")
        } else {
            format!("records seq {expected} to {} were deleted", seq - 1)
        };
        (
            Tamper::Deleted,
            expected,
            format!("{gone}: line {line} holds seq {seq} after seq {prev_seq}"),
        )
    };
    Some(Finding {
        tamper,
        seq: at,
        line,
        message,
    })
}

/// Compares an intact chain with the head file, which catches records cut from the end.
fn head(dir: &Path, records: &[(usize, Record)], v: &mut Verification) -> Option<Finding> {
    let head_path = dir.join(HEAD_FILE);
    let Ok(text) = std::fs::read_to_string(&head_path) else {
        return (v.records > 0).then(|| Finding {
            tamper: Tamper::Deleted,
            seq: v.last_seq,
            line: 0,
            message: format!(
                "the head file `{}` is missing: records cut from the end cannot be ruled out",
                head_path.display()
            ),
        });
    };
    let parsed = serde_json::from_str::<Head>(&text);
    if let Ok(h) = &parsed {
        match check(dir, h) {
            Ok(signer) => v.signed_by = signer,
            Err(why) => {
                return Some(Finding {
                    tamper: Tamper::HeadSignature,
                    seq: h.seq,
                    line: 0,
                    message: why,
                });
            }
        }
    }
    match parsed {
        Ok(head) if head.seq > v.last_seq => Some(Finding {
            tamper: Tamper::Deleted,
            seq: v.last_seq + 1,
            line: records.last().map_or(0, |(l, _)| *l) + 1,
            message: format!(
                "records seq {} to {} were deleted from the end: the head records seq {}",
                v.last_seq + 1,
                head.seq,
                head.seq
            ),
        }),
        Ok(head) => {
            let (line, r) = records.iter().find(|(_, r)| r.seq == head.seq)?;
            (r.hash != head.hash).then(|| Finding {
                tamper: Tamper::Modified,
                seq: head.seq,
                line: *line,
                message: format!(
                    "record seq {} (line {line}) differs from the one the head recorded: the chain from there was rewritten",
                    head.seq
                ),
            })
        }
        Err(e) => Some(Finding {
            tamper: Tamper::Modified,
            seq: v.last_seq,
            line: 0,
            message: format!("the head file `{}` is unreadable: {e}", head_path.display()),
        }),
    }
}
