//! A rollup's Delta table: partial rows, unpartitioned (a flush that spans many days writes one
//! file, not one a day), each commit recording which spans it covers as two application
//! transactions: the WAL watermark ([`WATERMARK_APP`]) and the spans table's version
//! ([`SPANS_APP`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::logical_expr::Expr;
use deltalake::DeltaTable;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{StructType, Transaction};
use deltalake::operations::optimize::OptimizeType;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::protocol::SaveMode;

use crate::table::{COMPACT_ZSTD_LEVEL, FLUSH_ZSTD_LEVEL, builder, has_commits, load, table_err};
use crate::{Error, Result};

/// The application id under which a rollup records the WAL watermark its rows cover.
pub const WATERMARK_APP: &str = "custos-rollup-wal";
/// The application id under which a rollup records the spans table version its rows agree with.
pub const SPANS_APP: &str = "custos-rollup-spans";

/// Parquet settings for rollup files: zstd, page statistics, no bloom filters.
fn writer_properties(level: i32) -> deltalake::parquet::file::properties::WriterProperties {
    use deltalake::parquet::basic::{Compression, ZstdLevel};
    let zstd = ZstdLevel::try_new(level).map_or(Compression::SNAPPY, Compression::ZSTD);
    deltalake::parquet::file::properties::WriterProperties::builder()
        .set_compression(zstd)
        .set_max_row_group_row_count(Some(128 * 1024))
        .build()
}

/// What a rollup's rows cover: the spans through WAL record `watermark`, as they stood at spans
/// table version `spans_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Covers {
    /// The WAL watermark.
    pub watermark: u64,
    /// The spans table version.
    pub spans_version: u64,
}

impl Covers {
    fn commit(self) -> CommitProperties {
        CommitProperties::default().with_application_transactions(vec![
            Transaction::new(WATERMARK_APP, self.watermark as i64),
            Transaction::new(SPANS_APP, self.spans_version as i64),
        ])
    }
}

/// One rollup's table.
#[derive(Debug, Clone)]
pub(crate) struct RollupTable {
    table: DeltaTable,
    dir: PathBuf,
    covers: Option<Covers>,
}

async fn read_covers(table: &DeltaTable) -> Result<Option<Covers>> {
    let snapshot = table
        .snapshot()
        .map_err(|e| table_err("cannot read the rollup snapshot", e))?;
    let log = table.log_store();
    let get = |app: &'static str| {
        let log = log.clone();
        async move {
            snapshot
                .transaction_version(log.as_ref(), app)
                .await
                .map_err(|e| table_err("cannot read what the rollup covers", e))
        }
    };
    let (w, s) = (get(WATERMARK_APP).await?, get(SPANS_APP).await?);
    Ok(match (w, s) {
        (Some(w), Some(s)) => Some(Covers {
            watermark: w.max(0) as u64,
            spans_version: s.max(0) as u64,
        }),
        _ => None,
    })
}

impl RollupTable {
    /// Opens the rollup in `dir`, creating it with `schema` when absent.
    pub(crate) async fn open_or_create(dir: &Path, schema: &SchemaRef) -> Result<Self> {
        let table = if has_commits(dir) {
            load(dir).await?
        } else {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("cannot create `{}`", dir.display()), e))?;
            let kernel: StructType = schema
                .as_ref()
                .try_into_kernel()
                .map_err(|e| table_err("cannot convert the rollup schema", e))?;
            builder(dir)?
                .build()
                .map_err(|e| table_err(&format!("cannot open `{}`", dir.display()), e))?
                .create()
                .with_table_name("rollup")
                .with_columns(kernel.fields().cloned())
                .with_save_mode(SaveMode::Ignore)
                .await
                .map_err(|e| table_err(&format!("cannot create `{}`", dir.display()), e))?
        };
        let covers = read_covers(&table).await?;
        Ok(Self {
            table,
            dir: dir.to_path_buf(),
            covers,
        })
    }

    /// Opens an existing rollup for reading; `None` when there is none in `dir`.
    pub(crate) async fn open_existing(dir: &Path) -> Result<Option<Self>> {
        if !has_commits(dir) {
            return Ok(None);
        }
        let table = load(dir).await?;
        let covers = read_covers(&table).await?;
        Ok(Some(Self {
            table,
            dir: dir.to_path_buf(),
            covers,
        }))
    }

    /// What the rows cover; `None` until the first build.
    pub(crate) fn covers(&self) -> Option<Covers> {
        self.covers
    }

    /// A provider pinned to the loaded version.
    pub(crate) async fn provider(&self) -> Result<Arc<dyn TableProvider>> {
        self.table
            .table_provider()
            .await
            .map_err(|e| table_err("cannot build the rollup provider", e))
    }

    /// Appends the partial rows of one flush.
    pub(crate) async fn append(&mut self, batches: Vec<RecordBatch>, covers: Covers) -> Result<()> {
        self.write(batches, SaveMode::Append, None, covers).await
    }

    /// Replaces every row matching `predicate` (all rows when `None`) with `batches`.
    pub(crate) async fn replace(
        &mut self,
        batches: Vec<RecordBatch>,
        predicate: Option<Expr>,
        covers: Covers,
    ) -> Result<()> {
        self.write(batches, SaveMode::Overwrite, predicate, covers)
            .await
    }

    async fn write(
        &mut self,
        batches: Vec<RecordBatch>,
        mode: SaveMode,
        predicate: Option<Expr>,
        covers: Covers,
    ) -> Result<()> {
        let mut write = self
            .table
            .clone()
            .write(batches)
            .with_save_mode(mode)
            .with_writer_properties(writer_properties(FLUSH_ZSTD_LEVEL))
            .with_commit_properties(covers.commit());
        if let Some(p) = predicate {
            write = write.with_replace_where(p);
        }
        self.table = write.await.map_err(|e| {
            table_err(
                &format!("rollup commit in `{}` failed", self.dir.display()),
                e,
            )
        })?;
        self.covers = Some(covers);
        Ok(())
    }

    /// Compacts the rollup's files once there are at least `min_files`; returns whether it did.
    pub(crate) async fn compact(&mut self, min_files: usize, target_bytes: u64) -> Result<bool> {
        let files = self
            .table
            .snapshot()
            .map(|s| s.log_data().iter().count())
            .unwrap_or(0);
        if files < min_files.max(2) {
            return Ok(false);
        }
        let target = std::num::NonZeroU64::new(target_bytes.max(1 << 20))
            .ok_or_else(|| Error::Table("target file size must be positive".into()))?;
        let (table, _) = self
            .table
            .clone()
            .optimize()
            .with_type(OptimizeType::Compact)
            .with_target_size(target)
            .with_writer_properties(writer_properties(COMPACT_ZSTD_LEVEL))
            .with_max_concurrent_tasks(1)
            .await
            .map_err(|e| table_err("rollup compaction failed", e))?;
        self.table = table;
        Ok(true)
    }

    /// Deletes files no commit has referenced for `keep`.
    pub(crate) async fn vacuum(&mut self, keep: std::time::Duration) -> Result<()> {
        let keep = chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::hours(1));
        let (table, _) = self
            .table
            .clone()
            .vacuum()
            .with_mode(VacuumMode::Lite)
            .with_retention_period(keep)
            .with_enforce_retention_duration(false)
            .await
            .map_err(|e| table_err("rollup vacuum failed", e))?;
        self.table = table;
        Ok(())
    }
}
