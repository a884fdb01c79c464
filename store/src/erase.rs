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
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use custos_schema::col;
use datafusion::logical_expr::{Expr, ExprSchemable as _};
use datafusion::prelude::{SessionContext, col as column, lit};
use futures::StreamExt as _;
use tokio::sync::oneshot;

use custos_redact::Mention;

mod functions;
mod pending;

use functions::{ErasedKeys, Mentions};
pub use pending::Followup;
use pending::{ERASURE_KEY, Purge};

use crate::table::{COMPACT_ZSTD_LEVEL, read_watermark, writer_properties};
use deltalake::kernel::transaction::CommitProperties;

use crate::{Error, Result, SpanTable, Store, WalCmd};

/// The most spans one erasure may remove (their keys are held in memory while it runs).
pub const MAX_ERASED_SPANS: usize = 5_000_000;

/// Fault injection for crash tests (debug builds only): when `CUSTOS_STORE_CRASH` names `point` (`erase_listed`:
/// the intent is listed, the delete not committed; `erase_committed`: committed, its files not
/// listed yet; `erase_purging`: the first replaced file removed), the process kills itself with
/// SIGKILL, exactly like `kill -9`.
#[cfg(debug_assertions)]
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

/// Release builds have no fault injection.
#[cfg(not(debug_assertions))]
fn crash_point(_: &str) {}

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
    /// The erasure's id: its follow-up is owed until [`Store::followup_done`] is called with it
    /// (empty when nothing matched, so nothing is owed).
    pub id: String,
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Store {
    /// Erases the selected spans. Every span acknowledged before the call is covered: the WAL's
    /// segment is sealed, the memtable flushed and the WAL truncated (so no erased byte stays in
    /// a segment), then one delete commit rewrites the files holding matches. The replaced files
    /// are removed at once when `grace` is `None`, else by the first maintenance pass after
    /// `grace` (readers pinned to the old version may still be reading them until then).
    ///
    /// What the caller must still do with the erased spans' runs is owed as a [`Followup`]
    /// carrying `note` from the commit on, until [`Store::followup_done`]; after a crash
    /// [`Store::followups`] lists it.
    pub async fn erase(
        &self,
        selection: &Selection,
        grace: Option<Duration>,
        note: serde_json::Value,
    ) -> Result<Erased> {
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
        let (id, deleted, removed, version) =
            delete_found(table, &data_dir, &found, due, note).await?;
        let dates = found.dates.iter().cloned().collect();
        self.roll_change(table, crate::rollup::Change::Dates(dates))
            .await;
        self.show(table).await?;
        let purge_due_unix_ms = match grace {
            None => {
                self.purge_due_locked(table, None).await?;
                self.vacuum_rollups(Duration::ZERO).await?;
                None
            }
            Some(_) => Some(due),
        };
        tracing::info!(spans = deleted, files = removed.len(), "erased spans");
        Ok(Erased {
            id,
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

    /// Follow-ups of committed erasures their callers have not finished (a crash came between).
    pub async fn followups(&self) -> Result<Vec<Followup>> {
        let guard = self.inner.table.lock().await;
        let data_dir = &self.inner.options.data_dir;
        let mut pending = pending::read(data_dir)?;
        if let Some(table) = guard.as_ref()
            && pending::resolve(&mut pending, &table.dir)?
        {
            pending::write(data_dir, &pending)?;
        }
        Ok(pending.followups)
    }

    /// The caller finished the follow-up of erasure `id`.
    pub async fn followup_done(&self, id: &str) -> Result<()> {
        let _guard = self.inner.table.lock().await;
        let data_dir = &self.inner.options.data_dir;
        let mut pending = pending::read(data_dir)?;
        let before = pending.followups.len();
        pending.followups.retain(|f| f.id != id);
        if pending.followups.len() != before {
            pending::write(data_dir, &pending)?;
        }
        Ok(())
    }

    /// Purges every pending erasure due now: exactly the files its commit replaced, every other
    /// tombstone older than its commit (files compaction or retention replaced before the
    /// erasure may hold erased rows too) and any file no commit references, then the log
    /// entries that described them. Returns the number of its own files removed.
    pub(crate) async fn purge_due_locked(
        &self,
        table: &mut SpanTable,
        at: Option<u64>,
    ) -> Result<usize> {
        let data_dir = &self.inner.options.data_dir;
        let mut pending = pending::read(data_dir)?;
        let changed = pending::resolve(&mut pending, &table.dir)?;
        let at = at.unwrap_or_else(now_ms);
        let (due, later): (Vec<Purge>, Vec<Purge>) = std::mem::take(&mut pending.purges)
            .into_iter()
            .partition(|p| p.due_unix_ms <= at);
        pending.purges = later;
        if due.is_empty() {
            if changed {
                pending::write(data_dir, &pending)?;
            }
            return Ok(0);
        }
        let removed = remove_files(&table.dir, due.iter().flat_map(|p| p.files.iter()))?;
        let oldest = due.iter().map(|p| p.committed_unix_ms).min().unwrap_or(at);
        table.vacuum_before(oldest).await?;
        expire_log(table).await?;
        pending::write(data_dir, &pending)?;
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
/// The caller's follow-up rides on the intent and is owed once the commit is known. Returns the
/// erasure's id, the spans deleted, the replaced files and the commit's version.
async fn delete_found(
    table: &mut SpanTable,
    data_dir: &Path,
    found: &Found,
    due: u64,
    note: serde_json::Value,
) -> Result<(String, u64, Vec<String>, Option<u64>)> {
    let id = format!("erasure-{}-{}", now_ms(), std::process::id());
    let mut pending = pending::read(data_dir)?;
    pending.purges.push(Purge {
        id: id.clone(),
        version: table.version().map_or(0, |v| v + 1),
        committed_unix_ms: now_ms(),
        due_unix_ms: due,
        files: Vec::new(),
        resolved: false,
        followup: Some(Followup {
            id: id.clone(),
            spans: found.spans,
            runs: found.runs.iter().cloned().collect(),
            note,
        }),
    });
    pending::write(data_dir, &pending)?;
    crash_point("erase_listed");
    let before: HashSet<String> = table.data_files().into_iter().collect();
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
    crash_point("erase_committed");
    table.watermark = read_watermark(&table.table).await?;
    let after: HashSet<String> = table.data_files().into_iter().collect();
    let removed: Vec<String> = before.difference(&after).cloned().collect();
    let version = table.version();
    let deleted = metrics.num_deleted_rows.map_or(found.spans, |n| n as u64);
    for p in pending.purges.iter_mut().filter(|p| p.id == id) {
        p.version = version.unwrap_or(p.version);
        p.files = removed.clone();
        p.resolved = true;
        if let Some(mut f) = p.followup.take() {
            f.spans = deleted;
            pending.followups.push(f);
        }
    }
    pending::write(data_dir, &pending)?;
    Ok((id, deleted, removed, version))
}

/// Removes `files` (relative to `table_dir`; gone already is fine) and syncs their directories.
fn remove_files<'a>(table_dir: &Path, files: impl Iterator<Item = &'a String>) -> Result<usize> {
    let mut removed = 0;
    let mut dirs = BTreeSet::new();
    for f in files {
        let path = table_dir.join(f);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                removed += 1;
                crash_point("erase_purging");
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("cannot remove `{}`", path.display()), e)),
        }
        if let Some(d) = path.parent() {
            dirs.insert(d.to_path_buf());
        }
    }
    for d in dirs {
        std::fs::File::open(&d)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(format!("cannot sync directory `{}`", d.display()), e))?;
    }
    Ok(removed)
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
    table.reload().await
}

