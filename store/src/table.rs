//! The `spans` table: a Delta Lake table of zstd Parquet files, partitioned by `date`.
//!
//! Every flush is one Delta commit that also records the application transaction
//! `(APP_ID, watermark)`, where the watermark is the highest WAL sequence number the table now holds.
//! The commit is atomic, so the data and the watermark become visible together; replaying the WAL
//! above the watermark after a crash therefore neither loses nor duplicates spans.
//!
//! Inside each flush the rows are sorted by `trace_id`, then `start_time_unix_nano`: spans of one trace
//! sit together (they share most values, so they compress well), and row-group min/max statistics on
//! `trace_id` plus a bloom filter let a trace lookup skip almost every row group.

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::compute::{SortColumn, SortOptions, interleave_record_batch, lexsort_to_indices};
use arrow::record_batch::RecordBatch;
use custos_schema::{PARTITION_COLUMNS, col, spans_schema};
use datafusion::catalog::TableProvider;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{StructType, Transaction};
use deltalake::operations::optimize::OptimizeType;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, FilterOp, FilterValue};

use crate::{Error, Result};

/// The application id under which flushes record their WAL watermark.
pub const APP_ID: &str = "custos-wal";

pub(crate) fn table_err(context: &str, e: impl std::fmt::Display) -> Error {
    Error::Table(format!("{context}: {e}"))
}

/// zstd level of files written by flushes: fast, since compaction rewrites them.
pub const FLUSH_ZSTD_LEVEL: i32 = 1;
/// zstd level of files written by compaction: these are the files kept for days.
pub const COMPACT_ZSTD_LEVEL: i32 = 3;

/// Parquet settings for the files the store writes, at a zstd `level`.
pub fn writer_properties(level: i32) -> WriterProperties {
    let trace = ColumnPath::from(col::TRACE_ID);
    let zstd = ZstdLevel::try_new(level).map_or(Compression::SNAPPY, Compression::ZSTD);
    WriterProperties::builder()
        .set_compression(zstd)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(128 * 1024))
        .set_column_bloom_filter_enabled(trace.clone(), true)
        .set_column_bloom_filter_fpp(trace, 0.01)
        .build()
}

/// The `spans` Delta table and the WAL watermark it holds.
#[derive(Debug, Clone)]
pub struct SpanTable {
    pub(crate) table: DeltaTable,
    pub(crate) watermark: u64,
    pub(crate) dir: PathBuf,
}

pub(crate) async fn read_watermark(table: &DeltaTable) -> Result<u64> {
    let snapshot = table
        .snapshot()
        .map_err(|e| table_err("cannot read the table snapshot", e))?;
    let v = snapshot
        .transaction_version(table.log_store().as_ref(), APP_ID)
        .await
        .map_err(|e| table_err("cannot read the flush watermark", e))?;
    Ok(v.map(|v| v.max(0) as u64).unwrap_or(0))
}

/// Whether `dir/_delta_log` holds at least one commit file.
pub(crate) fn has_commits(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("_delta_log"))
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".json"))
        })
        .unwrap_or(false)
}

fn table_url(dir: &Path) -> Result<url::Url> {
    let s = dir
        .to_str()
        .ok_or_else(|| Error::Table(format!("path `{}` is not valid UTF-8", dir.display())))?;
    deltalake::ensure_table_uri(s).map_err(|e| table_err(&format!("bad table path `{s}`"), e))
}

/// A builder of the table in `dir`, written through [`Synced`](crate::synced::Synced): every file
/// durable before the write returns.
pub(crate) fn builder(dir: &Path) -> Result<deltalake::DeltaTableBuilder> {
    let url = table_url(dir)?;
    let store: Arc<dyn deltalake::ObjectStore> = Arc::new(crate::synced::Synced::new());
    Ok(deltalake::DeltaTableBuilder::from_url(url.clone())
        .map_err(|e| table_err(&format!("cannot open table `{}`", dir.display()), e))?
        .with_storage_backend(store, url))
}

/// The table in `dir`, loaded.
pub(crate) async fn load(dir: &Path) -> Result<DeltaTable> {
    builder(dir)?
        .load()
        .await
        .map_err(|e| table_err(&format!("cannot open table `{}`", dir.display()), e))
}

