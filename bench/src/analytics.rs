//! `custos bench analytics`: the standard metrics and a trace lookup over a large store.
//!
//! Writes the synthetic reference workload ([`custos_synth::reference`], about six spans per run,
//! spread over 30 days) through the real store (normalize, WAL, memtable, flush to Delta/Parquet,
//! compaction), then times each standard metric query over the whole data (30-day window), the
//! drift query (15 days against the 15 before), the full `metrics` report, the SLO evaluation and
//! a trace lookup by id. Each figure is the median of several runs after one warm-up run. When
//! Python's `duckdb` package is available, the same questions are asked of DuckDB over the same
//! active Parquet files in the same run (`bench/duckdb_compare.py`), and the ratios reported.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use custos_analytics::metrics::{self, GroupBy, MetricsRequest};
use custos_analytics::{Analytics, PriceTable, QueryOptions};
use custos_store::{Store, StoreOptions};
use custos_synth::reference::{SynthOptions, generate};
use serde::Serialize;

use crate::ingest::Workload;
use crate::{Error, Result};

/// What to run.
#[derive(Debug, Clone)]
pub struct AnalyticsBenchOptions {
    /// Approximate number of spans to generate.
    pub spans: usize,
    /// Data directory; reused when it already holds a table, else filled. Temporary when `None`.
    pub data_dir: Option<PathBuf>,
    /// Price table.
    pub prices: Option<PathBuf>,
    /// SLO file to evaluate.
    pub slos: Option<PathBuf>,
    /// The DuckDB comparison script; skipped when `None` or when `duckdb` cannot be imported.
    pub duckdb_script: Option<PathBuf>,
    /// Timed repetitions per query (after one warm-up).
    pub repeats: usize,
    /// Which spans to load when the data directory holds none.
    pub workload: Workload,
}

/// One timed question.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    /// Name.
    pub name: String,
    /// Median milliseconds in custos.
    pub custos_ms: f64,
    /// Median milliseconds in DuckDB over the same files, when measured.
    pub duckdb_ms: Option<f64>,
    /// custos ÷ DuckDB.
    pub ratio: Option<f64>,
    /// Median milliseconds in DuckDB over one Parquet file of the same spans that DuckDB wrote.
    pub duckdb_single_ms: Option<f64>,
    /// custos ÷ DuckDB over that one file.
    pub ratio_single: Option<f64>,
    /// Rows returned by custos.
    pub rows: usize,
}

impl Timing {
    /// A figure measured in custos, before any DuckDB comparison.
    fn custos(name: &str, custos_ms: f64, rows: usize) -> Self {
        Self {
            name: name.to_string(),
            custos_ms,
            duckdb_ms: None,
            ratio: None,
            duckdb_single_ms: None,
            ratio_single: None,
            rows,
        }
    }
}

/// Measured figures.
#[derive(Debug, Clone, Serialize)]
pub struct AnalyticsBenchReport {
    /// Spans in the store.
    pub spans: i64,
    /// Runs in the store.
    pub runs: i64,
    /// Active Parquet files.
    pub files: usize,
    /// Bytes of active Parquet files.
    pub table_bytes: u64,
    /// Bytes of the one Parquet file DuckDB wrote of the same spans, when compared.
    pub single_file_bytes: Option<u64>,
    /// Which spans were loaded (the synthetic reference workload over 30 days, or the foreign one
    /// over 14).
    pub workload: Workload,
    /// Days the data covers; the window of every question.
    pub days: u64,
    /// Seconds spent generating and storing the data (0 when reused).
    pub load_seconds: f64,
    /// Per question.
    pub timings: Vec<Timing>,
    /// DuckDB version, when compared.
    pub duckdb_version: Option<String>,
    /// Why DuckDB was not compared, when it was not.
    pub duckdb_skipped: Option<String>,
}

/// The end of the generated 30 days.
fn end_of_data() -> DateTime<Utc> {
    DateTime::from_timestamp(1_793_491_200, 0).unwrap_or_default()
}

