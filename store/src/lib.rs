//! The durable span store: WAL → memtable → Delta Lake table, and the `TableProvider` that reads
//! memtable and table as one.
//!
//! This crate owns everything between "a batch of normalized spans was accepted" and "SQL can read
//! it":
//!
//! - [`wal`]: the write-ahead log, its on-disk format and invariants. [`Store::append`] returns only
//!   after the batch is in the log and synced; concurrent appends share one sync (group commit).
//! - [`memtable`]: acknowledged batches not yet in the table, readable at once.
//! - [`table`]: the `spans` Delta Lake table (Parquet inside): exactly-once flushes keyed by the WAL
//!   sequence number (Delta's application transaction), compaction and retention.
//! - [`erase`]: erasure of chosen spans (a delete commit that names no erased value, then the
//!   removal of exactly the replaced files and the log entries describing them).
//! - [`provider`]: [`SpansProvider`], the DataFusion `TableProvider` over a consistent pair of table
//!   snapshot and memtable tail: no duplicates and no gaps while a flush is under way.
//! - [`runs`]: run identity across a trace's spans (children without a run id take their root's),
//!   resolved in the memtable, through aliases for the table, and folded into the files.
//!
//! # The consistency rule
//!
//! The table records, in the same commit as the data, the highest WAL sequence number it holds (its
//! *watermark*). A reader takes, under one lock, a table snapshot and the memtable entries above
//! that snapshot's watermark. A flush commits first and only then, under the same lock, swaps in the
//! new snapshot and drops the entries it covers. Replay on start skips records at or below the
//! watermark, so a crash between commit and WAL truncation duplicates nothing.

pub mod codec;
pub mod erase;
mod flush;
pub mod health;
pub mod memtable;
pub mod provider;
pub mod rollup;
pub mod runs;
mod synced;
pub mod table;
pub mod wal;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use tokio::sync::{Notify, oneshot};

pub use erase::{Erased, Selection};
pub use provider::SpansProvider;
pub use table::SpanTable;

use memtable::Memtable;
use wal::{Wal, WalOptions};
use writer::{WalCmd, wal_writer};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system operation failed.
    #[error("{context}: {cause}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        cause: std::io::Error,
    },
    /// The WAL or table holds data that fails its integrity checks.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// A WAL payload could not be encoded or decoded.
    #[error("codec error: {0}")]
    Codec(String),
    /// A record is larger than the WAL allows.
    #[error("{0}")]
    TooLarge(String),
    /// The Delta table reported an error.
    #[error("table error: {0}")]
    Table(String),
    /// The memory budget is used up; retry after the given delay.
    #[error("memory budget of {limit} bytes is used up; retry in {retry_after:?}")]
    Overloaded {
        /// The configured budget.
        limit: usize,
        /// A suggested delay before retrying.
        retry_after: Duration,
    },
    /// An erasure's selection is not a usable predicate.
    #[error("{0}")]
    Predicate(String),
    /// Another process holds the data directory.
    #[error("data directory `{0}` is in use by another custos process (lock file `{0}/LOCK`)")]
    Locked(PathBuf),
    /// The store is shutting down or its WAL writer stopped after an error.
    #[error("store is not accepting writes: {0}")]
    Closed(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, cause: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            cause,
        }
    }
}

/// Result type of the store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runtime options of the store, validated by the caller's configuration layer.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The data directory: `wal/` and `spans/` live inside.
    pub data_dir: PathBuf,
    /// Bytes the memtable and requests in flight may use together before writes are refused.
    pub memory_budget_bytes: usize,
    /// Flush the memtable at least this often.
    pub flush_interval: Duration,
    /// Flush as soon as the memtable holds this many bytes.
    pub flush_bytes: usize,
    /// How often background maintenance (compaction, retention) runs.
    pub maintenance_interval: Duration,
    /// Compact a partition once it holds at least this many files.
    pub compact_min_files: usize,
    /// Target size of a compacted file.
    pub target_file_bytes: u64,
    /// Delete spans whose `date` is older than this many days; `None` keeps everything.
    pub retention_days: Option<u32>,
    /// Sync the WAL before acknowledging (only benchmarks turn this off).
    pub wal_sync: bool,
    /// How long the files an erasure replaced stay on disk for readers still using them.
    pub erase_grace: Duration,
}