impl SpanTable {
    /// Opens the table in `dir`, creating the directory and an empty table when absent.
    pub async fn open_or_create(dir: &Path) -> Result<Self> {
        let table = if has_commits(dir) {
            load(dir).await?
        } else {
            // A new table: build the handle without loading a log that does not exist yet.
            builder(dir)?
                .build()
                .map_err(|e| table_err(&format!("cannot open table `{}`", dir.display()), e))?
        };
        let table = if table.version().is_some() {
            table
        } else {
            let schema: StructType = spans_schema()
                .as_ref()
                .try_into_kernel()
                .map_err(|e| table_err("cannot convert the spans schema", e))?;
            table
                .create()
                .with_table_name("spans")
                .with_columns(schema.fields().cloned())
                .with_partition_columns(PARTITION_COLUMNS.iter().copied())
                .with_save_mode(SaveMode::Ignore)
                .await
                .map_err(|e| table_err(&format!("cannot create table `{}`", dir.display()), e))?
        };
        let table = evolve(table, dir).await?;
        let watermark = read_watermark(&table).await?;
        Ok(Self {
            table,
            watermark,
            dir: dir.to_path_buf(),
        })
    }

    /// Opens an existing table without creating anything; `None` when there is no table yet.
    pub async fn open_existing(dir: &Path) -> Result<Option<Self>> {
        if !has_commits(dir) {
            return Ok(None);
        }
        let table = load(dir).await?;
        if table.version().is_none() {
            return Ok(None);
        }
        let watermark = read_watermark(&table).await?;
        Ok(Some(Self {
            table,
            watermark,
            dir: dir.to_path_buf(),
        }))
    }

    /// The highest WAL sequence number the table holds.
    pub fn watermark(&self) -> u64 {
        self.watermark
    }

    /// The loaded table version.
    pub fn version(&self) -> Option<u64> {
        self.table.version()
    }

    /// Whether a table with at least one commit exists in `dir`.
    pub fn exists(dir: &Path) -> bool {
        has_commits(dir)
    }

    /// The newest committed version, from a listing of the log (nothing is loaded).
    pub async fn latest_version(&self) -> Result<u64> {
        self.table
            .get_latest_version()
            .await
            .map_err(|e| table_err("cannot list the table log", e))
    }

    /// Re-reads the table log, picking up commits made by anyone.
    pub async fn reload(&mut self) -> Result<()> {
        self.table
            .update_incremental(None)
            .await
            .map_err(|e| table_err("cannot reload the table", e))?;
        self.watermark = read_watermark(&self.table).await?;
        Ok(())
    }

    /// A DataFusion provider pinned to the loaded version; `None` before the table exists.
    pub async fn provider(&self) -> Result<Option<Arc<dyn TableProvider>>> {
        if self.table.version().is_none() {
            return Ok(None);
        }
        let p = self
            .table
            .table_provider()
            .await
            .map_err(|e| table_err("cannot build the table provider", e))?;
        Ok(Some(p))
    }