/// The days each workload covers.
fn days_of(workload: Workload) -> u64 {
    match workload {
        Workload::Synthetic => 30,
        Workload::Foreign => 14,
    }
}

/// The workload the table in `dir` was loaded with (recorded at load), else `fallback`.
fn recorded_workload(dir: &Path, fallback: Workload) -> Workload {
    match std::fs::read_to_string(dir.join("bench-workload")).as_deref() {
        Ok("foreign") => Workload::Foreign,
        Ok("synthetic") => Workload::Synthetic,
        _ => fallback,
    }
}

/// The export requests of `workload`, `spans` of them or about.
fn requests(
    workload: Workload,
    spans: usize,
) -> Box<
    dyn Iterator<
        Item = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
    >,
> {
    let days = days_of(workload);
    match workload {
        Workload::Synthetic => Box::new(generate(SynthOptions {
            seed: 11,
            runs: spans / 6,
            start_unix_nano: (end_of_data().timestamp() as u64 - days * 86_400) * 1_000_000_000,
            span_seconds: days * 86_400,
            runs_per_request: 2_000,
            in_progress: 20,
            canary: false,
        })),
        Workload::Foreign => Box::new(custos_synth::foreign::Foreign::new(
            crate::ingest::foreign_options(spans, 4_096),
        )),
    }
}

async fn load(dir: &Path, spans: usize, workload: Workload) -> Result<f64> {
    let started = Instant::now();
    let mut o = StoreOptions::new(dir);
    o.wal_sync = false;
    o.flush_interval = Duration::from_secs(3600);
    o.maintenance_interval = Duration::from_secs(3600);
    o.memory_budget_bytes = 2 << 30;
    o.retention_days = None;
    let store = Store::open(o).await?;
    for req in requests(workload, spans) {
        let n = custos_collector::normalize(&req, None)
            .map_err(|e| Error::Task(format!("normalize failed: {e}")))?;
        if let Some(batch) = n.batch {
            store.append(batch).await?;
        }
        if store.memtable_bytes() > 256 << 20 {
            store.flush().await?;
        }
    }
    store.flush().await?;
    // Fold the run ids of children flushed before their root, then compact what that rewrote.
    store.maintain().await?;
    while store.compact_now(2).await? {}
    store.shutdown().await?;
    let name = match workload {
        Workload::Synthetic => "synthetic",
        Workload::Foreign => "foreign",
    };
    std::fs::write(dir.join("bench-workload"), name)
        .map_err(|e| Error::Task(format!("cannot write `{}`: {e}", dir.display())))?;
    Ok(started.elapsed().as_secs_f64())
}

async fn time_query(a: &Analytics, sql: &str, repeats: usize) -> Result<(f64, usize)> {
    let rows = a.query(sql).await?.num_rows();
    let mut ms = Vec::new();
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        a.query(sql).await?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok((ms[ms.len() / 2], rows))
}

/// Runs the benchmark; a temporary data directory is removed afterwards.
pub async fn run(options: AnalyticsBenchOptions) -> Result<AnalyticsBenchReport> {
    let temporary = options.data_dir.is_none();
    let report = measure(options).await?;
    if temporary {
        let _ = std::fs::remove_dir_all(temporary_dir());
    }
    Ok(report)
}

/// The data directory when none is given.
fn temporary_dir() -> PathBuf {
    std::env::temp_dir().join(format!("custos-bench-analytics-{}", std::process::id()))
}

/// The DuckDB comparison script of the checkout, `bench/duckdb_compare.py`, when it is there
/// (relative to the working directory).
pub fn default_duckdb_script() -> Option<PathBuf> {
    let d = PathBuf::from(DUCKDB_SCRIPT);
    d.is_file().then_some(d)
}

/// Where the DuckDB comparison script is in the checkout.
pub const DUCKDB_SCRIPT: &str = "bench/duckdb_compare.py";