impl StoreOptions {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            memory_budget_bytes: 1 << 30,
            flush_interval: Duration::from_secs(10),
            flush_bytes: 128 << 20,
            maintenance_interval: Duration::from_secs(300),
            compact_min_files: 16,
            target_file_bytes: 128 << 20,
            retention_days: None,
            wal_sync: true,
            erase_grace: Duration::from_secs(3600),
        }
    }
}

/// Receives the duration of each WAL write+sync in seconds (for a latency histogram).
pub type SyncObserver = Box<dyn Fn(f64) + Send + Sync>;

/// Counters the server exports on `/metrics`.
#[derive(Default)]
pub struct StoreStats {
    /// Called with each WAL write+sync duration, once set.
    pub sync_observer: std::sync::OnceLock<SyncObserver>,
    /// Bytes written to the WAL.
    pub wal_bytes: AtomicU64,
    /// WAL syncs performed.
    pub wal_syncs: AtomicU64,
    /// Total time spent in WAL write+sync, in microseconds.
    pub wal_sync_micros: AtomicU64,
    /// Records appended.
    pub wal_records: AtomicU64,
    /// Flushes committed.
    pub flushes: AtomicU64,
    /// Total flush time in microseconds.
    pub flush_micros: AtomicU64,
    /// Duration of the last flush in microseconds.
    pub last_flush_micros: AtomicU64,
    /// Unix time of the last flush in seconds.
    pub last_flush_unix: AtomicU64,
    /// Flushes that failed (and will be retried).
    pub flush_errors: AtomicU64,
    /// Compactions committed.
    pub compactions: AtomicU64,
}

/// A consistent read view: a table snapshot and the memtable batches it does not hold.
#[derive(Clone)]
pub struct Snapshot {
    /// The table at some version; `None` before the first flush of a new directory.
    pub table: Option<Arc<dyn TableProvider>>,
    /// The table's watermark.
    pub watermark: u64,
    /// Memtable batches above the watermark.
    pub mem: Vec<RecordBatch>,
    /// Run ids the table's spans take from roots that arrived after them ([`runs`]).
    pub aliases: Option<runs::Aliases>,
    /// The rollups at the versions that agree with `table` ([`rollup`]).
    pub rollups: Vec<rollup::RollupView>,
}

struct View {
    memtable: Memtable,
    runs: runs::RunIds,
    table: Option<Arc<dyn TableProvider>>,
    watermark: u64,
    rollups: Vec<rollup::RollupView>,
}

struct Inner {
    options: StoreOptions,
    view: Mutex<View>,
    wal_tx: Mutex<Option<std::sync::mpsc::Sender<WalCmd>>>,
    inflight: AtomicUsize,
    mem_bytes: AtomicUsize,
    flush_wanted: Notify,
    stats: StoreStats,
    table: tokio::sync::Mutex<Option<SpanTable>>,
    /// The rollups kept beside the table; locked only while `table` is.
    rollups: tokio::sync::Mutex<Vec<rollup::Rollup>>,
    /// Wakes the background loops when the store closes.
    closing: Notify,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    lock: Mutex<Option<File>>,
    /// What is failing now (`/readyz`).
    health: health::Tracker,
}

/// The span store. Cheap to clone; all clones share one store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// Memory reserved for a request in flight; released on drop.
pub struct Admission {
    inner: Arc<Inner>,
    bytes: usize,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.inner.inflight.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

fn lock_data_dir(dir: &Path) -> Result<File> {
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::io(
            format!("cannot create data directory `{}`", dir.display()),
            e,
        )
    })?;
    let path = dir.join("LOCK");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("cannot open `{}`", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(Error::io(format!("cannot lock `{}`", path.display()), e))
        }
    }
}

