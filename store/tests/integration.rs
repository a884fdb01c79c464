//! Store tests on real files: exactly-once across flushes, crashes between commit and WAL
//! truncation, read-only opens beside a writer, the lock, and the memory budget.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, new_null_array};
use custos_schema::{col, spans_schema};
use custos_store::{Error, Store, StoreOptions};
use datafusion::prelude::SessionContext;

/// `n` spans of trace `tag`, with every other column null.
fn batch(tag: u32, n: usize) -> RecordBatch {
    let schema = spans_schema();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            match f.name().as_str() {
                col::TRACE_ID => Arc::new(StringArray::from(vec![format!("{tag:032x}"); n])),
                col::SPAN_ID => Arc::new(StringArray::from(
                    (0..n).map(|i| format!("{i:016x}")).collect::<Vec<_>>(),
                )),
                col::START_TIME_UNIX_NANO => {
                    Arc::new(Int64Array::from(vec![1_763_700_000_000_000_000i64; n]))
                }
                col::DATE => Arc::new(StringArray::from(vec!["2025-11-21"; n])),
                _ => new_null_array(f.data_type(), n),
            }
        })
        .collect();
    RecordBatch::try_new(schema, columns).unwrap()
}

fn options(dir: &Path) -> StoreOptions {
    let mut o = StoreOptions::new(dir);
    o.flush_interval = std::time::Duration::from_secs(3600);
    o
}

async fn count(store: &Store) -> (i64, i64) {
    let ctx = SessionContext::new();
    ctx.register_table(
        "spans",
        Arc::new(custos_store::SpansProvider::new(store.clone())),
    )
    .unwrap();
    let batches = ctx
        .sql("SELECT count(*), count(DISTINCT trace_id || span_id) FROM spans")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let b = &batches[0];
    let a = b
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0);
    let d = b
        .column(1)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0);
    (a, d)
}