/// The questions timed one by one, named as the DuckDB script names them.
fn questions(
    whole: &MetricsRequest,
    half: &MetricsRequest,
    trace_id: &str,
) -> Vec<(&'static str, String)> {
    vec![
        (
            "runs: outcomes, run latency p50/p95/p99, spend, retries",
            metrics::bind(metrics::RUNS_SQL, whole),
        ),
        (
            "steps: step latency, error rate, computed cost",
            metrics::bind(metrics::STEPS_SQL, whole),
        ),
        (
            "decisions: review and override rates",
            metrics::bind(metrics::DECISIONS_SQL, whole),
        ),
        (
            "errors: taxonomy",
            metrics::bind(metrics::ERRORS_SQL, whole),
        ),
        (
            "drift: psi and ks per model, half vs half",
            metrics::bind(metrics::DRIFT_SQL, half),
        ),
        (
            "trace by id",
            format!("SELECT * FROM spans WHERE trace_id = '{trace_id}'"),
        ),
    ]
}

/// The whole metrics report and the SLOs, end to end (custos only).
async fn time_reports(
    a: &Analytics,
    whole: &MetricsRequest,
    options: &AnalyticsBenchOptions,
) -> Result<Vec<Timing>> {
    let mut ms = Vec::new();
    for _ in 0..options.repeats.max(1) {
        let t = Instant::now();
        metrics::compute(a, whole).await?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let median = ms.get(ms.len() / 2).copied().unwrap_or_default();
    let mut timings = vec![Timing::custos(
        "custos metrics (all five queries)",
        median,
        0,
    )];
    if let Some(path) = &options.slos {
        let set = custos_analytics::slo::SloSet::load(path)?;
        let t = Instant::now();
        custos_analytics::slo::evaluate(a, &set, whole.at).await?;
        let name = format!("custos slo ({} SLOs, all windows)", set.slos.len());
        timings.push(Timing::custos(&name, t.elapsed().as_secs_f64() * 1e3, 0));
    }
    Ok(timings)
}

async fn measure(options: AnalyticsBenchOptions) -> Result<AnalyticsBenchReport> {
    let dir = match &options.data_dir {
        Some(d) => d.clone(),
        None => temporary_dir(),
    };
    let (load_seconds, workload) = if custos_store::SpanTable::exists(&dir.join("spans")) {
        (0.0, recorded_workload(&dir, options.workload))
    } else {
        (
            load(&dir, options.spans, options.workload).await?,
            options.workload,
        )
    };
    let days = days_of(workload);
    let store = Store::open_read_only(&dir).await?;
    let prices = match &options.prices {
        Some(p) => PriceTable::load(p)?,
        None => PriceTable::empty(),
    };
    let query = QueryOptions {
        memory_limit_bytes: 4 << 30,
        timeout: Duration::from_secs(600),
        result: custos_analytics::exec::ResultLimits::NONE,
        ..QueryOptions::default()
    };
    let a = Analytics::with_prices(store.clone(), query, prices).await?;
    let count = |sql: &'static str| {
        let a = a.clone();
        async move {
            let r = a.query(sql).await?;
            let mut v = 0;
            metrics_rows(&r, |x| v = x);
            Ok::<i64, Error>(v)
        }
    };
    let spans = count("SELECT count(*) FROM spans").await?;
    let runs = count("SELECT count(*) FROM runs").await?;
    let files = store.data_files().await;
    let table_bytes = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();

    let at = end_of_data();
    let whole = MetricsRequest {
        window: Duration::from_secs(days * 86_400),
        at,
        by: GroupBy::Workflow,
    };
    let half = MetricsRequest {
        window: Duration::from_secs(days / 2 * 86_400),
        ..whole
    };
    let trace_id = {
        let r = a
            .query("SELECT trace_id FROM spans WHERE start_time >= TIMESTAMP '2026-10-15T12:00:00Z' LIMIT 1")
            .await?;
        let mut id = String::new();
        string_cell(&r, &mut id);
        id
    };
    let mut timings = Vec::new();
    for (name, sql) in &questions(&whole, &half, &trace_id) {
        let (ms, rows) = time_query(&a, sql, options.repeats).await?;
        timings.push(Timing::custos(name, ms, rows));
    }
    timings.extend(time_reports(&a, &whole, &options).await?);
    let (mut duckdb_version, mut duckdb_skipped, mut single_file_bytes) = (None, None, None);
    let compare = Compare {
        files: &files,
        trace_id: &trace_id,
        repeats: options.repeats,
        days,
        prices: options.prices.as_deref(),
    };
    match &options.duckdb_script {
        None => duckdb_skipped = Some("no script given".into()),
        Some(script) => match duckdb_compare(script, &compare) {
            Ok(out) => {
                duckdb_version = out.version;
                single_file_bytes = out.single_file_bytes;
                for t in &mut timings {
                    if let Some(ms) = out.timings.get(&t.name) {
                        t.duckdb_ms = Some(*ms);
                        t.ratio = Some(t.custos_ms / ms);
                    }
                    if let Some(ms) = out.single.get(&t.name) {
                        t.duckdb_single_ms = Some(*ms);
                        t.ratio_single = Some(t.custos_ms / ms);
                    }
                }
            }
            Err(e) => duckdb_skipped = Some(e),
        },
    }
    Ok(AnalyticsBenchReport {
        spans,
        runs,
        files: files.len(),
        table_bytes,
        single_file_bytes,
        workload,
        days,
        load_seconds,
        timings,
        duckdb_version,
        duckdb_skipped,
    })
}