impl Store {
    /// `custos wal check`: reads the WAL of `data_dir`, skipping damage, without changing
    /// anything (a running server may hold the directory).
    pub fn check_wal(data_dir: &Path) -> Result<wal::salvage::Report> {
        wal::salvage::check(&data_dir.join("wal"))
    }

    /// `custos wal salvage`: keeps every readable WAL record above the table's watermark in a new
    /// log and sets the damaged one aside ([`wal::salvage::salvage`]). Takes the data
    /// directory's lock: the server must be stopped.
    pub async fn salvage_wal(data_dir: &Path) -> Result<wal::salvage::Salvaged> {
        let _lock = lock_data_dir(data_dir)?;
        let watermark = match SpanTable::open_existing(&data_dir.join("spans")).await? {
            Some(t) => t.watermark(),
            None => 0,
        };
        let dir = data_dir.join("wal");
        tokio::task::spawn_blocking(move || wal::salvage::salvage(&dir, watermark))
            .await
            .map_err(|e| Error::Closed(format!("WAL salvage task failed: {e}")))?
    }

    /// Opens the store for writing: takes the directory lock, opens (or creates) the table, replays
    /// the WAL above the table's watermark into the memtable, and starts the WAL writer and the
    /// background flush and maintenance tasks. Must be called inside a tokio runtime.
    pub async fn open(options: StoreOptions) -> Result<Self> {
        let lock = lock_data_dir(&options.data_dir)?;
        let table = SpanTable::open_or_create(&options.data_dir.join("spans")).await?;
        let watermark = table.watermark();
        let wal_dir = options.data_dir.join("wal");
        let wal_opts = WalOptions {
            sync: options.wal_sync,
            ..WalOptions::default()
        };
        let dir = wal_dir.clone();
        let (wal, replay) =
            tokio::task::spawn_blocking(move || Wal::open(&dir, watermark, wal_opts))
                .await
                .map_err(|e| Error::Closed(format!("WAL open task failed: {e}")))??;
        let mut memtable = Memtable::default();
        let mut runs = runs::RunIds::load(&options.data_dir)?;
        for rec in replay {
            for batch in codec::decode(&rec.payload)? {
                runs.push(&mut memtable, rec.seq, batch, Some(rec.payload.len()));
            }
        }
        if !memtable.is_empty() {
            tracing::info!(
                rows = memtable.rows(),
                after = watermark,
                "replayed acknowledged spans from the WAL"
            );
        }
        let provider = table.provider().await?;
        let (tx, rx) = std::sync::mpsc::channel();
        let inner = Arc::new(Inner {
            mem_bytes: AtomicUsize::new(memtable.bytes()),
            view: Mutex::new(View {
                memtable,
                runs,
                table: provider,
                watermark,
                rollups: Vec::new(),
            }),
            wal_tx: Mutex::new(Some(tx)),
            inflight: AtomicUsize::new(0),
            flush_wanted: Notify::new(),
            stats: StoreStats::default(),
            table: tokio::sync::Mutex::new(Some(table)),
            rollups: tokio::sync::Mutex::new(Vec::new()),
            options,
            closing: Notify::new(),
            writer: Mutex::new(None),
            lock: Mutex::new(Some(lock)),
            health: health::Tracker::default(),
        });
        let writer = Arc::clone(&inner);
        let handle = std::thread::Builder::new()
            .name("custos-wal".into())
            .spawn(move || wal_writer(writer, wal, rx))
            .map_err(|e| Error::io("cannot start the WAL writer thread", e))?;
        if let Ok(mut w) = inner.writer.lock() {
            *w = Some(handle);
        }
        let store = Store { inner };
        let flusher = store.clone();
        tokio::spawn(async move { flusher.flush_loop().await });
        let maint = store.clone();
        tokio::spawn(async move { maint.maintenance_loop().await });
        Ok(store)
    }

