//! Rollups: tables of partial rows the store keeps beside `spans`, so that questions about runs
//! read one row per run and flush instead of every span.
//!
//! A rollup is defined outside the store ([`Summarize`]: the analytics crate turns spans into
//! partial rows with SQL, and its views merge them). The store keeps the rows in step with the
//! spans:
//!
//! - **at flush**: the flushed batches are summarized and appended in a commit of their own,
//!   before readers are switched to the new spans version, so a reader sees both or neither.
//! - **when spans change in place** (erasure, retention, run ids folded by maintenance): the
//!   affected days are summarized again from the table and replaced, before readers switch.
//! - **on open** (an upgrade, a definition or price change, a crash between the two commits): a
//!   rollup covers the table only if it records the table's WAL watermark and no commit since the
//!   spans version it records changed data (compaction and vacuum do not); otherwise it is rebuilt
//!   from the table in the background.
//!
//! A reader ([`RollupProvider`]) takes one snapshot: where the rollup covers the table it reads
//! the rollup's rows plus the partial rows of the memtable tail; where it does not, the partial
//! rows of every span of the snapshot. Both give the same answer; the first reads fewer rows.
//! Rows keep the run ids as stored; readers apply the run-id aliases to them as to spans.
//!
//! Each definition lives in `DATA/rollup/NAME-FINGERPRINT/`, so a changed definition (or price
//! table) starts a fresh table and the old one is deleted by the next maintenance.

mod provider;
mod table;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use custos_schema::col;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionContext, col as column, lit};

pub use provider::RollupProvider;
pub use table::Covers;
pub(crate) use table::RollupTable;

use crate::{Error, Result, SpanTable, Store};

/// A rollup's definition: how spans become partial rows.
#[async_trait]
pub trait Summarize: Send + Sync + fmt::Debug {
    /// The rollup's name (part of its directory).
    fn name(&self) -> &str;
    /// Changes whenever the rows for the same spans would: the definition and its inputs (the
    /// price table). Letters, digits and `-` only.
    fn fingerprint(&self) -> &str;
    /// The rows' schema as stored (no view types). It has `date`, `run_id`, `trace_id` and
    /// `workflow` columns.
    fn schema(&self) -> SchemaRef;
    /// The plan that computes the partial rows of `spans` (a provider with the `spans` schema),
    /// of the days in `dates` only when given.
    async fn plan(
        &self,
        state: &dyn Session,
        spans: Arc<dyn TableProvider>,
        dates: Option<&[String]>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>>;
}

/// A rollup as readers see it in a [`crate::Snapshot`].
#[derive(Clone)]
pub struct RollupView {
    /// [`Summarize::name`].
    pub name: String,
    /// [`Summarize::fingerprint`].
    pub fingerprint: String,
    /// The rollup's table at the version that agrees with the snapshot's spans.
    pub table: Option<Arc<dyn TableProvider>>,
    /// Whether the table's rows cover exactly the snapshot's table spans.
    pub covering: bool,
}

/// What changed in place in the spans table.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// The spans of these days were rewritten.
    Dates(BTreeSet<String>),
    /// The days before this one were deleted.
    Before(String),
}

/// A rollup the store keeps.
pub(crate) struct Rollup {
    def: Arc<dyn Summarize>,
    table: Option<RollupTable>,
    covering: bool,
}

impl fmt::Debug for Rollup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rollup")
            .field("name", &self.def.name())
            .field("covering", &self.covering)
            .finish_non_exhaustive()
    }
}

fn dir_of(data_dir: &Path, def: &dyn Summarize) -> PathBuf {
    data_dir
        .join("rollup")
        .join(format!("{}-{}", def.name(), def.fingerprint()))
}

