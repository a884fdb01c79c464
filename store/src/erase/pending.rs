//! `DATA/erasure/pending.json`: what erasures still owe after their delete commit, kept so that a
//! crash at any point leaves enough to finish.
//!
//! - A **purge** lists the data files a delete commit replaced and when they may be removed. It
//!   is written as an *intent* before the commit (naming the version the commit will have and the
//!   id its `commitInfo` carries) and completed with the files after it; an intent left by a crash
//!   is resolved from that commit's `remove` actions, or dropped when the commit is not its own
//!   (it never happened).
//! - A **follow-up** is what the caller must still do after the commit (clear the runs of the
//!   erased spans from the journal, record the erasure), with the spans and runs it erased and the
//!   caller's note. It becomes owed once its commit is known to have happened, and stays until the
//!   caller says it is done, so a crash between the store and the journal or the audit log is
//!   finished by the next erasure or the next start.
//!
//! The file is replaced whole (temporary name, fsync, rename, directory fsync).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The key under which a delete commit's `commitInfo` names its erasure.
pub(super) const ERASURE_KEY: &str = "custos.erasure";

/// What the caller still owes for one committed erasure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Followup {
    /// The erasure (its commit's `custos.erasure`).
    pub id: String,
    /// Spans the commit deleted.
    pub spans: u64,
    /// Distinct run ids of those spans.
    pub runs: Vec<String>,
    /// What the caller gave to remember (how the selection is recorded); never a raw value.
    pub note: serde_json::Value,
}

/// Files of one erasure still to remove.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Purge {
    /// Names the erasure in its commit's `commitInfo`.
    pub(super) id: String,
    /// The delete commit's version (before it is made: the version it will have).
    pub(super) version: u64,
    /// When the commit was made (ms since the epoch): tombstones older than this may hold
    /// erased rows too (files compaction or retention replaced), and go with these files.
    pub(super) committed_unix_ms: u64,
    /// When the files may go (ms since the epoch).
    pub(super) due_unix_ms: u64,
    /// Paths relative to the table directory.
    pub(super) files: Vec<String>,
    /// Whether `files` is known; an intent is resolved from its commit's `remove` actions.
    pub(super) resolved: bool,
    /// The caller's follow-up, owed once the commit is known to exist.
    pub(super) followup: Option<Followup>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PendingFile {
    pub(super) purges: Vec<Purge>,
    #[serde(default)]
    pub(super) followups: Vec<Followup>,
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("erasure").join("pending.json")
}

pub(super) fn read(data_dir: &Path) -> Result<PendingFile> {
    let path = path(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::Corrupt(format!("`{}` is not readable: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PendingFile::default()),
        Err(e) => Err(Error::io(format!("cannot read `{}`", path.display()), e)),
    }
}

pub(super) fn write(data_dir: &Path, pending: &PendingFile) -> Result<()> {
    let path = path(data_dir);
    let dir = data_dir.join("erasure");
    let io = |what: &str, e| Error::io(format!("cannot {what} `{}`", path.display()), e);
    std::fs::create_dir_all(&dir).map_err(|e| io("create the directory of", e))?;
    let tmp = dir.join("pending.json.tmp");
    let bytes = serde_json::to_vec_pretty(pending)
        .map_err(|e| Error::Codec(format!("cannot encode the pending erasures: {e}")))?;
    std::fs::write(&tmp, bytes).map_err(|e| io("write", e))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("sync", e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io("replace", e))?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("sync the directory of", e))
}

/// Resolves the intents a crash left: from their commit's `remove` actions, moving their
/// follow-ups to the owed list; an intent whose commit is not its own is dropped with its
/// follow-up. Returns whether anything changed.
pub(super) fn resolve(pending: &mut PendingFile, table_dir: &Path) -> Result<bool> {
    let mut kept = Vec::with_capacity(pending.purges.len());
    let mut changed = false;
    for mut p in std::mem::take(&mut pending.purges) {
        if !p.resolved {
            changed = true;
            match removed_by_commit(table_dir, &p)? {
                Some(files) => {
                    p.files = files;
                    p.resolved = true;
                    pending.followups.extend(p.followup.take());
                }
                None => continue,
            }
        }
        kept.push(p);
    }
    pending.purges = kept;
    Ok(changed)
}

/// The files an intent's commit removed, read from that commit's `remove` actions; `None` when
/// the commit at that version is not the erasure's (it never happened).
fn removed_by_commit(table_dir: &Path, purge: &Purge) -> Result<Option<Vec<String>>> {
    let path = table_dir
        .join("_delta_log")
        .join(format!("{:020}.json", purge.version));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("cannot read `{}`", path.display()), e)),
    };
    let actions: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let ours = actions.iter().any(|a| {
        a.pointer(&format!("/commitInfo/{ERASURE_KEY}"))
            .and_then(serde_json::Value::as_str)
            == Some(purge.id.as_str())
    });
    if !ours {
        return Ok(None);
    }
    Ok(Some(
        actions
            .iter()
            .filter_map(|a| {
                a.pointer("/remove/path")
                    .and_then(serde_json::Value::as_str)
            })
            .map(percent_decode)
            .collect(),
    ))
}

/// Decodes `%XX` escapes (Delta log paths are URL-encoded).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(h) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(h, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_paths_are_decoded() {
        assert_eq!(
            percent_decode("date%3D2026-12-01/part-1.parquet"),
            "date=2026-12-01/part-1.parquet"
        );
        assert_eq!(percent_decode("a%zz%4"), "a%zz%4");
    }
}
