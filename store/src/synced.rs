//! The local object store the table is written through: every file is fsync'd, with the
//! directory that names it, before the write returns.
//!
//! delta-rs writes through `object_store`, whose local store does not sync. Writes happen in the
//! order the protocol needs (data files, then the commit that names them), so syncing each one as
//! it completes makes a data file durable before any commit can point at it, and the commit
//! durable before the flush returns and the WAL records it covers are deleted. Nothing depends
//! on file times or on the clock.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use deltalake::logstore::object_store::local::LocalFileSystem;
use deltalake::logstore::object_store::path::Path;
use deltalake::logstore::object_store::{
    self as os, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};
use futures::StreamExt as _;
use futures::stream::BoxStream;

/// The root of the local file system, writing durably.
#[derive(Debug)]
pub(crate) struct Synced {
    inner: Arc<LocalFileSystem>,
}

impl Synced {
    pub(crate) fn new() -> Self {
        Self {
            inner: Arc::new(LocalFileSystem::new()),
        }
    }
}

impl fmt::Display for Synced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Synced({})", self.inner)
    }
}

fn failed(path: &std::path::Path, e: std::io::Error) -> os::Error {
    os::Error::Generic {
        store: "Synced",
        source: format!("cannot sync `{}`: {e}", path.display()).into(),
    }
}

/// Every file synced, for the tests that check a flush leaves nothing unsynced.
#[cfg(test)]
pub(crate) static SYNCED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Fsyncs `file` and the directory holding it.
async fn sync(file: PathBuf) -> os::Result<()> {
    tokio::task::spawn_blocking(move || {
        std::fs::File::open(&file)
            .and_then(|f| f.sync_all())
            .map_err(|e| failed(&file, e))?;
        #[cfg(test)]
        if let Ok(mut s) = SYNCED.lock() {
            s.push(file.clone());
        }
        // The file's directory, and that directory's entry in its parent: the local store
        // creates directories as it goes (a new `date=...` partition, `_delta_log`).
        for dir in file.ancestors().skip(1).take(2) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| failed(dir, e))?;
        }
        Ok(())
    })
    .await
    .map_err(|e| os::Error::Generic {
        store: "Synced",
        source: Box::new(e),
    })?
}

/// Fsyncs a directory (after a removal from it).
async fn sync_dir(dir: PathBuf) -> os::Result<()> {
    tokio::task::spawn_blocking(move || {
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| failed(&dir, e))
    })
    .await
    .map_err(|e| os::Error::Generic {
        store: "Synced",
        source: Box::new(e),
    })?
}

/// A multipart upload that syncs the file once it is complete.
#[derive(Debug)]
struct SyncedUpload {
    inner: Box<dyn MultipartUpload>,
    file: PathBuf,
}

#[async_trait]
impl MultipartUpload for SyncedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> os::Result<PutResult> {
        let done = self.inner.complete().await?;
        sync(self.file.clone()).await?;
        Ok(done)
    }

    async fn abort(&mut self) -> os::Result<()> {
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for Synced {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> os::Result<PutResult> {
        let done = self.inner.put_opts(location, payload, opts).await?;
        sync(self.inner.path_to_filesystem(location)?).await?;
        Ok(done)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> os::Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(SyncedUpload {
            inner,
            file: self.inner.path_to_filesystem(location)?,
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> os::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> os::Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, os::Result<Path>>,
    ) -> BoxStream<'static, os::Result<Path>> {
        // A removal is durable once the directory is synced: an erased file must not come back
        // after a power cut.
        let inner = self.inner.clone();
        self.inner
            .delete_stream(locations)
            .then(move |r| {
                let dir = r
                    .as_ref()
                    .ok()
                    .and_then(|p| inner.path_to_filesystem(p).ok())
                    .and_then(|f| f.parent().map(PathBuf::from));
                async move {
                    if let Some(dir) = dir {
                        sync_dir(dir).await?;
                    }
                    r
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, os::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, os::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> os::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> os::Result<()> {
        self.inner.copy_opts(from, to, options).await?;
        sync(self.inner.path_to_filesystem(to)?).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> os::Result<()> {
        self.inner.rename_opts(from, to, options).await?;
        sync(self.inner.path_to_filesystem(to)?).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Writes go to the file system as the local store writes them (the sync is what differs,
    /// and only a power cut shows it; the flush's crash tests cover the order).
    #[tokio::test]
    async fn writes_reads_renames_and_multipart_go_through() {
        let dir = tempfile::tempdir().unwrap();
        let store = Synced::new();
        let root = Path::from_filesystem_path(dir.path()).unwrap();
        let a = root.clone().join("a.json");
        store
            .put_opts(&a, PutPayload::from_static(b"{}"), PutOptions::default())
            .await
            .unwrap();
        assert_eq!(std::fs::read(dir.path().join("a.json")).unwrap(), b"{}");
        let b = root.clone().join("b.json");
        store
            .rename_opts(&a, &b, RenameOptions::default())
            .await
            .unwrap();
        assert!(!dir.path().join("a.json").exists());
        let mut up = store
            .put_multipart_opts(
                &root.clone().join("c.parquet"),
                PutMultipartOptions::default(),
            )
            .await
            .unwrap();
        up.put_part(PutPayload::from_static(b"PAR1")).await.unwrap();
        up.complete().await.unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("c.parquet")).unwrap(),
            b"PAR1"
        );
        let got = store
            .get_opts(&b, GetOptions::default())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&got[..], b"{}");
    }

    fn batch(n: usize) -> arrow::record_batch::RecordBatch {
        use arrow::array::{ArrayRef, Int64Array, StringArray, new_null_array};
        use custos_schema::{col, spans_schema};
        let schema = spans_schema();
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| -> ArrayRef {
                match f.name().as_str() {
                    col::TRACE_ID => Arc::new(StringArray::from(vec![format!("{:032x}", 7); n])),
                    col::SPAN_ID => Arc::new(StringArray::from(
                        (0..n)
                            .map(|i| format!("{:016x}", i + 1))
                            .collect::<Vec<_>>(),
                    )),
                    col::START_TIME_UNIX_NANO => {
                        Arc::new(Int64Array::from(vec![1_763_700_000_000_000_000i64; n]))
                    }
                    col::DATE => Arc::new(StringArray::from(vec!["2025-11-21"; n])),
                    _ => new_null_array(f.data_type(), n),
                }
            })
            .collect();
        arrow::record_batch::RecordBatch::try_new(schema, columns).unwrap()
    }

    fn files(dir: &std::path::Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path());
                }
            }
        }
        out
    }

    /// Every file a table creation, flushes and a compaction write (data files and commits) was
    /// synced by the time the call returned: nothing waits for a later scan.
    #[tokio::test]
    async fn every_file_a_flush_and_a_compaction_write_is_synced_before_they_return() {
        let dir = tempfile::tempdir().unwrap();
        let table_dir = dir.path().join("spans");
        let mut table = crate::SpanTable::open_or_create(&table_dir).await.unwrap();
        for through in 1..=3 {
            table.append(vec![batch(50)], through).await.unwrap();
        }
        assert!(table.compact(2, 1 << 20).await.unwrap());
        let synced = SYNCED.lock().unwrap().clone();
        let written = files(&table_dir);
        assert!(written.len() >= 8, "{written:?}");
        for f in written {
            let f = f.canonicalize().unwrap();
            assert!(
                synced
                    .iter()
                    .any(|s| s.canonicalize().ok().as_ref() == Some(&f)),
                "`{}` was never synced",
                f.display()
            );
        }
    }
}