    /// Opens a data directory for reading only, without the lock and without touching any file:
    /// the table as committed plus every WAL record above its watermark. Safe while a server runs.
    pub async fn open_read_only(data_dir: &Path) -> Result<Self> {
        let table_dir = data_dir.join("spans");
        // A running writer may commit a flush and delete the WAL segments it covers between our
        // reading the table and reading the WAL. Detect that (the table moved on, or a segment
        // vanished) and read again, so the view has no gap.
        let mut attempt = 0;
        let (table, provider, watermark, records) = loop {
            attempt += 1;
            let table = SpanTable::open_existing(&table_dir).await?;
            let (provider, watermark, version) = match &table {
                Some(t) => (t.provider().await?, t.watermark(), t.version()),
                None => (None, 0, None),
            };
            let wal_dir = data_dir.join("wal");
            let read = tokio::task::spawn_blocking(move || wal::read_after(&wal_dir, watermark))
                .await
                .map_err(|e| Error::Closed(format!("WAL read task failed: {e}")))?;
            // Did a commit land while we read (or the table appear)?
            let moved = match &table {
                Some(t) => Some(t.latest_version().await?) != version,
                None => SpanTable::exists(&table_dir),
            };
            match read {
                Ok(records) if !moved => break (table, provider, watermark, records),
                Ok(_) => {}
                Err(Error::Io { cause, .. }) if cause.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            if attempt >= 10 {
                return Err(Error::Closed(
                    "the table kept changing while it was being read; try again".into(),
                ));
            }
        };
        let mut memtable = Memtable::default();
        let mut runs = runs::RunIds::load(data_dir)?;
        for rec in records {
            for batch in codec::decode(&rec.payload)? {
                runs.push(&mut memtable, rec.seq, batch, Some(rec.payload.len()));
            }
        }
        Ok(Store {
            inner: Arc::new(Inner {
                mem_bytes: AtomicUsize::new(memtable.bytes()),
                view: Mutex::new(View {
                    memtable,
                    runs,
                    table: provider,
                    watermark,
                    rollups: Vec::new(),
                }),
                wal_tx: Mutex::new(None),
                inflight: AtomicUsize::new(0),
                flush_wanted: Notify::new(),
                stats: StoreStats::default(),
                table: tokio::sync::Mutex::new(table),
                rollups: tokio::sync::Mutex::new(Vec::new()),
                options: StoreOptions::new(data_dir),
                closing: Notify::new(),
                writer: Mutex::new(None),
                lock: Mutex::new(None),
                health: health::Tracker::default(),
            }),
        })
    }

    /// The options the store runs with.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &StoreStats {
        &self.inner.stats
    }

    /// What is failing now: the WAL, the flush (see [`health`]).
    pub fn health(&self) -> health::Health {
        self.inner.health.get()
    }

    /// Reserves `bytes` of the memory budget for a request in flight, or refuses when the budget is
    /// used up. Refusal also asks for a flush, so the store recovers by itself.
    pub fn admit(&self, bytes: usize) -> Result<Admission> {
        let limit = self.inner.options.memory_budget_bytes;
        let mem = self.inner.mem_bytes.load(Ordering::Acquire);
        let prev = self.inner.inflight.fetch_add(bytes, Ordering::AcqRel);
        let admission = Admission {
            inner: Arc::clone(&self.inner),
            bytes,
        };
        if mem.saturating_add(prev).saturating_add(bytes) > limit {
            drop(admission);
            self.inner.flush_wanted.notify_one();
            return Err(Error::Overloaded {
                limit,
                retry_after: Duration::from_secs(1),
            });
        }
        Ok(admission)
    }

    /// Bytes in the memtable.
    pub fn memtable_bytes(&self) -> usize {
        self.inner.mem_bytes.load(Ordering::Acquire)
    }