    /// Commits `batches` together with the watermark `through` in one transaction.
    pub async fn append(&mut self, batches: Vec<RecordBatch>, through: u64) -> Result<()> {
        let batch = sort_for_storage(&batches)?;
        // A table created by an older version has columns added later at the end: write in the
        // table's column order.
        let batch = match self.table.snapshot() {
            Ok(snapshot) => {
                let target = snapshot.snapshot().arrow_schema();
                let names: Vec<&str> = target.fields().iter().map(|f| f.name().as_str()).collect();
                let current: Vec<&str> = batch
                    .schema_ref()
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect();
                if names == current {
                    batch
                } else {
                    let indices = names
                        .iter()
                        .map(|n| batch.schema_ref().index_of(n))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| Error::Codec(e.to_string()))?;
                    batch
                        .project(&indices)
                        .map_err(|e| Error::Codec(e.to_string()))?
                }
            }
            Err(_) => batch,
        };
        let commit = CommitProperties::default()
            .with_application_transaction(Transaction::new(APP_ID, through as i64));
        let table = self
            .table
            .clone()
            .write(vec![batch])
            .with_save_mode(SaveMode::Append)
            .with_writer_properties(writer_properties(FLUSH_ZSTD_LEVEL))
            .with_commit_properties(commit)
            .await
            .map_err(|e| table_err("flush commit failed", e))?;
        self.table = table;
        self.watermark = through;
        // Every file, the commit last, was synced as it was written (`Synced`): the WAL records
        // this commit covers may be deleted next.
        Ok(())
    }

    /// Rewrites partitions that hold at least `min_files` files into files of about `target_bytes`
    /// by bin-packing; each flush's rows stay sorted by trace. Returns whether anything was
    /// compacted. The partition flushes are writing to is compacted too: appends and one
    /// compaction at a time are safe together.
    pub async fn compact(&mut self, min_files: usize, target_bytes: u64) -> Result<bool> {
        let mut did = false;
        for (date, files) in self.files_per_partition() {
            if files < min_files.max(2) {
                continue;
            }
            let filters = [(col::DATE, FilterOp::Eq, FilterValue::Scalar(date.as_str()))];
            let target = NonZeroU64::new(target_bytes.max(1 << 20))
                .ok_or_else(|| Error::Table("target file size must be positive".into()))?;
            let (table, metrics) = self
                .table
                .clone()
                .optimize()
                .with_filters(&filters)
                .with_type(OptimizeType::Compact)
                .with_target_size(target)
                .with_writer_properties(writer_properties(COMPACT_ZSTD_LEVEL))
                .with_max_concurrent_tasks(1)
                .await
                .map_err(|e| table_err(&format!("compaction of partition `{date}` failed"), e))?;
            tracing::info!(
                partition = %date,
                added = metrics.num_files_added,
                removed = metrics.num_files_removed,
                "compacted partition"
            );
            self.table = table;
            did = true;
        }
        if did {
            self.watermark = read_watermark(&self.table).await?;
        }
        Ok(did)
    }

    /// Deletes partitions older than `days` days (their files go at the next [`Self::vacuum`]).
    /// Returns the first day kept when anything was deleted.
    pub async fn apply_retention(&mut self, days: u32) -> Result<Option<String>> {
        let cutoff = chrono::Utc::now().date_naive() - chrono::Days::new(u64::from(days));
        let cutoff = cutoff.format("%Y-%m-%d").to_string();
        let old = self
            .files_per_partition()
            .into_iter()
            .any(|(d, _)| d.as_str() < cutoff.as_str());
        if old {
            let (table, metrics) = self
                .table
                .clone()
                .delete()
                .with_predicate(format!("{} < '{cutoff}'", col::DATE))
                .await
                .map_err(|e| table_err("retention delete failed", e))?;
            tracing::info!(removed_files = metrics.num_removed_files, before = %cutoff, "applied retention");
            self.table = table;
        }
        self.watermark = read_watermark(&self.table).await?;
        Ok(old.then_some(cutoff))
    }

    /// Deletes data files that no commit has referenced for longer than `keep`: those replaced
    /// by compaction, retention and erasure (Lite mode: only files the log names, so files of a
    /// commit in flight are never touched).
    pub async fn vacuum(&mut self, keep: std::time::Duration) -> Result<()> {
        let keep = chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::hours(1));
        self.vacuum_with(VacuumMode::Lite, keep).await
    }

    /// Deletes every file no commit references that was replaced (or written) before
    /// `before_unix_ms`: tombstones and files a crashed flush left (Full mode lists the
    /// directory). Only safe while no commit is in flight: callers hold the table lock.
    pub async fn vacuum_before(&mut self, before_unix_ms: u64) -> Result<()> {
        let now = chrono::Utc::now().timestamp_millis();
        let age = now.saturating_sub(i64::try_from(before_unix_ms).unwrap_or(now));
        self.vacuum_with(VacuumMode::Full, chrono::Duration::milliseconds(age.max(0)))
            .await
    }

    async fn vacuum_with(&mut self, mode: VacuumMode, keep: chrono::Duration) -> Result<()> {
        let (table, metrics) = self
            .table
            .clone()
            .vacuum()
            .with_mode(mode)
            .with_retention_period(keep)
            .with_enforce_retention_duration(false)
            .await
            .map_err(|e| table_err("vacuum failed", e))?;
        if !metrics.files_deleted.is_empty() {
            tracing::info!(
                files = metrics.files_deleted.len(),
                "vacuumed unreferenced files"
            );
        }
        self.table = table;
        self.watermark = read_watermark(&self.table).await?;
        Ok(())
    }

    /// Active data files per `date` partition, oldest partition first.
    pub fn files_per_partition(&self) -> Vec<(String, usize)> {
        let Ok(snapshot) = self.table.snapshot() else {
            return Vec::new();
        };
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for f in snapshot.log_data().iter() {
            let date = f
                .partition_values_map()
                .get(col::DATE)
                .cloned()
                .flatten()
                .unwrap_or_default();
            *counts.entry(date).or_default() += 1;
        }
        counts.into_iter().collect()
    }

    /// Paths of the active data files, relative to the table directory (Delta's `add.path`,
    /// URL-decoded): what an external reader must read, and nothing a compaction removed.
    pub fn data_files(&self) -> Vec<String> {
        let Ok(snapshot) = self.table.snapshot() else {
            return Vec::new();
        };
        snapshot
            .log_data()
            .iter()
            .map(|f| f.object_store_path().to_string())
            .collect()
    }

    /// Total bytes of active data files.
    pub fn data_bytes(&self) -> u64 {
        let Ok(snapshot) = self.table.snapshot() else {
            return 0;
        };
        snapshot
            .log_data()
            .iter()
            .map(|f| f.size().max(0) as u64)
            .sum()
    }
}

