//! Erasure of chosen spans: a Delta delete commit that rewrites the files holding them, after a
//! flush that moves every acknowledged span out of the memtable and the WAL, then the physical
//! removal of exactly the files that commit replaced (at once, or after a grace period so readers
//! in flight finish), together with the log entries that still describe them.
//!
//! # Nothing of the erased values is written again
//! The delete commit's predicate is stored in the Delta log (`commitInfo`), so it must not be the
//! caller's predicate: that would re-store the very values being erased. The matching spans are
//! found first with the caller's predicate, and the commit deletes them by their `(trace_id,
//! span_id)` keys through [`ErasedKeys`], a function whose SQL form names no value
//! (`custos_erased(trace_id, span_id)`), restricted to the `date` partitions that hold them.
//!
//! # Crash safety
//! The commit is atomic: a crash before it leaves the old state, after it the new one. Files
//! still to be removed are listed in `DATA/erasure/pending.json` (written under a temporary name
//! and renamed) before the commit's readers are switched, so a crash after the commit only delays
//! their removal to the next maintenance pass.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use custos_schema::col;
use datafusion::logical_expr::{Expr, ExprSchemable as _};
use datafusion::prelude::{SessionContext, col as column, lit};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use custos_redact::Mention;

mod functions;

use functions::{ErasedKeys, Mentions};

use crate::table::{COMPACT_ZSTD_LEVEL, read_watermark, writer_properties};
use deltalake::kernel::transaction::CommitProperties;

use crate::{Error, Result, SpanTable, Store, WalCmd};

/// The most spans one erasure may remove (their keys are held in memory while it runs).
pub const MAX_ERASED_SPANS: usize = 5_000_000;

