//! The run rollup gives, at every point of a table's life, exactly what the spans give: the
//! `runs` view (merged from the rollup's partial rows and the memtable's) is compared, column by
//! column, with the per-span definition below, which reads nothing but `steps`. The points: runs
//! split across flushes, children flushed before their roots (aliases), maintenance folding run
//! ids into the files, an erasure, retention, a rollup deleted (an upgrade) or built with another
//! price table, and a read-only reader.

use custos_analytics::{Analytics, PriceTable, QueryOptions};
use custos_store::{Selection, Store, StoreOptions};
use custos_synth::reference::{SynthOptions, generate};

use super::{render, repo};

/// `runs` as it was defined before the rollup: straight over `steps`.
const RUNS_FROM_SPANS: &str = r#"
SELECT
  coalesce(max(workflow) FILTER (WHERE is_root), max(workflow)) AS workflow,
  run_id,
  coalesce(min(trace_id) FILTER (WHERE is_root), min(trace_id)) AS trace_id,
  coalesce(max(service_name) FILTER (WHERE is_root), max(service_name)) AS service_name,
  min(start_time) AS start_time,
  max(end_time) FILTER (WHERE is_root) AS end_time,
  CAST(max(end_time_unix_nano) FILTER (WHERE is_root) - min(start_time_unix_nano) AS DOUBLE)
    / 1e6 AS duration_ms,
  CASE
    WHEN NOT bool_or(is_root) THEN 'in_progress'
    WHEN max(outcome) FILTER (WHERE is_root) IS NOT NULL THEN max(outcome) FILTER (WHERE is_root)
    WHEN bool_or(is_root AND status_code = 'error') THEN 'failure'
    ELSE 'success'
  END AS outcome,
  sum(cost_usd) AS cost_usd,
  CASE
    WHEN count(*) FILTER (WHERE cost_source = 'unpriced') > 0 THEN 'incomplete'
    WHEN count(*) FILTER (WHERE cost_source = 'computed') > 0
     AND count(*) FILTER (WHERE cost_source = 'reported') > 0 THEN 'mixed'
    WHEN count(*) FILTER (WHERE cost_source = 'computed') > 0 THEN 'computed'
    WHEN count(*) FILTER (WHERE cost_source = 'reported') > 0 THEN 'reported'
    ELSE 'none'
  END AS cost_source,
  sum(input_tokens) AS input_tokens,
  sum(output_tokens) AS output_tokens,
  count(step) AS steps,
  count(step) - count(DISTINCT step) AS retries,
  count(*) FILTER (WHERE status_code = 'error') AS errors,
  count(*) FILTER (WHERE human_reviewed) AS human_reviews,
  count(*) FILTER (WHERE human_override) AS overrides,
  last_value(model ORDER BY start_time_unix_nano, span_id)
    FILTER (WHERE confidence IS NOT NULL OR decision IS NOT NULL) AS model,
  last_value(model_version ORDER BY start_time_unix_nano, span_id)
    FILTER (WHERE confidence IS NOT NULL OR decision IS NOT NULL) AS model_version,
  last_value(prompt_version ORDER BY start_time_unix_nano, span_id)
    FILTER (WHERE confidence IS NOT NULL OR decision IS NOT NULL) AS prompt_version,
  coalesce(max(source) FILTER (WHERE is_root), min(source)) AS source,
  min(date) AS date
FROM steps
GROUP BY run_id
HAVING max(workflow) IS NOT NULL
"#;

fn options(dir: &std::path::Path) -> StoreOptions {
    let mut o = StoreOptions::new(dir);
    o.flush_interval = std::time::Duration::from_secs(3600);
    o.maintenance_interval = std::time::Duration::from_secs(3600);
    o
}

fn prices() -> PriceTable {
    PriceTable::load(&repo().join("rules/prices.yaml")).unwrap()
}

async fn analytics(store: &Store, prices: PriceTable) -> Analytics {
    Analytics::with_prices(store.clone(), QueryOptions::default(), prices)
        .await
        .unwrap()
}

/// Whether readers of `store` read the run rollup now (rather than the spans).
fn covering(store: &Store) -> bool {
    store
        .snapshot()
        .rollups
        .iter()
        .any(|r| r.name == "runs" && r.covering)
}

/// `runs` equals the per-span definition, and is not empty.
async fn same(a: &Analytics, when: &str) -> usize {
    let sql = |from: &str| format!("SELECT * FROM ({from}) ORDER BY run_id");
    let got = render(&a.query(&sql("SELECT * FROM runs")).await.unwrap());
    let want = render(&a.query(&sql(RUNS_FROM_SPANS)).await.unwrap());
    assert!(!want.is_empty(), "{when}: no runs");
    assert_eq!(got.len(), want.len(), "{when}: number of runs");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "{when}");
    }
    got.len()
}

