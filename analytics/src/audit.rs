//! The `audit` table: the data directory's audit log (`DATA/audit/audit.jsonl`), brought up to
//! date at each scan so queries see every record appended so far.
//!
//! The log only grows, so a scan reads only what was appended since the last one: the provider
//! keeps the records it has parsed as Arrow batches with the file's identity (device and inode)
//! and the length and last line they cover. It reads the whole file again when that no longer
//! holds: another file, a shorter one, a last line that changed, or new records that do not
//! extend the chain of the ones kept. A dashboard's poll at 60,000 records thus parses the few
//! records appended since its last poll instead of 40 MB. The table shows records as they were
//! appended; `custos audit verify` is what checks them.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::array::{
    ArrayRef, Int64Builder, ListBuilder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use custos_audit::Record;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;

/// The `audit` table's schema.
pub fn audit_schema() -> SchemaRef {
    let list = || DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
    Arc::new(Schema::new(vec![
        Field::new("seq", DataType::Int64, false),
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("kind", DataType::Utf8, false),
        Field::new("principal", DataType::Utf8, false),
        Field::new("action", DataType::Utf8, false),
        Field::new("resource", DataType::Utf8, false),
        Field::new("decision", DataType::Utf8, false),
        Field::new("policies", list(), false),
        Field::new("advice", list(), false),
        Field::new("errors", list(), false),
        Field::new("context", DataType::Utf8, false),
        Field::new("policy_hash", DataType::Utf8, false),
        Field::new("prev_hash", DataType::Utf8, false),
        Field::new("hash", DataType::Utf8, false),
    ]))
}

/// Audit records as one batch of the `audit` schema.
pub fn records_to_batch(records: &[Record]) -> Result<RecordBatch> {
    let mut seq = Int64Builder::new();
    let mut time = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut strings: Vec<StringBuilder> = (0..4).map(|_| StringBuilder::new()).collect();
    let mut lists: Vec<ListBuilder<StringBuilder>> = (0..3)
        .map(|_| ListBuilder::new(StringBuilder::new()))
        .collect();
    let mut tail: Vec<StringBuilder> = (0..5).map(|_| StringBuilder::new()).collect();
    for r in records {
        seq.append_value(i64::try_from(r.seq).unwrap_or(i64::MAX));
        time.append_option(
            chrono::DateTime::parse_from_rfc3339(&r.time)
                .ok()
                .map(|t| t.timestamp_micros()),
        );
        for (b, v) in strings
            .iter_mut()
            .zip([&r.kind, &r.principal, &r.action, &r.resource])
        {
            b.append_value(v);
        }
        for (b, v) in lists.iter_mut().zip([&r.policies, &r.advice, &r.errors]) {
            for s in v {
                b.values().append_value(s);
            }
            b.append(true);
        }
        let context = r.context.to_string();
        for (b, v) in
            tail.iter_mut()
                .zip([&r.decision, &context, &r.policy_hash, &r.prev_hash, &r.hash])
        {
            b.append_value(v);
        }
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(seq.finish()), Arc::new(time.finish())];
    columns.extend(strings.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    let [decision, context, policy_hash, prev_hash, hash] = {
        let mut it = tail.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef);
        let mut next = || {
            it.next()
                .ok_or_else(|| DataFusionError::Internal("audit columns".into()))
        };
        [next()?, next()?, next()?, next()?, next()?]
    };
    columns.push(decision);
    columns.extend(lists.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.extend([context, policy_hash, prev_hash, hash]);
    RecordBatch::try_new(audit_schema(), columns).map_err(DataFusionError::from)
}

/// Kept batches are merged into one when there are more than this many.
const MERGE_AT: usize = 32;

/// What the provider has read of the log.
#[derive(Default)]
struct Cache {
    /// Device and inode of the file read.
    identity: (u64, u64),
    /// Bytes of complete lines read.
    len: u64,
    /// The last complete line read (without its newline).
    last_line: Vec<u8>,
    /// The last record's hash, which the next record's `prev_hash` names.
    last_hash: String,
    /// The records read, in order.
    batches: Vec<RecordBatch>,
}

/// Table provider over an audit directory.
pub struct AuditProvider {
    dir: PathBuf,
    schema: SchemaRef,
    cache: Arc<Mutex<Cache>>,
}

impl fmt::Debug for AuditProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditProvider")
            .field("dir", &self.dir)
            .finish()
    }
}

impl AuditProvider {
    /// A provider over the audit log in `dir` (usually `DATA/audit`).
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            schema: audit_schema(),
            cache: Arc::default(),
        }
    }

    /// Every record of the log as batches, reading only what was appended since the last call
    /// when the file still extends what was read.
    fn refresh(dir: &Path, cache: &Mutex<Cache>) -> Result<Vec<RecordBatch>> {
        let path = dir.join(custos_audit::LOG_FILE);
        let failed = |e: std::io::Error| {
            DataFusionError::Execution(format!("reading the audit log `{}`: {e}", path.display()))
        };
        let mut cache = cache
            .lock()
            .map_err(|_| DataFusionError::Execution("the audit cache lock is poisoned".into()))?;
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                *cache = Cache::default();
                return Ok(Vec::new());
            }
            Err(e) => return Err(failed(e)),
        };
        let meta = file.metadata().map_err(failed)?;
        let identity = (meta.dev(), meta.ino());
        if !extends(&mut file, &cache, identity, meta.len()).map_err(failed)? {
            *cache = Cache {
                identity,
                ..Cache::default()
            };
        }
        let mut tail = Vec::new();
        file.seek(SeekFrom::Start(cache.len)).map_err(failed)?;
        file.read_to_end(&mut tail).map_err(failed)?;
        let complete = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if complete > 0 {
            let text = String::from_utf8_lossy(&tail[..complete]);
            let first_line = cache.len == 0;
            let records = parse(&text, &path, cache.len)?;
            if !first_line
                && records
                    .first()
                    .is_some_and(|r| r.prev_hash != cache.last_hash)
            {
                // Not a continuation of what was read: read it all again.
                *cache = Cache {
                    identity,
                    ..Cache::default()
                };
                drop(cache);
                return Self::refresh_from_scratch(dir);
            }
            if let Some(last) = records.last() {
                cache.last_hash = last.hash.clone();
            }
            let lines = &tail[..complete - 1];
            let start = lines.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            cache.last_line = lines[start..].to_vec();
            cache.len += complete as u64;
            if !records.is_empty() {
                cache.batches.push(records_to_batch(&records)?);
            }
            if cache.batches.len() > MERGE_AT {
                let merged = arrow::compute::concat_batches(&audit_schema(), &cache.batches)?;
                cache.batches = vec![merged];
            }
        }
        Ok(cache.batches.clone())
    }

    /// The whole log, without the cache (when the file changed under a refresh).
    fn refresh_from_scratch(dir: &Path) -> Result<Vec<RecordBatch>> {
        let records =
            custos_audit::read_all(dir).map_err(|e| DataFusionError::Execution(e.to_string()))?;
        Ok(vec![records_to_batch(&records)?])
    }
}