/// `sql` with every literal value replaced by `hash(value)` as a string literal: what an audit
/// record of the erasure keeps of a `Where` selection, so the trail shows what kind of condition
/// was used without re-storing the values erased. Only names, operators and punctuation stay,
/// and a key or index right after a column (`attributes['user.id']`, `events[1]`); every other
/// token that can
/// carry a value (numbers, strings in any quoting: `'…'`, `$$…$$`, `X'…'`, `U&'…'`, `b'…'`,
/// placeholders) is hashed. A condition that does not tokenize is recorded as `hash` of all of
/// it.
pub fn recorded_form(sql: &str, hash: impl Fn(&str) -> String) -> String {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return format!("'{}'", hash(sql));
    };
    let mut out = String::with_capacity(sql.len() + 32);
    // The last two tokens that are not whitespace.
    let (mut prev, mut prev2): (Option<Token>, Option<Token>) = (None, None);
    for t in tokens {
        let map_key = matches!(prev, Some(Token::LBracket))
            && match &prev2 {
                Some(Token::Word(w)) => w.keyword == Keyword::NoKeyword || w.quote_style.is_some(),
                Some(Token::RBracket) => true,
                _ => false,
            };
        let text = t.to_string();
        match &t {
            Token::Word(_) | Token::Whitespace(_) => out.push_str(&text),
            Token::SingleQuotedString(_) | Token::Number(..) if map_key => out.push_str(&text),
            Token::SingleQuotedString(s)
            | Token::DoubleQuotedString(s)
            | Token::NationalStringLiteral(s)
            | Token::EscapedStringLiteral(s)
            | Token::UnicodeStringLiteral(s)
            | Token::HexStringLiteral(s)
            | Token::SingleQuotedByteStringLiteral(s)
            | Token::DoubleQuotedByteStringLiteral(s)
            | Token::SingleQuotedRawStringLiteral(s)
            | Token::DoubleQuotedRawStringLiteral(s)
            | Token::Number(s, _) => out.push_str(&format!("'{}'", hash(s))),
            Token::DollarQuotedString(d) => out.push_str(&format!("'{}'", hash(&d.value))),
            // Operators and punctuation carry no value; anything else with letters or digits
            // in it might.
            _ if !text.chars().any(char::is_alphanumeric) => out.push_str(&text),
            _ => out.push_str(&format!("'{}'", hash(&text))),
        }
        if !matches!(t, Token::Whitespace(_)) {
            prev2 = prev.take();
            prev = Some(t);
        }
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
        for sneaky in [
            "name = $$u-123$$",
            "name = X'75'",
            "name = U&'u-123'",
            "name = b'u-123'",
            "array_has(['u-123'], name)",
            "name = ?",
        ] {
            let r = recorded_form(sneaky, h);
            assert!(
                !r.contains("u-123") && !r.contains("75'"),
                "{sneaky} -> {r}"
            );
        }
        assert_eq!(
            recorded_form("events[1]['attributes']['to'] = 'a'", h),
            "events[1]['attributes']['to'] = '[VALUE:1]'"
        );
        let bad = "name = 'unterminated";
        assert_eq!(recorded_form(bad, h), format!("'[VALUE:{}]'", bad.len()));
    }
}