async fn append_synthetic(store: &Store, seed: u64, flush_every: usize) {
    let o = SynthOptions {
        seed,
        ..SynthOptions::default()
    };
    for (i, req) in generate(o).enumerate() {
        let n = custos_collector::normalize(&req, None).unwrap();
        store.append(n.batch.unwrap()).await.unwrap();
        if (i + 1) % flush_every == 0 {
            store.flush().await.unwrap();
        }
    }
}

#[tokio::test]
async fn the_run_rollup_answers_what_the_spans_answer() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(options(dir.path())).await.unwrap();
    let a = analytics(&store, prices()).await;
    store.rebuild_rollups().await.unwrap();
    assert!(covering(&store), "an empty table's rollup covers it");

    // Flushes every few requests: a run's spans land in several flushes, some in the memtable.
    append_synthetic(&store, 7, 3).await;
    assert!(covering(&store), "flushes keep the rollup covering");
    let runs = same(&a, "flushes and a memtable tail").await;
    store.flush().await.unwrap();
    assert_eq!(same(&a, "all flushed").await, runs);

    // Children flushed before their roots: the rollup's rows take the roots' ids through the
    // aliases, and again after maintenance folded them into the files.
    super::instrumentation::children_first(&store).await;
    assert!(store.snapshot().aliases.is_some());
    assert!(covering(&store));
    let runs = same(&a, "aliases").await;
    store.maintain().await.unwrap();
    assert!(store.snapshot().aliases.is_none(), "the fold ran");
    assert!(covering(&store), "the folded days were summarized again");
    assert_eq!(same(&a, "after the fold").await, runs);

    // An erasure rewrites the days it touched; the rollup follows.
    let erased = store
        .erase(
            &Selection::Where("step = 'classify' AND confidence < 0.3".into()),
            None,
            serde_json::Value::Null,
        )
        .await
        .unwrap();
    assert!(erased.spans > 0);
    assert!(covering(&store));
    same(&a, "after an erasure").await;
    drop(a);
    store.shutdown().await.unwrap();

    // An upgrade: a data directory without the rollup. Readers use the spans until it is built.
    std::fs::remove_dir_all(dir.path().join("rollup")).unwrap();
    let store = Store::open(options(dir.path())).await.unwrap();
    let a = analytics(&store, prices()).await;
    same(&a, "rollup missing").await;
    store.rebuild_rollups().await.unwrap();
    assert!(covering(&store), "rebuilt from the table");
    same(&a, "rollup rebuilt").await;

    // Another price table is another rollup.
    let other = analytics(&store, PriceTable::empty()).await;
    store.rebuild_rollups().await.unwrap();
    assert!(covering(&store));
    same(&other, "priced from another table").await;
    drop((a, other));
    store.shutdown().await.unwrap();

    // A reader of the directory (no lock) reads the rollup the writer left.
    let ro = Store::open_read_only(dir.path()).await.unwrap();
    let a = analytics(&ro, PriceTable::empty()).await;
    assert!(covering(&ro), "the writer's rollup covers the table");
    same(&a, "read-only").await;
}

#[tokio::test]
async fn a_crash_between_the_flush_and_its_rollup_is_noticed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(options(dir.path())).await.unwrap();
    let a = analytics(&store, prices()).await;
    store.rebuild_rollups().await.unwrap();
    append_synthetic(&store, 3, 4).await;
    store.flush().await.unwrap();
    drop(a);
    store.shutdown().await.unwrap();

    // A flush committed while no rollup was attached: the table moved on, the rollup did not.
    let store = Store::open(options(dir.path())).await.unwrap();
    append_synthetic(&store, 4, 1000).await;
    store.flush().await.unwrap();
    store.shutdown().await.unwrap();

    let store = Store::open(options(dir.path())).await.unwrap();
    let a = analytics(&store, prices()).await;
    assert!(!covering(&store), "the rollup misses a flush");
    same(&a, "stale rollup").await;
    store.rebuild_rollups().await.unwrap();
    assert!(covering(&store));
    same(&a, "rebuilt").await;
}

#[tokio::test]
async fn retention_removes_the_same_days_from_the_rollup() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path());
    o.retention_days = Some(2);
    let store = Store::open(o).await.unwrap();
    let a = analytics(&store, prices()).await;
    store.rebuild_rollups().await.unwrap();
    // Four days of runs up to now, flushed as they arrive.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let synth = SynthOptions {
        start_unix_nano: now - 4 * 86_400 * 1_000_000_000,
        span_seconds: 4 * 86_400 - 3_600,
        ..SynthOptions::default()
    };
    for req in generate(synth) {
        let n = custos_collector::normalize(&req, None).unwrap();
        store.append(n.batch.unwrap()).await.unwrap();
    }
    store.flush().await.unwrap();
    let before = same(&a, "four days").await;
    store.maintain().await.unwrap();
    assert!(covering(&store), "retention replaced the rollup's old days");
    let after = same(&a, "after retention").await;
    assert!(
        after < before,
        "retention removed runs: {after} of {before}"
    );
}