/// Whether the file (`identity`, `len` bytes) still begins with what `cache` read: the same
/// file, no shorter, with the same last line where the cache's ends.
fn extends(
    file: &mut File,
    cache: &Cache,
    identity: (u64, u64),
    len: u64,
) -> std::io::Result<bool> {
    if cache.len == 0 {
        return Ok(false);
    }
    if cache.identity != identity || len < cache.len {
        return Ok(false);
    }
    let n = cache.last_line.len() as u64 + 1;
    let Some(from) = cache.len.checked_sub(n) else {
        return Ok(false);
    };
    let mut buf = vec![0u8; n as usize];
    file.seek(SeekFrom::Start(from))?;
    file.read_exact(&mut buf)?;
    Ok(buf.last() == Some(&b'\n') && buf[..buf.len() - 1] == cache.last_line[..])
}

/// The records of `text` (complete lines), which starts at byte `offset` of the log at `path`.
fn parse(text: &str, path: &Path, offset: u64) -> Result<Vec<Record>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|e| {
                DataFusionError::Execution(format!(
                    "audit log `{}`: a record after byte {offset} does not parse ({e}); run \
                     `custos audit verify`",
                    path.display()
                ))
            })
        })
        .collect()
}

#[async_trait]
impl TableProvider for AuditProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (dir, cache) = (self.dir.clone(), Arc::clone(&self.cache));
        let batches = tokio::task::spawn_blocking(move || Self::refresh(&dir, &cache))
            .await
            .map_err(|e| DataFusionError::Execution(format!("reading the audit log: {e}")))??;
        let source =
            MemorySourceConfig::try_new(&[batches], Arc::clone(&self.schema), projection.cloned())?
                .with_limit(limit);
        Ok(DataSourceExec::from_data_source(source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use custos_audit::{AuditLog, Entry};

    fn rows(batches: &[RecordBatch]) -> usize {
        batches.iter().map(RecordBatch::num_rows).sum()
    }

    fn append(log: &AuditLog, n: usize) {
        for i in 0..n {
            log.append(Entry {
                kind: "test".into(),
                principal: format!("User::\"u{i}\""),
                ..Entry::default()
            })
            .unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn a_scan_reads_only_what_was_appended_and_rereads_a_changed_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let cache = Mutex::new(Cache::default());
        let read = |cache: &Mutex<Cache>| {
            AuditProvider::refresh(dir.path(), cache).unwrap_or_else(|e| panic!("{e}"))
        };
        assert_eq!(rows(&read(&cache)), 0, "no log yet");
        let log = AuditLog::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        append(&log, 3);
        assert_eq!(rows(&read(&cache)), 3);
        append(&log, 2);
        let batches = read(&cache);
        assert_eq!(rows(&batches), 5);
        assert_eq!(
            batches.len(),
            2,
            "the two new records were read on their own"
        );

        // A partial last line (a write in progress) is not shown until it is complete.
        let path = log.log_path();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        let lines: Vec<&str> = text.lines().collect();
        let whole = format!("{}\n", lines.join("\n"));
        let mut partial = whole.clone();
        partial.push_str(&lines[4][..20]);
        std::fs::write(&path, &partial).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows(&read(&cache)), 5);

        // The last record rewritten in place (same file, same length or not): read again.
        let changed = format!(
            "{}\n{}\n",
            lines[..4].join("\n"),
            lines[4].replace("u1", "zz")
        );
        assert_ne!(changed, whole, "the fixture changes the last record");
        std::fs::write(&path, &changed).unwrap_or_else(|e| panic!("{e}"));
        let batches = read(&cache);
        assert_eq!(
            (rows(&batches), batches.len()),
            (5, 1),
            "read from the start"
        );
        let principals = arrow::compute::cast(batches[0].column(3), &DataType::Utf8)
            .unwrap_or_else(|e| panic!("{e}"));
        let principals = principals
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap_or_else(|| panic!("strings"));
        assert_eq!(principals.value(4), "User::\"zz\"");

        // Another file in its place, shorter: read again.
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&path, format!("{}\n", lines[0])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows(&read(&cache)), 1);

        // Records that do not continue the chain of those read: read again.
        std::fs::write(&path, format!("{}\n{}\n", lines[0], lines[2]))
            .unwrap_or_else(|e| panic!("{e}"));
        let batches = read(&cache);
        assert_eq!((rows(&batches), batches.len()), (2, 1));
    }
}