fn wal_segments(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("wal"))
        .map(|r| r.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_visible_at_once_and_survive_flush_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(options(dir.path())).await.unwrap();
    let s1 = store.append(batch(1, 10)).await.unwrap();
    let s2 = store.append(batch(2, 5)).await.unwrap();
    assert_eq!(s2, s1 + 1);
    assert_eq!(count(&store).await, (15, 15));
    assert_eq!(store.flush().await.unwrap(), 15);
    assert_eq!(count(&store).await, (15, 15));
    store.append(batch(3, 7)).await.unwrap();
    assert_eq!(count(&store).await, (22, 22));
    // A crash image: the directory's files as they are now, with no shutdown flush.
    let image = tempfile::tempdir().unwrap();
    copy_tree(dir.path(), image.path());
    store.shutdown().await.unwrap();
    let store = Store::open(options(image.path())).await.unwrap();
    assert_eq!(count(&store).await, (22, 22));
    assert_eq!(store.memtable_rows(), 7);
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_wal_counts_against_the_memory_budget_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(options(dir.path())).await.unwrap();
    for tag in 0..200 {
        store.append(batch(tag, 25)).await.unwrap();
    }
    let appended = store.memtable_bytes();
    let image = tempfile::tempdir().unwrap();
    copy_tree(dir.path(), image.path());
    store.shutdown().await.unwrap();
    let store = Store::open(options(image.path())).await.unwrap();
    assert_eq!(store.memtable_rows(), 5_000);
    // Decoded batches share one buffer per WAL record: counting it once per column (about 30
    // times what it holds) made a restarted server refuse every export as over its budget. The
    // IPC payload may hold a little more than the appended batch (padding, null buffers).
    assert!(
        store.memtable_bytes() <= 2 * appended,
        "replayed {} bytes, appended {appended}",
        store.memtable_bytes()
    );
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_commit_and_wal_truncation_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let saved = dir.path().join("wal-copy");
    {
        let store = Store::open(options(&data)).await.unwrap();
        store.append(batch(1, 10)).await.unwrap();
        store.append(batch(2, 10)).await.unwrap();
        // Keep the WAL as it was before the flush: as if the process died right after the commit.
        copy_dir(&data.join("wal"), &saved);
        store.flush().await.unwrap();
        store.shutdown().await.unwrap();
    }
    std::fs::remove_dir_all(data.join("wal")).unwrap();
    copy_dir(&saved, &data.join("wal"));
    std::fs::remove_file(data.join("LOCK")).ok();
    let store = Store::open(options(&data)).await.unwrap();
    assert_eq!(count(&store).await, (20, 20));
    assert_eq!(
        store.memtable_rows(),
        0,
        "replay must skip records the table holds"
    );
    // New appends continue after the watermark.
    store.append(batch(3, 1)).await.unwrap();
    assert_eq!(count(&store).await, (21, 21));
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_open_sees_the_wal_tail_beside_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(options(dir.path())).await.unwrap();
    store.append(batch(1, 4)).await.unwrap();
    store.flush().await.unwrap();
    store.append(batch(2, 3)).await.unwrap();
    let reader = Store::open_read_only(dir.path()).await.unwrap();
    assert_eq!(count(&reader).await, (7, 7));
    // The writer is undisturbed.
    store.append(batch(3, 1)).await.unwrap();
    assert_eq!(count(&store).await, (8, 8));
    // A second writer is refused with a clear message.
    match Store::open(options(dir.path())).await {
        Err(e @ Error::Locked(_)) => {
            assert!(e.to_string().contains("in use by another custos process"))
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("two writers on one directory"),
    }
    store.shutdown().await.unwrap();
    assert_eq!(wal_segments(dir.path()), 1, "flushed segments are removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_budget_refuses_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path());
    o.memory_budget_bytes = 1 << 20;
    o.flush_bytes = 1 << 20;
    let store = Store::open(o).await.unwrap();
    let a = store.admit(900 << 10).unwrap();
    match store.admit(200 << 10) {
        Err(Error::Overloaded { .. }) => {}
        other => panic!("expected overload, got {:?}", other.err()),
    }
    drop(a);
    store.admit(200 << 10).unwrap();
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_and_retention_keep_rows_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(options(dir.path())).await.unwrap();
    for i in 0..4 {
        store.append(batch(i, 25)).await.unwrap();
        store.flush().await.unwrap();
    }
    let before = store.files_per_partition().await;
    assert_eq!(before, vec![("2025-11-21".to_string(), 4)]);
    assert!(store.compact_now(2).await.unwrap());
    assert_eq!(
        store.files_per_partition().await,
        vec![("2025-11-21".to_string(), 1)]
    );
    assert_eq!(count(&store).await, (100, 100));
    store.shutdown().await.unwrap();
    let mut o = options(dir.path());
    o.retention_days = Some(1);
    let store = Store::open(o).await.unwrap();
    store.maintain().await.unwrap();
    assert_eq!(
        count(&store).await,
        (0, 0),
        "a partition from 2025 is past a one-day retention"
    );
    store.shutdown().await.unwrap();
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A table created by an older version, without the columns added since, gains them on open:
/// old rows read NULL, new rows keep their values, in the table and in the memtable tail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_from_an_older_version_gains_the_new_columns() {
    use deltalake::kernel::StructType;
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
    let dir = tempfile::tempdir().unwrap();
    let spans = dir.path().join("spans");
    std::fs::create_dir_all(&spans).unwrap();
    let added = [col::CACHE_WRITE_TOKENS, col::REASONING_TOKENS, col::SOURCE];
    let old_schema = Arc::new(arrow::datatypes::Schema::new(
        spans_schema()
            .fields()
            .iter()
            .filter(|f| !added.contains(&f.name().as_str()))
            .map(|f| f.as_ref().clone())
            .collect::<Vec<_>>(),
    ));
    let kernel: StructType = old_schema.as_ref().try_into_kernel().unwrap();
    let url = url::Url::from_directory_path(&spans).unwrap();
    let table = deltalake::DeltaTableBuilder::from_url(url)
        .unwrap()
        .build()
        .unwrap()
        .create()
        .with_columns(kernel.fields().cloned())
        .with_partition_columns(["date"])
        .await
        .unwrap();
    let old = batch(1, 4);
    let indices: Vec<usize> = old_schema
        .fields()
        .iter()
        .map(|f| old.schema().index_of(f.name()).unwrap())
        .collect();
    table
        .write(vec![old.project(&indices).unwrap()])
        .await
        .unwrap();

    let store = Store::open(options(dir.path())).await.unwrap();
    let mut new = batch(2, 3);
    let i = new.schema().index_of(col::REASONING_TOKENS).unwrap();
    let mut columns = new.columns().to_vec();
    columns[i] = Arc::new(Int64Array::from(vec![7i64; 3]));
    new = RecordBatch::try_new(new.schema(), columns).unwrap();
    store.append(new.clone()).await.unwrap();
    let reasoning = |store: &Store| {
        let store = store.clone();
        async move {
            let ctx = SessionContext::new();
            ctx.register_table("spans", Arc::new(custos_store::SpansProvider::new(store)))
                .unwrap();
            let b = ctx
                .sql("SELECT count(*), count(reasoning_tokens), sum(reasoning_tokens) FROM spans")
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            let v = |i: usize| {
                b[0].column(i)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .value(0)
            };
            (v(0), v(1), v(2))
        }
    };
    assert_eq!(
        reasoning(&store).await,
        (7, 3, 21),
        "memtable tail over the evolved table"
    );
    store.flush().await.unwrap();
    assert_eq!(
        reasoning(&store).await,
        (7, 3, 21),
        "after the flush into the evolved table"
    );
    store.shutdown().await.unwrap();
    let store = Store::open(options(dir.path())).await.unwrap();
    assert_eq!(reasoning(&store).await, (7, 3, 21), "after reopening");
    store.shutdown().await.unwrap();
}

/// `n` spans of trace `tag`; the even ones are named `planted`, the odd ones `kept span`.
fn named(tag: u32, n: usize, planted: &str) -> RecordBatch {
    let b = batch(tag, n);
    let i = b.schema().index_of(col::NAME).unwrap();
    let names: Vec<String> = (0..n)
        .map(|k| {
            if k % 2 == 0 {
                planted.to_string()
            } else {
                "kept span".to_string()
            }
        })
        .collect();
    let mut columns = b.columns().to_vec();
    columns[i] = Arc::new(StringArray::from(names));
    RecordBatch::try_new(b.schema(), columns).unwrap()
}

/// A file as text: Parquet decoded (its pages are compressed), anything else as its bytes.
fn as_text(p: &Path) -> String {
    if p.extension().is_some_and(|x| x == "parquet") {
        let f = std::fs::File::open(p).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<_> = reader.map(Result::unwrap).collect();
        return arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
    }
    String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned()
}

/// Files under `dir` holding `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if as_text(&p).contains(needle) {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

async fn names(store: &Store, name: &str) -> i64 {
    let ctx = SessionContext::new();
    ctx.register_table(
        "spans",
        Arc::new(custos_store::SpansProvider::new(store.clone())),
    )
    .unwrap();
    let b = ctx
        .sql(&format!("SELECT count(*) FROM spans WHERE name = '{name}'"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    b[0].column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_reaches_the_table_the_memtable_the_wal_and_the_log() {
    use custos_store::Selection;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(options(dir.path())).await.unwrap();
    let planted = "erase-me-7f3a9c";
    store.append(named(1, 10, planted)).await.unwrap();
    store.flush().await.unwrap();
    store.append(named(2, 4, planted)).await.unwrap(); // only in the WAL and the memtable
    store.append(batch(3, 3)).await.unwrap();
    assert!(
        !files_holding(dir.path(), planted).is_empty(),
        "the planted value is on disk before the erasure (else this test proves nothing)"
    );
    let erased = store
        .erase(
            &Selection::Where(format!("name = '{planted}'")),
            None,
            serde_json::json!({"t": 1}),
        )
        .await
        .unwrap();
    assert_eq!(erased.spans, 7);
    assert!(erased.files_rewritten >= 1);
    assert_eq!(erased.purge_due_unix_ms, None);
    assert_eq!(names(&store, planted).await, 0);
    assert_eq!(names(&store, "kept span").await, 7);
    assert_eq!(count(&store).await, (10, 10));
    assert_eq!(files_holding(dir.path(), planted), Vec::<String>::new());
    // Spans arriving after the erasure are kept, and the table reopens with its watermark.
    store.append(named(4, 2, planted)).await.unwrap();
    store.shutdown().await.unwrap();
    let store = Store::open(options(dir.path())).await.unwrap();
    assert_eq!(count(&store).await, (12, 12));
    assert_eq!(names(&store, planted).await, 1);
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_with_a_grace_removes_the_old_files_only_when_due() {
    use custos_store::Selection;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(options(dir.path())).await.unwrap();
    let hex = "0123456789abcdef";
    let pseudonym = format!("[PERSON:{hex}]");
    store.append(named(1, 6, &pseudonym)).await.unwrap();
    store.flush().await.unwrap();
    let before: Vec<_> = store.data_files().await;
    let person = Selection::Mentions(custos_redact::Mention::from_parts("u-123", hex));
    let erased = store
        .erase(
            &person,
            Some(std::time::Duration::from_millis(300)),
            serde_json::Value::Null,
        )
        .await
        .unwrap();
    assert_eq!(erased.spans, 3);
    assert!(erased.purge_due_unix_ms.is_some());
    assert_eq!(names(&store, &pseudonym).await, 0);
    assert!(
        before.iter().all(|f| f.exists()),
        "kept for readers in flight"
    );
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(store.purge_due().await.unwrap(), before.len());
    assert!(before.iter().all(|f| !f.exists()));
    assert_eq!(files_holding(dir.path(), hex), Vec::<String>::new());
    assert_eq!(count(&store).await, (3, 3));
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_refuses_what_is_not_a_condition_and_changes_nothing() {
    use custos_store::Selection;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(options(dir.path())).await.unwrap();
    store.append(batch(1, 4)).await.unwrap();
    for (sql, says) in [
        ("no_such_column = 1", "no_such_column"),
        ("trace_id", "not a condition"),
        ("name = ", "not a predicate"),
    ] {
        let err = store
            .erase(&Selection::Where(sql.into()), None, serde_json::Value::Null)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Predicate(_)), "{sql}: {err}");
        assert!(err.to_string().contains(says), "{sql}: {err}");
    }
    assert_eq!(count(&store).await, (4, 4));
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_now_also_removes_files_compaction_replaced_before_it() {
    use custos_store::Selection;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(options(dir.path())).await.unwrap();
    let planted = "erase-me-c0mpact";
    for tag in 1..=3 {
        store.append(named(tag, 4, planted)).await.unwrap();
        store.flush().await.unwrap();
    }
    assert!(store.compact_now(2).await.unwrap());
    // The three flushed files are tombstones now, still on disk for readers, and hold the value.
    let parquet_holding = |dir: &Path| {
        files_holding(dir, planted)
            .into_iter()
            .filter(|f| f.ends_with(".parquet"))
            .count()
    };
    assert_eq!(
        parquet_holding(dir.path()),
        4,
        "three replaced files and the compacted one"
    );
    let erased = store
        .erase(
            &Selection::Where(format!("name = '{planted}'")),
            None,
            serde_json::Value::Null,
        )
        .await
        .unwrap();
    assert_eq!(erased.spans, 6);
    assert_eq!(files_holding(dir.path(), planted), Vec::<String>::new());
    assert_eq!(count(&store).await, (6, 6));
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasures_follow_up_is_owed_until_its_caller_says_it_is_done() {
    use custos_store::Selection;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(options(dir.path())).await.unwrap();
    let b = named(1, 4, "follow-me");
    let run = b.schema().index_of(col::RUN_ID).unwrap();
    let mut columns = b.columns().to_vec();
    columns[run] = Arc::new(StringArray::from(vec!["run-7"; 4]));
    store
        .append(RecordBatch::try_new(b.schema(), columns).unwrap())
        .await
        .unwrap();
    let note = serde_json::json!({"selection": "name = '[VALUE:x]'"});
    let erased = store
        .erase(
            &Selection::Where("name = 'follow-me'".into()),
            None,
            note.clone(),
        )
        .await
        .unwrap();
    assert_eq!(erased.runs, vec!["run-7".to_string()]);
    let owed = store.followups().await.unwrap();
    assert_eq!(owed.len(), 1);
    assert_eq!(
        (
            owed[0].id.as_str(),
            owed[0].spans,
            owed[0].runs.clone(),
            &owed[0].note
        ),
        (erased.id.as_str(), 2, vec!["run-7".to_string()], &note)
    );
    // Owed across a restart, gone once done.
    store.shutdown().await.unwrap();
    let store = Store::open(options(dir.path())).await.unwrap();
    assert_eq!(store.followups().await.unwrap().len(), 1);
    store.followup_done(&erased.id).await.unwrap();
    assert!(store.followups().await.unwrap().is_empty());
    let nothing = store
        .erase(
            &Selection::Where("name = 'follow-me'".into()),
            None,
            serde_json::Value::Null,
        )
        .await
        .unwrap();
    assert!(nothing.id.is_empty() && nothing.spans == 0);
    assert!(store.followups().await.unwrap().is_empty());
    store.shutdown().await.unwrap();
}