fn metrics_rows(r: &custos_analytics::QueryResult, mut f: impl FnMut(i64)) {
    use arrow::array::AsArray;
    if let Some(b) = r.batches.iter().find(|b| b.num_rows() > 0)
        && let Ok(c) = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Int64)
    {
        f(c.as_primitive::<arrow::datatypes::Int64Type>().value(0));
    }
}

fn string_cell(r: &custos_analytics::QueryResult, out: &mut String) {
    use arrow::array::AsArray;
    if let Some(b) = r.batches.iter().find(|b| b.num_rows() > 0)
        && let Ok(c) = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)
    {
        *out = c.as_string::<i32>().value(0).to_string();
    }
}

struct DuckOut {
    version: Option<String>,
    single_file_bytes: Option<u64>,
    timings: std::collections::HashMap<String, f64>,
    single: std::collections::HashMap<String, f64>,
}

/// What the DuckDB script is asked.
struct Compare<'a> {
    files: &'a [PathBuf],
    trace_id: &'a str,
    repeats: usize,
    days: u64,
    prices: Option<&'a Path>,
}

fn duckdb_compare(script: &Path, c: &Compare<'_>) -> Result<DuckOut, String> {
    let (files, trace_id, repeats) = (c.files, c.trace_id, c.repeats);
    if !script.is_file() {
        return Err(format!("`{}` not found", script.display()));
    }
    let list = std::env::temp_dir().join(format!("custos-bench-files-{}.json", std::process::id()));
    let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    std::fs::write(
        &list,
        serde_json::to_vec(&files).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg("--files")
        .arg(&list)
        .arg("--end")
        .arg(end_of_data().to_rfc3339())
        .arg("--trace-id")
        .arg(trace_id)
        .arg("--repeats")
        .arg(repeats.to_string())
        .arg("--days")
        .arg(c.days.to_string())
        .args(
            c.prices
                .map(|p| ["--prices".as_ref(), p.as_os_str()])
                .into_iter()
                .flatten(),
        )
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    let _ = std::fs::remove_file(&list);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "the DuckDB script failed (install it with `pip install duckdb`): {}",
            err.lines().last().unwrap_or_default()
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let timings = |key: &str| {
        v.get(key)
            .and_then(|t| t.as_object())
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(DuckOut {
        version: v.get("version").and_then(|s| s.as_str()).map(String::from),
        single_file_bytes: v.get("single_file_bytes").and_then(|b| b.as_u64()),
        timings: timings("timings"),
        single: timings("single"),
    })
}