/// Adds the columns of [`spans_schema`] that a table created by an older version lacks (a
/// metadata-only commit; old files read them as NULL). Columns are only ever added, never removed
/// or retyped, so this is the whole schema evolution.
async fn evolve(table: DeltaTable, dir: &Path) -> Result<DeltaTable> {
    let Ok(snapshot) = table.snapshot() else {
        return Ok(table);
    };
    let existing = snapshot.snapshot().arrow_schema();
    let missing: Vec<arrow::datatypes::Field> = spans_schema()
        .fields()
        .iter()
        .filter(|f| existing.field_with_name(f.name()).is_err())
        .map(|f| f.as_ref().clone())
        .collect();
    if missing.is_empty() {
        return Ok(table);
    }
    let names: Vec<String> = missing.iter().map(|f| format!("`{}`", f.name())).collect();
    let missing = arrow::datatypes::Schema::new(missing);
    let kernel: StructType = (&missing)
        .try_into_kernel()
        .map_err(|e| table_err("cannot convert the added columns", e))?;
    tracing::info!(
        "adding columns {} to the table in `{}` (written by an older version)",
        names.join(", "),
        dir.display()
    );
    table
        .add_columns()
        .with_fields(kernel.fields().cloned().collect::<Vec<_>>())
        .await
        .map_err(|e| {
            table_err(
                &format!(
                    "cannot add columns {} to `{}`",
                    names.join(", "),
                    dir.display()
                ),
                e,
            )
        })
}

/// Sorts a flush by `trace_id`, then `start_time_unix_nano`, into one batch.
///
/// Only the two key columns are concatenated; the rows are gathered straight from the memtable's
/// batches, so the flush holds one extra copy of the data, not two.
fn sort_for_storage(batches: &[RecordBatch]) -> Result<RecordBatch> {
    let schema = spans_schema();
    let codec = |e: arrow::error::ArrowError| Error::Codec(e.to_string());
    let key = |name: &str| -> Result<SortColumn> {
        let i = schema.index_of(name).map_err(codec)?;
        let parts: Vec<&dyn arrow::array::Array> =
            batches.iter().map(|b| b.column(i).as_ref()).collect();
        Ok(SortColumn {
            values: arrow::compute::concat(&parts).map_err(codec)?,
            options: Some(SortOptions::default()),
        })
    };
    let order = lexsort_to_indices(
        &[key(col::TRACE_ID)?, key(col::START_TIME_UNIX_NANO)?],
        None,
    )
    .map_err(codec)?;
    let mut starts = Vec::with_capacity(batches.len());
    let mut total = 0usize;
    for b in batches {
        starts.push(total);
        total += b.num_rows();
    }
    let rows: Vec<(usize, usize)> = order
        .values()
        .iter()
        .map(|&g| {
            let g = g as usize;
            let b = starts.partition_point(|s| *s <= g).saturating_sub(1);
            (b, g - starts[b])
        })
        .collect();
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    interleave_record_batch(&refs, &rows).map_err(codec)
}