/// Whether any commit of the spans table in `dir` after `from` through `to` changed data (an
/// `add` or `remove` with `dataChange`); `true` when the log cannot tell (a commit file is gone).
fn changed_since(dir: &Path, from: u64, to: u64) -> bool {
    if to < from {
        return true;
    }
    (from + 1..=to).any(|v| {
        let path = dir.join("_delta_log").join(format!("{v:020}.json"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            return true;
        };
        text.lines().any(|line| {
            let Ok(action) = serde_json::from_str::<serde_json::Value>(line) else {
                return true;
            };
            ["add", "remove"].iter().any(|kind| {
                action
                    .get(kind)
                    .is_some_and(|a| a.get("dataChange") != Some(&serde_json::Value::Bool(false)))
            })
        })
    })
}

/// Whether `rollup` holds exactly the partial rows of `spans` as loaded.
fn covers(spans: &SpanTable, rollup: &RollupTable) -> bool {
    let Some(c) = rollup.covers() else {
        return false;
    };
    let version = spans.version().unwrap_or(0);
    c.watermark == spans.watermark() && !changed_since(&spans.dir, c.spans_version, version)
}

fn covers_of(spans: &SpanTable) -> Covers {
    Covers {
        watermark: spans.watermark(),
        spans_version: spans.version().unwrap_or(0),
    }
}

/// Runs `def`'s plan over `spans` (of `dates`) and collects the rows, cast to the stored schema.
async fn summarize(
    def: &dyn Summarize,
    spans: Arc<dyn TableProvider>,
    dates: Option<&[String]>,
) -> Result<Vec<RecordBatch>> {
    let ctx = SessionContext::new();
    let state = ctx.state();
    let err = |e: datafusion::error::DataFusionError| {
        Error::Table(format!(
            "cannot summarize spans for rollup `{}`: {e}",
            def.name()
        ))
    };
    let plan = def.plan(&state, spans, dates).await.map_err(err)?;
    let plan = provider::conform(plan, &def.schema()).map_err(err)?;
    let batches = datafusion::physical_plan::collect(plan, ctx.task_ctx())
        .await
        .map_err(err)?;
    if batches.is_empty() {
        return Ok(vec![RecordBatch::new_empty(def.schema())]);
    }
    Ok(batches)
}

fn date_predicate(change: &Change) -> Expr {
    match change {
        Change::Dates(dates) => {
            column(col::DATE).in_list(dates.iter().map(|d| lit(d.clone())).collect(), false)
        }
        Change::Before(day) => column(col::DATE).lt(lit(day.clone())),
    }
}

impl Store {
    /// Keeps the rollup `def` from now on: opens (or, when writable, creates) its table and, when
    /// the table does not cover the spans yet, rebuilds it in the background. Readers fall back to
    /// the spans until it does. Attaching a definition of the same name again replaces it.
    pub async fn attach_rollup(&self, def: Arc<dyn Summarize>) -> Result<()> {
        let guard = self.inner.table.lock().await;
        let dir = dir_of(&self.inner.options.data_dir, def.as_ref());
        let writable = self.is_writable();
        let table = if writable {
            Some(RollupTable::open_or_create(&dir, &def.schema()).await?)
        } else {
            RollupTable::open_existing(&dir).await?
        };
        let covering = match (guard.as_ref(), table.as_ref()) {
            (Some(spans), Some(rollup)) => covers(spans, rollup),
            _ => false,
        };
        {
            let mut rollups = self.inner.rollups.lock().await;
            rollups.retain(|r| r.def.name() != def.name());
            rollups.push(Rollup {
                def,
                table,
                covering,
            });
        }
        if let Some(spans) = guard.as_ref() {
            self.show(spans).await?;
        }
        drop(guard);
        if writable && !covering {
            let store = self.clone();
            tokio::spawn(async move {
                if let Err(e) = store.rebuild_rollups().await {
                    tracing::error!(error = %e, "rebuilding a rollup failed; readers use the spans");
                }
            });
        }
        Ok(())
    }

    /// Rebuilds every rollup that does not cover the table, now.
    pub async fn rebuild_rollups(&self) -> Result<()> {
        let guard = self.inner.table.lock().await;
        let Some(spans) = guard.as_ref() else {
            return Ok(());
        };
        let mut changed = false;
        {
            let mut rollups = self.inner.rollups.lock().await;
            for r in rollups.iter_mut().filter(|r| !r.covering) {
                let Some(table) = r.table.as_mut() else {
                    continue;
                };
                let started = std::time::Instant::now();
                let batches = match spans.provider().await? {
                    Some(p) => summarize(r.def.as_ref(), p, None).await?,
                    None => vec![RecordBatch::new_empty(r.def.schema())],
                };
                let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                table.replace(batches, None, covers_of(spans)).await?;
                r.covering = true;
                changed = true;
                tracing::info!(
                    rollup = r.def.name(),
                    rows,
                    ms = started.elapsed().as_millis() as u64,
                    "rebuilt rollup from the table"
                );
            }
        }
        if changed {
            self.show(spans).await?;
        }
        Ok(())
    }

    /// Appends the partial rows of a flush just committed to `spans`. A rollup that fails stops
    /// covering (readers use the spans) until maintenance rebuilds it.
    pub(crate) async fn roll_flush(&self, spans: &SpanTable, batches: &[RecordBatch]) {
        let mut rollups = self.inner.rollups.lock().await;
        for r in rollups.iter_mut().filter(|r| r.covering) {
            let Some(table) = r.table.as_mut() else {
                continue;
            };
            let result = async {
                let schema = batches
                    .first()
                    .map(|b| b.schema())
                    .unwrap_or_else(custos_schema::spans_schema);
                let mem = MemTable::try_new(schema, vec![batches.to_vec()])
                    .map_err(|e| Error::Table(e.to_string()))?;
                let rows = summarize(r.def.as_ref(), Arc::new(mem), None).await?;
                table.append(rows, covers_of(spans)).await
            }
            .await;
            if let Err(e) = result {
                tracing::error!(rollup = r.def.name(), error = %e, "rollup append failed; readers use the spans until it is rebuilt");
                r.covering = false;
            }
        }
    }

    /// Brings every covering rollup in step with a change made in place to `spans`.
    pub(crate) async fn roll_change(&self, spans: &SpanTable, change: Change) {
        let mut rollups = self.inner.rollups.lock().await;
        for r in rollups.iter_mut().filter(|r| r.covering) {
            let Some(table) = r.table.as_mut() else {
                continue;
            };
            let result = async {
                let rows = match (&change, spans.provider().await?) {
                    (Change::Dates(dates), Some(p)) => {
                        let dates: Vec<String> = dates.iter().cloned().collect();
                        summarize(r.def.as_ref(), p, Some(&dates)).await?
                    }
                    _ => vec![RecordBatch::new_empty(r.def.schema())],
                };
                table
                    .replace(rows, Some(date_predicate(&change)), covers_of(spans))
                    .await
            }
            .await;
            if let Err(e) = result {
                tracing::error!(rollup = r.def.name(), error = %e, "rollup update failed; readers use the spans until it is rebuilt");
                r.covering = false;
            }
        }
    }

    /// Maintenance of the rollups: compaction, vacuum (files replaced `keep` ago), rebuilding
    /// those that stopped covering, and removing tables of definitions no longer attached.
    pub(crate) async fn maintain_rollups(&self, keep: std::time::Duration) -> Result<()> {
        let mut rebuild = false;
        let mut kept: BTreeSet<PathBuf> = BTreeSet::new();
        {
            let mut rollups = self.inner.rollups.lock().await;
            let o = &self.inner.options;
            for r in rollups.iter_mut() {
                kept.insert(dir_of(&o.data_dir, r.def.as_ref()));
                let Some(table) = r.table.as_mut() else {
                    continue;
                };
                table
                    .compact(o.compact_min_files, o.target_file_bytes)
                    .await?;
                table.vacuum(keep).await?;
                rebuild |= !r.covering;
            }
            if !rollups.is_empty() {
                remove_others(&o.data_dir.join("rollup"), &kept);
            }
        }
        if rebuild {
            let store = self.clone();
            tokio::spawn(async move {
                if let Err(e) = store.rebuild_rollups().await {
                    tracing::error!(error = %e, "rebuilding a rollup failed; readers use the spans");
                }
            });
        }
        Ok(())
    }

    /// Deletes rollup files replaced at least `keep` ago (an erasure without grace: none).
    pub(crate) async fn vacuum_rollups(&self, keep: std::time::Duration) -> Result<()> {
        let mut rollups = self.inner.rollups.lock().await;
        for table in rollups.iter_mut().filter_map(|r| r.table.as_mut()) {
            table.vacuum(keep).await?;
        }
        Ok(())
    }

    /// What readers see of the rollups, for [`Store::show`].
    pub(crate) async fn rollup_views(&self) -> Result<Vec<RollupView>> {
        let rollups = self.inner.rollups.lock().await;
        let mut out = Vec::with_capacity(rollups.len());
        for r in rollups.iter() {
            let table = match &r.table {
                Some(t) => Some(t.provider().await?),
                None => None,
            };
            out.push(RollupView {
                name: r.def.name().to_string(),
                fingerprint: r.def.fingerprint().to_string(),
                covering: r.covering && table.is_some(),
                table,
            });
        }
        Ok(out)
    }
}

/// Deletes the rollup tables in `root` other than `kept` (definitions no longer in use).
fn remove_others(root: &Path, kept: &BTreeSet<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() && !kept.contains(&path) {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(dir = %path.display(), "removed a rollup no longer in use")
                }
                Err(e) => {
                    tracing::warn!(dir = %path.display(), error = %e, "cannot remove an old rollup")
                }
            }
        }
    }
}