/// Fault injection for crash tests: when `CUSTOS_STORE_CRASH` names `point` (`erase_listed`:
/// the intent is listed, the delete not committed; `erase_committed`: committed, its files not
/// listed yet; `erase_purging`: the first replaced file removed), the process kills itself with
/// SIGKILL, exactly like `kill -9`.
fn crash_point(point: &str) {
    static TARGET: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let target = TARGET.get_or_init(|| std::env::var("CUSTOS_STORE_CRASH").ok());
    if target.as_deref() == Some(point) {
        let _ = std::process::Command::new("kill")
            .args(["-9", &std::process::id().to_string()])
            .status();
        // `kill` delivers SIGKILL to us; wait for it rather than go on.
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// Which spans to erase.
#[derive(Debug, Clone)]
pub enum Selection {
    /// A SQL boolean expression over the `spans` columns, as a reader sees the values (redacted
    /// values as their pseudonyms): `attributes['ticket.id'] = 'T-1'`, `run_id = 'r-9'`.
    Where(String),
    /// Spans that mention one person: a string anywhere in the span (any column, attribute,
    /// event or link) equal to the value, holding it as a whole word, or holding its pseudonym
    /// (`[PERSON:<hex>]`, `[EMAIL:<hex>]`) under the data directory's key.
    Mentions(Mention),
}

/// What an erasure did.
#[derive(Debug, Clone, Default)]
pub struct Erased {
    /// Spans deleted from the table.
    pub spans: u64,
    /// Distinct run ids of the deleted spans (so the caller can reach the executor's journal).
    pub runs: Vec<String>,
    /// Data files the delete commit replaced.
    pub files_rewritten: usize,
    /// The table version of the delete commit, when there was one.
    pub version: Option<u64>,
    /// When the replaced files are removed from disk: `None` when they already are.
    pub purge_due_unix_ms: Option<u64>,
}

/// Files of one erasure still to remove.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Purge {
    /// Names the erasure in its commit's `commitInfo` (`custos.erasure`).
    id: String,
    /// The delete commit's version (before it is made: the version it will have).
    version: u64,
    /// When the files may go (ms since the epoch).
    due_unix_ms: u64,
    /// Paths relative to the table directory.
    files: Vec<String>,
    /// Whether `files` is known; an intent is resolved from its commit's `remove` actions.
    resolved: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PendingFile {
    purges: Vec<Purge>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn pending_path(data_dir: &Path) -> PathBuf {
    data_dir.join("erasure").join("pending.json")
}

fn read_pending(data_dir: &Path) -> Result<PendingFile> {
    let path = pending_path(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::Corrupt(format!("`{}` is not readable: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PendingFile::default()),
        Err(e) => Err(Error::io(format!("cannot read `{}`", path.display()), e)),
    }
}

fn write_pending(data_dir: &Path, pending: &PendingFile) -> Result<()> {
    let path = pending_path(data_dir);
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

impl Store {
    /// Erases the selected spans. Every span acknowledged before the call is covered: the WAL's
    /// segment is sealed, the memtable flushed and the WAL truncated (so no erased byte stays in
    /// a segment), then one delete commit rewrites the files holding matches. The replaced files
    /// are removed at once when `grace` is `None`, else by the first maintenance pass after
    /// `grace` (readers pinned to the old version may still be reading them until then).
    pub async fn erase(&self, selection: &Selection, grace: Option<Duration>) -> Result<Erased> {
        let through = self.seal_wal().await?;
        self.flush().await?;
        let mut guard = self.inner.table.lock().await;
        let Some(table) = guard.as_mut() else {
            return Ok(Erased::default());
        };
        if table.watermark() < through {
            return Err(Error::Closed(format!(
                "the flush before the erasure stopped at WAL record {} of {through}; try again",
                table.watermark()
            )));
        }
        self.truncate_wal(table.watermark()).await?;
        self.purge_due_locked(table, None).await?;
        let found = find(table, selection).await?;
        if found.keys.is_empty() {
            return Ok(Erased::default());
        }
        let data_dir = self.inner.options.data_dir.clone();
        let due = now_ms().saturating_add(grace.unwrap_or_default().as_millis() as u64);
        let (deleted, removed, version) = delete_found(table, &data_dir, &found, due).await?;
        self.show(table).await?;
        let purge_due_unix_ms = match grace {
            None => {
                self.purge_due_locked(table, None).await?;
                None
            }
            Some(_) => Some(due),
        };
        tracing::info!(spans = deleted, files = removed.len(), "erased spans");
        Ok(Erased {
            spans: deleted,
            runs: found.runs.into_iter().collect(),
            files_rewritten: removed.len(),
            version,
            purge_due_unix_ms,
        })
    }

    /// Removes the files of earlier erasures whose grace has passed, then the log entries that
    /// still describe them. Returns the number of files removed.
    pub async fn purge_due(&self) -> Result<usize> {
        let mut guard = self.inner.table.lock().await;
        let Some(table) = guard.as_mut() else {
            return Ok(0);
        };
        self.purge_due_locked(table, None).await
    }

    /// Purges every pending erasure due by `at` (now when `None`).
    pub(crate) async fn purge_due_locked(
        &self,
        table: &mut SpanTable,
        at: Option<u64>,
    ) -> Result<usize> {
        let data_dir = &self.inner.options.data_dir;
        let mut pending = read_pending(data_dir)?;
        // An intent whose process died around its commit: the commit says what it removed; no
        // commit of its own means it never happened.
        let mut kept = Vec::with_capacity(pending.purges.len());
        let mut changed = false;
        for mut p in pending.purges.drain(..) {
            if !p.resolved {
                changed = true;
                match removed_by_commit(&table.dir, &p)? {
                    Some(files) => {
                        p.files = files;
                        p.resolved = true;
                    }
                    None => continue,
                }
            }
            kept.push(p);
        }
        pending.purges = kept;
        let at = at.unwrap_or_else(now_ms);
        let (due, later): (Vec<Purge>, Vec<Purge>) =
            pending.purges.drain(..).partition(|p| p.due_unix_ms <= at);
        if due.is_empty() {
            if changed {
                pending.purges = later;
                write_pending(data_dir, &pending)?;
            }
            return Ok(0);
        }
        let mut removed = 0;
        let mut dirs = BTreeSet::new();
        for p in &due {
            for f in &p.files {
                let path = table.dir.join(f);
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        removed += 1;
                        crash_point("erase_purging");
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(Error::io(format!("cannot remove `{}`", path.display()), e));
                    }
                }
                if let Some(d) = path.parent() {
                    dirs.insert(d.to_path_buf());
                }
            }
        }
        for d in dirs {
            std::fs::File::open(&d)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(format!("cannot sync directory `{}`", d.display()), e))?;
        }
        expire_log(table).await?;
        pending.purges = later;
        write_pending(data_dir, &pending)?;
        Ok(removed)
    }

    /// Closes the WAL's active segment; returns the last sequence number written before.
    async fn seal_wal(&self) -> Result<u64> {
        let (reply, rx) = oneshot::channel();
        self.send_wal(WalCmd::Seal { reply })?;
        rx.await
            .map_err(|_| Error::Closed("the WAL writer has stopped".into()))?
    }

    /// Removes the WAL segments at or below `through` and waits until they are gone.
    async fn truncate_wal(&self, through: u64) -> Result<()> {
        let (done, rx) = oneshot::channel();
        self.send_wal(WalCmd::Truncate {
            through,
            done: Some(done),
        })?;
        rx.await
            .map_err(|_| Error::Closed("the WAL writer has stopped".into()))?
    }

    fn send_wal(&self, cmd: WalCmd) -> Result<()> {
        let tx = self
            .inner
            .wal_tx
            .lock()
            .map_err(|_| Error::Closed("WAL channel lock poisoned".into()))?;
        let tx = tx.as_ref().ok_or_else(|| {
            Error::Closed("the store is read-only or shutting down; erase needs a writer".into())
        })?;
        tx.send(cmd)
            .map_err(|_| Error::Closed("the WAL writer has stopped".into()))
    }
}

/// Commits the delete of `found`, listing the files it replaces in the pending file: first as an
/// intent naming the version the commit will have (so a crash right after the commit still
/// leaves the files to be found, from that commit's `remove` actions), then with the files.
/// Returns the spans deleted, the replaced files and the commit's version.
async fn delete_found(
    table: &mut SpanTable,
    data_dir: &Path,
    found: &Found,
    due: u64,
) -> Result<(u64, Vec<String>, Option<u64>)> {
    let id = format!("erasure-{}-{}", now_ms(), std::process::id());
    let mut pending = read_pending(data_dir)?;
    pending.purges.push(Purge {
        id: id.clone(),
        version: table.version().map_or(0, |v| v + 1),
        due_unix_ms: due,
        files: Vec::new(),
        resolved: false,
    });
    write_pending(data_dir, &pending)?;
    crash_point("erase_listed");
    let before: HashSet<String> = table.data_files().into_iter().collect();
    let started = SystemTime::now();
    let keys = ErasedKeys::udf(Arc::new(found.keys.clone()));
    let dates: Vec<Expr> = found.dates.iter().map(|d| lit(d.clone())).collect();
    let predicate = column(col::DATE)
        .in_list(dates, false)
        .and(keys.call(vec![column(col::TRACE_ID), column(col::SPAN_ID)]));
    let commit = CommitProperties::default().with_metadata([(
        ERASURE_KEY.to_string(),
        serde_json::Value::String(id.clone()),
    )]);
    let (new, metrics) = table
        .table
        .clone()
        .delete()
        .with_predicate(predicate)
        .with_writer_properties(writer_properties(COMPACT_ZSTD_LEVEL))
        .with_commit_properties(commit)
        .await
        .map_err(|e| Error::Table(format!("erasure delete failed: {e}")))?;
    table.table = new;
    table.sync_since(started).await?;
    crash_point("erase_committed");
    table.watermark = read_watermark(&table.table).await?;
    let after: HashSet<String> = table.data_files().into_iter().collect();
    let removed: Vec<String> = before.difference(&after).cloned().collect();
    let version = table.version();
    for p in pending.purges.iter_mut().filter(|p| p.id == id) {
        p.version = version.unwrap_or(p.version);
        p.files = removed.clone();
        p.resolved = true;
    }
    write_pending(data_dir, &pending)?;
    let deleted = metrics.num_deleted_rows.map_or(found.spans, |n| n as u64);
    Ok((deleted, removed, version))
}

/// The key under which a delete commit's `commitInfo` names its erasure.
const ERASURE_KEY: &str = "custos.erasure";

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

/// A checkpoint at the current version, then the removal of every older commit and checkpoint
/// file: their `add` actions carry column statistics of files that are gone, which may hold
/// erased values.
async fn expire_log(table: &mut SpanTable) -> Result<()> {
    let Some(version) = table.version() else {
        return Ok(());
    };
    deltalake::checkpoints::create_checkpoint(&table.table, None)
        .await
        .map_err(|e| Error::Table(format!("cannot write a checkpoint: {e}")))?;
    let cutoff = i64::try_from(now_ms().saturating_add(1000)).unwrap_or(i64::MAX);
    deltalake::checkpoints::cleanup_expired_logs_for(
        version,
        table.table.log_store().as_ref(),
        cutoff,
        None,
    )
    .await
    .map_err(|e| Error::Table(format!("cannot remove old log entries: {e}")))?;
    let started = SystemTime::now()
        .checked_sub(Duration::from_secs(5))
        .unwrap_or(UNIX_EPOCH);
    table.sync_since(started).await?;
    table.reload().await
}

/// `sql` with every literal value (strings and numbers) replaced by `hash(value)` as a string
/// literal: what an audit record of the erasure keeps of a `Where` selection, so the trail
/// shows what kind of condition was used without re-storing the values erased. Column names,
/// keys inside `attributes['...']` and operators stay. A condition that does not tokenize is
/// recorded as `hash` of all of it.
pub fn recorded_form(sql: &str, hash: impl Fn(&str) -> String) -> String {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return format!("'{}'", hash(sql));
    };
    let mut out = String::with_capacity(sql.len() + 32);
    let mut subscript = false;
    for t in tokens {
        match &t {
            // A map key (`attributes['user.id']`) names an attribute, not a value.
            Token::SingleQuotedString(s) if subscript => {
                out.push_str(&Token::SingleQuotedString(s.clone()).to_string());
            }
            Token::SingleQuotedString(s)
            | Token::DoubleQuotedString(s)
            | Token::NationalStringLiteral(s)
            | Token::EscapedStringLiteral(s) => {
                out.push_str(&format!("'{}'", hash(s)));
            }
            Token::Number(n, _) => out.push_str(&format!("'{}'", hash(n))),
            other => out.push_str(&other.to_string()),
        }
        subscript = matches!(t, Token::LBracket);
    }
    out
}

/// Spans a selection matches.
struct Found {
    keys: HashSet<(String, String)>,
    dates: BTreeSet<String>,
    runs: BTreeSet<String>,
    spans: u64,
}

/// Finds the selected spans in the table's loaded version.
async fn find(table: &SpanTable, selection: &Selection) -> Result<Found> {
    let mut found = Found {
        keys: HashSet::new(),
        dates: BTreeSet::new(),
        runs: BTreeSet::new(),
        spans: 0,
    };
    let Some(provider) = table.provider().await? else {
        return Ok(found);
    };
    let df_err = |e: datafusion::error::DataFusionError| Error::Table(e.to_string());
    let ctx = SessionContext::new();
    let df = ctx.read_table(provider).map_err(df_err)?;
    let predicate = match selection {
        Selection::Where(sql) => {
            let expr = ctx.parse_sql_expr(sql, df.schema()).map_err(|e| {
                Error::Predicate(format!("`{sql}` is not a predicate over the spans: {e}"))
            })?;
            match expr.get_type(df.schema()) {
                Ok(DataType::Boolean) => expr,
                Ok(other) => {
                    return Err(Error::Predicate(format!(
                        "`{sql}` is a {other} expression, not a condition; write e.g. `attributes['ticket.id'] = 'T-1'`"
                    )));
                }
                Err(e) => return Err(Error::Predicate(format!("`{sql}`: {e}"))),
            }
        }
        Selection::Mentions(mention) => {
            let udf = Mentions::udf(mention);
            let all = df
                .schema()
                .fields()
                .iter()
                .map(|f| column(f.name()))
                .collect();
            udf.call(all)
        }
    };
    let mut stream = df
        .filter(predicate)
        .and_then(|d| d.select_columns(&[col::TRACE_ID, col::SPAN_ID, col::RUN_ID, col::DATE]))
        .map_err(|e| Error::Predicate(e.to_string()))?
        .execute_stream()
        .await
        .map_err(|e| Error::Predicate(e.to_string()))?;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| Error::Predicate(e.to_string()))?;
        let strings = |i: usize| {
            arrow::compute::cast(batch.column(i), &DataType::Utf8)
                .map_err(|e| Error::Codec(e.to_string()))
        };
        let (trace, span, run, date) = (strings(0)?, strings(1)?, strings(2)?, strings(3)?);
        let (trace, span) = (trace.as_string::<i32>(), span.as_string::<i32>());
        let (run, date) = (run.as_string::<i32>(), date.as_string::<i32>());
        for r in 0..batch.num_rows() {
            found
                .keys
                .insert((trace.value(r).to_string(), span.value(r).to_string()));
            if !run.is_null(r) {
                found.runs.insert(run.value(r).to_string());
            }
            found.dates.insert(date.value(r).to_string());
        }
        found.spans += batch.num_rows() as u64;
        if found.keys.len() > MAX_ERASED_SPANS {
            return Err(Error::Predicate(format!(
                "the selection matches over {MAX_ERASED_SPANS} spans; erase in narrower parts (add a condition on `date`), or use retention for whole days"
            )));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_forms_keep_no_value() {
        let h = |v: &str| format!("[VALUE:{}]", v.len());
        assert_eq!(
            recorded_form("attributes['user.id'] = 'u-123' AND duration_ms > 2500", h),
            "attributes['user.id'] = '[VALUE:5]' AND duration_ms > '[VALUE:4]'"
        );
        assert_eq!(
            recorded_form("name IN ('a', 'bb')", h),
            "name IN ('[VALUE:1]', '[VALUE:2]')"
        );
        let bad = "name = 'unterminated";
        assert_eq!(recorded_form(bad, h), format!("'[VALUE:{}]'", bad.len()));
    }
}
