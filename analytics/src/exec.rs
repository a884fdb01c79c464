//! Where queries run, and how much of a result one query may make the server hold.
//!
//! Queries run on a Tokio runtime of their own ([`QueryRuntime`], threads named `custos-sql`),
//! never on the runtime that serves the receivers and the API: a query that computes for long,
//! or an operator that polls without yielding, occupies SQL threads only, and the caller's
//! timeout fires on the caller's runtime whatever the query does. A query whose caller gives up
//! (a timeout, a client that went away) is cancelled on the SQL runtime.
//!
//! A result is streamed batch by batch and counted: past [`ResultLimits`] the query is stopped
//! and answered with [`Error::TooLarge`], so `SELECT * FROM generate_series(1, 3000000000)`
//! costs at most the caps, not the server's memory.

use std::future::Future;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use datafusion::dataframe::DataFrame;
use futures::StreamExt as _;

use crate::{Error, Result, classify};

/// The largest result one query may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultLimits {
    /// Rows.
    pub max_rows: usize,
    /// Bytes of Arrow memory (the rendered answer is of the same order: JSON about 1–3×).
    pub max_bytes: usize,
}

impl ResultLimits {
    /// No caps: for the server's own queries (SLO evaluation, materialized views), whose size
    /// follows the stored data rather than a caller's text.
    pub const NONE: Self = Self {
        max_rows: usize::MAX,
        max_bytes: usize::MAX,
    };
}

impl Default for ResultLimits {
    fn default() -> Self {
        Self {
            max_rows: 1_000_000,
            max_bytes: 64 << 20,
        }
    }
}

/// A Tokio runtime for queries only.
pub struct QueryRuntime {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl std::fmt::Debug for QueryRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryRuntime").finish_non_exhaustive()
    }
}

impl QueryRuntime {
    /// A runtime with `threads` worker threads (0: one per core).
    pub fn new(threads: usize) -> Result<Self> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("custos-sql")
            .enable_all()
            .build()
            .map_err(|e| Error::Setup(format!("cannot start the SQL runtime: {e}")))?;
        let handle = runtime.handle().clone();
        Ok(Self {
            runtime: Some(runtime),
            handle,
        })
    }

    /// Runs `work` on the SQL runtime and waits at most `timeout` for it; past the timeout, or
    /// when the returned future is dropped, the work is cancelled.
    pub async fn run<T, F>(&self, timeout: Duration, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let task = AbortOnDrop(self.handle.spawn(work));
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) if e.is_panic() => Err(Error::Execution(
                "the query failed inside the engine (a panic, logged); the server is still serving"
                    .into(),
            )),
            Ok(Err(_)) => Err(Error::Execution("the query was cancelled".into())),
            Err(_) => Err(Error::Timeout(timeout)),
        }
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        // Dropping a runtime inside another one's async context would panic; queries still in
        // flight are cancelled at their next yield.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A spawned task that is aborted when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = std::result::Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

/// The bytes a batch's rows take, counting only the slice it holds (a batch sliced from a large
/// buffer, as a `LIMIT` makes, is not charged for the whole buffer).
fn slice_size(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
}

/// Executes `df` and gathers its batches, stopping with [`Error::TooLarge`] past `limits`.
pub(crate) async fn gather(
    df: DataFrame,
    memory_limit: usize,
    limits: ResultLimits,
) -> Result<Vec<RecordBatch>> {
    let mut stream = df
        .execute_stream()
        .await
        .map_err(|e| classify(e, memory_limit))?;
    let (mut rows, mut bytes) = (0usize, 0usize);
    let mut out = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| classify(e, memory_limit))?;
        rows = rows.saturating_add(batch.num_rows());
        bytes = bytes.saturating_add(slice_size(&batch));
        if rows > limits.max_rows || bytes > limits.max_bytes {
            return Err(Error::TooLarge {
                max_rows: limits.max_rows,
                max_bytes: limits.max_bytes,
            });
        }
        out.push(batch);
    }
    Ok(out)
}