    /// Rows in the memtable.
    pub fn memtable_rows(&self) -> usize {
        self.inner
            .view
            .lock()
            .map(|v| v.memtable.rows())
            .unwrap_or(0)
    }

    /// Makes a batch durable and visible. Returns its WAL sequence number once the batch is synced
    /// to disk and readable; only then may the caller acknowledge the export.
    pub async fn append(&self, batch: RecordBatch) -> Result<u64> {
        let payload = codec::encode(&batch)?;
        if payload.len() > wal::MAX_RECORD_BYTES {
            return Err(Error::TooLarge(format!(
                "the export expands to {} bytes of spans, over the limit of {} bytes; send smaller batches",
                payload.len(),
                wal::MAX_RECORD_BYTES
            )));
        }
        let (reply, rx) = oneshot::channel();
        {
            let tx = self
                .inner
                .wal_tx
                .lock()
                .map_err(|_| Error::Closed("WAL channel lock poisoned".into()))?;
            let tx = tx
                .as_ref()
                .ok_or_else(|| Error::Closed("the store is read-only or shutting down".into()))?;
            tx.send(WalCmd::Append {
                payload,
                batch,
                reply,
            })
            .map_err(|_| Error::Closed("the WAL writer has stopped".into()))?;
        }
        let seq = rx
            .await
            .map_err(|_| Error::Closed("the WAL writer has stopped".into()))??;
        if self.inner.mem_bytes.load(Ordering::Acquire) >= self.inner.options.flush_bytes {
            self.inner.flush_wanted.notify_one();
        }
        Ok(seq)
    }

    /// A consistent read view (see the crate docs).
    pub fn snapshot(&self) -> Snapshot {
        let mut v = match self.inner.view.lock() {
            Ok(v) => v,
            Err(p) => p.into_inner(),
        };
        Snapshot {
            table: v.table.clone(),
            watermark: v.watermark,
            mem: v.memtable.batches_after(v.watermark),
            aliases: v.runs.aliases(),
            rollups: v.rollups.clone(),
        }
    }

    /// Bytes of the table's active Parquet files.
    pub async fn table_bytes(&self) -> u64 {
        let guard = self.inner.table.lock().await;
        guard.as_ref().map(|t| t.data_bytes()).unwrap_or(0)
    }

    /// Absolute paths of the table's active Parquet files.
    pub async fn data_files(&self) -> Vec<PathBuf> {
        let guard = self.inner.table.lock().await;
        let dir = self.inner.options.data_dir.join("spans");
        guard
            .as_ref()
            .map(|t| t.data_files().into_iter().map(|f| dir.join(f)).collect())
            .unwrap_or_default()
    }

    /// Active data files per `date` partition.
    pub async fn files_per_partition(&self) -> Vec<(String, usize)> {
        let guard = self.inner.table.lock().await;
        guard
            .as_ref()
            .map(|t| t.files_per_partition())
            .unwrap_or_default()
    }

    /// Stops accepting writes, waits for the WAL writer to answer every queued append, flushes
    /// the memtable, stops the background tasks and releases the directory lock.
    pub async fn shutdown(&self) -> Result<()> {
        if let Ok(mut tx) = self.inner.wal_tx.lock() {
            tx.take();
        }
        let handle = self.inner.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = handle {
            tokio::task::spawn_blocking(move || handle.join())
                .await
                .map_err(|e| Error::Closed(format!("WAL writer join failed: {e}")))?
                .map_err(|_| Error::Closed("the WAL writer thread panicked".into()))?;
        }
        let flushed = self.flush().await;
        self.inner.closing.notify_waiters();
        // Wait for a maintenance pass in progress to end before letting go of the lock.
        drop(self.inner.table.lock().await);
        if let Ok(mut lock) = self.inner.lock.lock() {
            lock.take();
        }
        flushed.map(|_| ())
    }

    pub(crate) fn is_writable(&self) -> bool {
        self.inner
            .wal_tx
            .lock()
            .map(|t| t.is_some())
            .unwrap_or(false)
    }
}
