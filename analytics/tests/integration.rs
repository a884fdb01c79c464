//! Analytics over a real store built from the synthetic reference workload: golden SQL files under
//! `fixtures/sql/`, and every standard metric cross-checked against plain Rust over the raw OTLP
//! spans (independent of the normalizer, the views and DataFusion).
//!
//! Regenerate the golden files with `CUSTOS_REGENERATE=1 cargo test --workspace --test integration`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use custos_analytics::{Analytics, PriceTable, QueryOptions, QueryResult};
use custos_store::{Store, StoreOptions};
use custos_synth::reference::{SynthOptions, generate};

#[path = "integration/instrumentation.rs"]
mod instrumentation;
#[path = "integration/rollup.rs"]
mod rollup;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A store holding the default synthetic workload: the first half flushed to Parquet, the rest in
/// the WAL and memtable, so every query reads both.
async fn fixture_store(dir: &Path) -> Store {
    let mut o = StoreOptions::new(dir);
    o.flush_interval = std::time::Duration::from_secs(3600);
    o.retention_days = None;
    let store = Store::open(o).await.unwrap();
    let requests: Vec<_> = generate(SynthOptions::default()).collect();
    let half = requests.len() / 2;
    for (i, req) in requests.iter().enumerate() {
        let n = custos_collector::normalize(req, None).unwrap();
        assert_eq!(n.rejected, 0);
        store.append(n.batch.unwrap()).await.unwrap();
        if i + 1 == half {
            store.flush().await.unwrap();
        }
    }
    store
}

async fn fixture_analytics(dir: &Path) -> Analytics {
    let store = fixture_store(dir).await;
    let prices = PriceTable::load(&repo().join("rules/prices.yaml")).unwrap();
    Analytics::with_prices(store, QueryOptions::default(), prices)
        .await
        .unwrap()
}

/// Renders a result as tab-separated lines; floats with 6 decimals so the golden files do not
/// depend on the order partial sums were added in.
fn render(r: &QueryResult) -> Vec<String> {
    let mut lines = Vec::new();
    for batch in &r.batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| {
                arrow::util::display::ArrayFormatter::try_new(
                    c.as_ref(),
                    &arrow::util::display::FormatOptions::default().with_null("NULL"),
                )
                .unwrap()
            })
            .collect();
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = batch
                .columns()
                .iter()
                .zip(&formatters)
                .map(|(c, f)| match c.data_type() {
                    DataType::Float64 if !c.is_null(row) => {
                        let v = c.as_primitive::<arrow::datatypes::Float64Type>().value(row);
                        let s = format!("{v:.6}");
                        if s == "-0.000000" {
                            "0.000000".into()
                        } else {
                            s
                        }
                    }
                    _ => f.value(row).to_string(),
                })
                .collect();
            lines.push(cells.join("\t"));
        }
    }
    lines
}

/// One `query NAME` block of a golden file.
struct Block {
    name: String,
    sql: String,
    expected: Vec<String>,
}

fn parse_golden(text: &str) -> (Vec<String>, Vec<Block>) {
    let mut header = Vec::new();
    let mut blocks: Vec<Block> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(name) = line.strip_prefix("query ") {
            let mut sql = Vec::new();
            for l in lines.by_ref() {
                if l == "----" {
                    break;
                }
                sql.push(l);
            }
            let mut expected = Vec::new();
            while let Some(l) = lines.peek() {
                if l.is_empty() {
                    break;
                }
                expected.push(lines.next().unwrap().to_string());
            }
            blocks.push(Block {
                name: name.trim().to_string(),
                sql: sql.join("\n"),
                expected,
            });
        } else if blocks.is_empty() && !line.is_empty() {
            header.push(line.to_string());
        }
    }
    (header, blocks)
}

/// Runs every golden file under `fixtures/sql/`; with `CUSTOS_REGENERATE=1`, rewrites them.
#[tokio::test]
async fn golden_sql_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = fixture_analytics(dir.path()).await;
    let regenerate = std::env::var("CUSTOS_REGENERATE").is_ok_and(|v| v == "1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("fixtures/sql"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let (header, blocks) = parse_golden(&text);
        assert!(!blocks.is_empty(), "{}", file.display());
        let mut out = header.join("\n");
        out.push_str("\n\n");
        for b in &blocks {
            let actual = match a.query(&b.sql).await {
                Ok(r) => render(&r),
                // First line only: engines append hints and candidate lists that are not the point.
                Err(e) => vec![format!(
                    "error: {}",
                    e.to_string().lines().next().unwrap_or_default().trim_end()
                )],
            };
            if !regenerate && actual != b.expected {
                failures.push(format!(
                    "{} `{}`:\n--- expected\n{}\n--- actual\n{}",
                    file.display(),
                    b.name,
                    b.expected.join("\n"),
                    actual.join("\n")
                ));
            }
            out.push_str(&format!("query {}\n{}\n----\n", b.name, b.sql));
            for l in &actual {
                out.push_str(l);
                out.push('\n');
            }
            out.push('\n');
        }
        if regenerate {
            std::fs::write(file, out.trim_end().to_string() + "\n").unwrap();
        }
    }
    assert!(
        failures.is_empty(),
        "golden SQL mismatches (regenerate with CUSTOS_REGENERATE=1 if intended):\n{}",
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Cross-checks: every standard metric recomputed in plain Rust from the raw OTLP spans.
// ---------------------------------------------------------------------------------------------

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use custos_analytics::metrics::{GroupBy, MetricsRequest};
use opentelemetry_proto::tonic::common::v1::any_value::Value;

/// A span as sent, with its attributes by key.
struct Raw {
    trace: Vec<u8>,
    is_root: bool,
    start: u64,
    end: u64,
    error: Option<String>,
    attrs: HashMap<String, Value>,
}

impl Raw {
    fn s(&self, k: &str) -> Option<&str> {
        match self.attrs.get(k) {
            Some(Value::StringValue(v)) => Some(v),
            _ => None,
        }
    }
    fn i(&self, k: &str) -> Option<i64> {
        match self.attrs.get(k) {
            Some(Value::IntValue(v)) => Some(*v),
            _ => None,
        }
    }
    fn f(&self, k: &str) -> Option<f64> {
        match self.attrs.get(k) {
            Some(Value::DoubleValue(v)) => Some(*v),
            _ => None,
        }
    }
    fn b(&self, k: &str) -> Option<bool> {
        match self.attrs.get(k) {
            Some(Value::BoolValue(v)) => Some(*v),
            _ => None,
        }
    }
    fn model(&self) -> Option<&str> {
        self.s("gen_ai.response.model")
            .or(self.s("gen_ai.request.model"))
            .or(self.s("llm.model_name"))
    }
    /// Reported cost, else the cost from the prices in rules/prices.yaml written out by hand.
    fn cost(&self) -> (Option<f64>, &'static str) {
        if let Some(c) = self.f("gen_ai.usage.cost") {
            return (Some(c), "reported");
        }
        let input = self
            .i("gen_ai.usage.input_tokens")
            .or(self.i("llm.token_count.prompt"));
        let output = self
            .i("gen_ai.usage.output_tokens")
            .or(self.i("llm.token_count.completion"));
        if input.is_none() && output.is_none() {
            return (None, "none");
        }
        match self.model() {
            Some("claude-sonnet-4") => {
                let cr = self.i("gen_ai.usage.cache_read.input_tokens").unwrap_or(0) as f64;
                let cw = self
                    .i("gen_ai.usage.cache_creation.input_tokens")
                    .unwrap_or(0) as f64;
                let r = self.i("gen_ai.usage.reasoning.output_tokens").unwrap_or(0) as f64;
                let (i, o) = (input.unwrap_or(0) as f64, output.unwrap_or(0) as f64);
                let c =
                    ((i - cr - cw) * 3.0 + cr * 0.30 + cw * 3.75 + (o - r) * 15.0 + r * 15.0) / 1e6;
                (Some(c), "computed")
            }
            _ => (None, "unpriced"),
        }
    }
    fn is_decision(&self) -> bool {
        self.f("automation.decision.confidence").is_some()
            || self.s("automation.decision.outcome").is_some()
    }
    fn reviewed(&self) -> bool {
        self.b("automation.human.override").is_some()
            || self.s("automation.human.reviewer").is_some()
            || self.i("automation.human.review_ms").is_some()
    }
}

fn raw_spans() -> Vec<Raw> {
    let mut out = Vec::new();
    for req in generate(SynthOptions::default()) {
        for rs in req.resource_spans {
            for ss in rs.scope_spans {
                for span in ss.spans {
                    out.push(Raw {
                        trace: span.trace_id.clone(),
                        is_root: span.parent_span_id.is_empty(),
                        start: span.start_time_unix_nano,
                        end: span.end_time_unix_nano,
                        error: span
                            .status
                            .as_ref()
                            .filter(|s| s.code == 2)
                            .map(|s| s.message.clone()),
                        attrs: span
                            .attributes
                            .iter()
                            .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?.value?)))
                            .collect(),
                    });
                }
            }
        }
    }
    out
}

fn nanos(t: &str) -> u64 {
    DateTime::parse_from_rfc3339(t)
        .unwrap()
        .timestamp_nanos_opt()
        .unwrap() as u64
}

/// Exact percentile with linear interpolation (the definition of `percentile_cont`).
fn exact_percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let pos = q * (values.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    values[lo] + (values[hi] - values[lo]) * (pos - lo as f64)
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-12)
}

#[derive(Default, Debug)]
struct Expected {
    runs: i64,
    in_progress: i64,
    successes: i64,
    failures: i64,
    escalations: i64,
    durations: Vec<f64>,
    step_durations: Vec<f64>,
    step_spans: i64,
    error_spans: i64,
    retries: i64,
    decisions: i64,
    reviews: i64,
    overrides: i64,
    spend: f64,
    computed_spend: f64,
    unpriced: i64,
}

const AT: &str = "2026-11-03T00:00:00Z";
const WINDOW_START: &str = "2026-11-02T00:00:00Z";
const BASELINE_START: &str = "2026-11-01T00:00:00Z";

fn expected_by_workflow(spans: &[Raw]) -> BTreeMap<String, Expected> {
    let (lo, hi) = (nanos(WINDOW_START), nanos(AT));
    let mut by_trace: BTreeMap<&[u8], Vec<&Raw>> = BTreeMap::new();
    for s in spans {
        by_trace.entry(&s.trace).or_default().push(s);
    }
    let mut out: BTreeMap<String, Expected> = BTreeMap::new();
    for run in by_trace.values() {
        let wf = run
            .iter()
            .find_map(|s| s.s("automation.workflow"))
            .unwrap()
            .to_string();
        let e = out.entry(wf).or_default();
        let start = run.iter().map(|s| s.start).min().unwrap();
        if start >= lo && start < hi {
            e.runs += 1;
            match run.iter().find(|s| s.is_root) {
                None => e.in_progress += 1,
                Some(root) => {
                    match root.s("automation.outcome") {
                        Some("success") => e.successes += 1,
                        Some("failure") => e.failures += 1,
                        Some("escalated") => e.escalations += 1,
                        other => panic!("{other:?}"),
                    }
                    e.durations.push((root.end - start) as f64 / 1e6);
                }
            }
            let mut seen = std::collections::HashSet::new();
            for s in run {
                if let Some(step) = s.s("automation.step")
                    && !seen.insert(step)
                {
                    e.retries += 1;
                }
                e.spend += s.cost().0.unwrap_or(0.0);
            }
        }
        for s in run.iter().filter(|s| s.start >= lo && s.start < hi) {
            if s.s("automation.step").is_some() {
                e.step_spans += 1;
                e.error_spans += s.error.is_some() as i64;
                e.step_durations.push((s.end - s.start) as f64 / 1e6);
                match s.cost() {
                    (Some(c), "computed") => e.computed_spend += c,
                    (_, "unpriced") => e.unpriced += 1,
                    _ => {}
                }
            }
            if s.is_decision() {
                e.decisions += 1;
                if s.reviewed() {
                    e.reviews += 1;
                    e.overrides += (s.b("automation.human.override") == Some(true)) as i64;
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn metrics_match_an_independent_computation() {
    let dir = tempfile::tempdir().unwrap();
    let a = fixture_analytics(dir.path()).await;
    let at: DateTime<Utc> = DateTime::parse_from_rfc3339(AT)
        .unwrap()
        .with_timezone(&Utc);
    let req = MetricsRequest {
        window: std::time::Duration::from_secs(86_400),
        at,
        by: GroupBy::Workflow,
    };
    let report = custos_analytics::metrics::compute(&a, &req).await.unwrap();
    let spans = raw_spans();
    let expected = expected_by_workflow(&spans);
    assert_eq!(report.groups.len(), expected.len());
    for g in &report.groups {
        let e = expected.get(&g.key).unwrap();
        let finished = e.successes + e.failures + e.escalations;
        assert_eq!(g.runs, e.runs, "{}", g.key);
        assert_eq!(g.in_progress_runs, e.in_progress, "{}", g.key);
        assert_eq!(g.finished_runs, finished);
        assert_eq!(
            (g.successes, g.failures, g.escalations),
            (e.successes, e.failures, e.escalations)
        );
        assert!(close(
            g.success_rate.unwrap(),
            e.successes as f64 / finished as f64,
            1e-12
        ));
        assert!(close(
            g.escalation_rate.unwrap(),
            e.escalations as f64 / finished as f64,
            1e-12
        ));
        assert!(close(g.runs_per_hour, e.runs as f64 / 24.0, 1e-12));
        // Latency: the exact percentiles (the interpolation fraction is carried to 6 decimals).
        let mut d = e.durations.clone();
        for (q, got) in [
            (0.5, g.run_latency_ms.p50),
            (0.95, g.run_latency_ms.p95),
            (0.99, g.run_latency_ms.p99),
        ] {
            let exact = exact_percentile(&mut d, q);
            assert!(
                close(got.unwrap(), exact, 1e-6),
                "{} run p{q}: {got:?} vs exact {exact}",
                g.key
            );
        }
        let mut d = e.step_durations.clone();
        let exact = exact_percentile(&mut d, 0.99);
        assert!(
            close(g.step_latency_ms.p99.unwrap(), exact, 1e-6),
            "{} step p99",
            g.key
        );
        assert_eq!(
            (g.step_spans, g.error_spans, g.retries),
            (e.step_spans, e.error_spans, e.retries),
            "{}",
            g.key
        );
        assert!(close(
            g.error_rate.unwrap(),
            e.error_spans as f64 / e.step_spans as f64,
            1e-12
        ));
        assert_eq!(
            (g.decisions, g.human_reviews, g.overrides),
            (e.decisions, e.reviews, e.overrides),
            "{}",
            g.key
        );
        assert!(close(
            g.human_review_rate.unwrap(),
            e.reviews as f64 / e.decisions as f64,
            1e-12
        ));
        assert!(close(
            g.override_rate.unwrap(),
            e.overrides as f64 / e.reviews as f64,
            1e-12
        ));
        assert!(
            close(g.spend_usd, e.spend, 1e-9),
            "{} spend {} vs {}",
            g.key,
            g.spend_usd,
            e.spend
        );
        assert!(
            close(g.computed_spend_usd, e.computed_spend, 1e-9),
            "{}",
            g.key
        );
        assert_eq!(g.unpriced_spans, e.unpriced, "{}", g.key);
        assert!(close(
            g.cost_per_success_usd.unwrap(),
            e.spend / e.successes as f64,
            1e-9
        ));
    }

    // Per minute and per hour (the dashboard's sparklines): the same runs, finer buckets.
    let total: i64 = report.groups.iter().map(|g| g.runs).sum();
    let mut counts = Vec::new();
    for by in [GroupBy::Minute, GroupBy::Hour] {
        let r = custos_analytics::metrics::compute(&a, &MetricsRequest { by, ..req })
            .await
            .unwrap();
        counts.push((r.groups.len(), r.groups.iter().map(|g| g.runs).sum::<i64>()));
        if by == GroupBy::Minute {
            assert!(
                r.groups
                    .iter()
                    .all(|g| g.key.len() == 20 && g.key.ends_with(":00Z"))
            );
        }
    }
    assert_eq!((counts[0].1, counts[1].1), (total, total));
    assert!(counts[0].0 > counts[1].0, "{counts:?}");

    // Error taxonomy: the synthetic connectors fail with two kinds of messages.
    let (lo, hi) = (nanos(WINDOW_START), nanos(AT));
    let mut classes: BTreeMap<(String, String), i64> = BTreeMap::new();
    for s in spans
        .iter()
        .filter(|s| s.start >= lo && s.start < hi && s.s("automation.step").is_some())
    {
        if let Some(m) = &s.error {
            let class = if m.contains("timeout") {
                "timeout"
            } else if m.contains("503") {
                "upstream_5xx"
            } else {
                "other"
            };
            *classes
                .entry((
                    class.to_string(),
                    s.s("automation.connector").unwrap_or("(none)").to_string(),
                ))
                .or_default() += 1;
        }
    }
    let got: BTreeMap<(String, String), i64> = report
        .errors
        .iter()
        .map(|e| ((e.class.clone(), e.connector.clone()), e.errors))
        .collect();
    assert_eq!(got, classes);

    // Drift of each model's confidence: current day against the day before, with PSI and KS
    // computed here from raw values.
    let base_lo = nanos(BASELINE_START);
    let mut by_model: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for s in spans.iter().filter(|s| s.start >= base_lo && s.start < hi) {
        if let Some(c) = s.f("automation.decision.confidence") {
            let e = by_model.entry(s.model().unwrap().to_string()).or_default();
            if s.start >= lo {
                e.1.push(c)
            } else {
                e.0.push(c)
            }
        }
    }
    assert_eq!(report.drift.len(), by_model.len());
    for d in &report.drift {
        let (b, c) = by_model.get_mut(&d.model).unwrap();
        assert_eq!(
            (d.baseline_rows, d.current_rows),
            (b.len() as i64, c.len() as i64)
        );
        let bins = |v: &[f64]| {
            let mut h = [0f64; 10];
            for x in v {
                h[((x * 10.0).floor() as usize).min(9)] += 1.0;
            }
            h
        };
        let (hb, hc) = (bins(b), bins(c));
        let psi: f64 = (0..10)
            .map(|i| {
                let pb = (hb[i] + 0.5) / (b.len() as f64 + 5.0);
                let pc = (hc[i] + 0.5) / (c.len() as f64 + 5.0);
                (pc - pb) * (pc / pb).ln()
            })
            .sum();
        assert!(
            close(d.psi.unwrap(), psi, 1e-9),
            "{}: {:?} vs {psi}",
            d.model,
            d.psi
        );
        // KS: the largest gap between the empirical CDFs, evaluated at every observed value.
        let cdf = |v: &[f64], x: f64| v.iter().filter(|y| **y <= x).count() as f64 / v.len() as f64;
        let ks = b
            .iter()
            .chain(c.iter())
            .map(|x| (cdf(b, *x) - cdf(c, *x)).abs())
            .fold(0.0, f64::max);
        assert!(
            close(d.ks.unwrap(), ks, 1e-9),
            "{}: ks {:?} vs {ks}",
            d.model,
            d.ks
        );
    }
    let gpt = report.drift.iter().find(|d| d.model == "gpt-4o").unwrap();
    assert_eq!(gpt.status, "act", "the injected drift is detected: {gpt:?}");
}

#[tokio::test]
async fn thresholds_match_an_independent_computation() {
    let dir = tempfile::tempdir().unwrap();
    let a = fixture_analytics(dir.path()).await;
    let end: DateTime<Utc> = DateTime::parse_from_rfc3339(AT)
        .unwrap()
        .with_timezone(&Utc);
    let req = custos_analytics::thresholds::ThresholdRequest {
        workflow: "support-triage".into(),
        step: None,
        target_error: 0.05,
        start: end - chrono::Duration::days(30),
        end,
    };
    let report = custos_analytics::thresholds::compute(&a, &req)
        .await
        .unwrap();
    let decisions: Vec<(f64, bool, bool)> = raw_spans()
        .iter()
        .filter(|s| s.s("automation.workflow") == Some("support-triage"))
        .filter_map(|s| {
            let c = s.f("automation.decision.confidence")?;
            Some((
                c,
                s.reviewed(),
                s.b("automation.human.override") == Some(true),
            ))
        })
        .collect();
    assert_eq!(report.decisions, decisions.len() as i64);
    for p in &report.curve {
        let above: Vec<_> = decisions
            .iter()
            .filter(|d| d.0 >= p.threshold - 1e-9)
            .collect();
        let reviewed = above.iter().filter(|d| d.1).count() as i64;
        let overrides = above.iter().filter(|d| d.1 && d.2).count() as i64;
        assert_eq!(p.automated, above.len() as i64, "t={}", p.threshold);
        assert_eq!(
            (p.reviewed, p.overrides),
            (reviewed, overrides),
            "t={}",
            p.threshold
        );
    }
    // The recommendation is the lowest threshold meeting the target with enough evidence.
    let rec = report.recommended.clone().unwrap();
    assert!(rec.expected_error_rate.unwrap() <= 0.05 && rec.reviewed >= 30);
    for p in report.curve.iter().filter(|p| p.threshold < rec.threshold) {
        assert!(
            p.reviewed < 30 || p.expected_error_rate.unwrap() > 0.05,
            "{p:?}"
        );
    }
    // Stricter targets recommend higher thresholds (less automation).
    let strict = custos_analytics::thresholds::compute(
        &a,
        &custos_analytics::thresholds::ThresholdRequest {
            target_error: 0.02,
            ..req.clone()
        },
    )
    .await
    .unwrap();
    if let Some(s) = strict.recommended {
        assert!(s.threshold >= rec.threshold);
    }
    let table = custos_analytics::thresholds::render_table(&report);
    assert!(table.contains("recommended threshold"), "{table}");
    let unknown = custos_analytics::thresholds::compute(
        &a,
        &custos_analytics::thresholds::ThresholdRequest {
            workflow: "nope".into(),
            ..req
        },
    )
    .await
    .unwrap_err();
    assert!(unknown.to_string().contains("`nope`"), "{unknown}");
}

#[tokio::test]
async fn slos_match_an_independent_computation() {
    let dir = tempfile::tempdir().unwrap();
    let a = fixture_analytics(dir.path()).await;
    let set = custos_analytics::slo::SloSet::load(&repo().join("rules/slos.yaml")).unwrap();
    set.check_sql(&a).await.unwrap();
    let at: DateTime<Utc> = DateTime::parse_from_rfc3339(AT)
        .unwrap()
        .with_timezone(&Utc);
    let report = custos_analytics::slo::evaluate(&a, &set, at).await.unwrap();
    let spans = raw_spans();
    // run-success: failures among runs whose root ended in the window.
    let roots: Vec<&Raw> = spans.iter().filter(|s| s.is_root).collect();
    let ratio = |secs: u64| {
        let lo = nanos(AT) - secs * 1_000_000_000;
        let ended: Vec<_> = roots
            .iter()
            .filter(|r| r.end >= lo && r.end < nanos(AT))
            .collect();
        let bad = ended
            .iter()
            .filter(|r| r.s("automation.outcome") == Some("failure"))
            .count();
        (bad as f64, ended.len() as f64)
    };
    let success = report
        .slos
        .iter()
        .find(|s| s.name == "run-success")
        .unwrap();
    for w in &success.windows {
        let secs = custos_analytics::duration::parse(&w.window)
            .unwrap()
            .as_secs();
        let (bad, total) = ratio(secs);
        assert_eq!((w.errors, w.total), (bad, total), "window {}", w.window);
        if total > 0.0 {
            assert!(close(w.burn_rate.unwrap(), bad / total / 0.05, 1e-9));
        } else {
            assert_eq!(w.burn_rate, None);
        }
    }
    let (bad, total) = ratio(30 * 86_400);
    assert!(close(
        success.error_budget_remaining.unwrap(),
        1.0 - (bad / total) / 0.05,
        1e-9
    ));
    for alert in &success.alerts {
        let burn = |w: &str| {
            success
                .windows
                .iter()
                .find(|x| x.window == w)
                .unwrap()
                .burn_rate
        };
        let want = burn(&alert.long).is_some_and(|b| b > alert.burn_rate_threshold)
            && burn(&alert.short).is_some_and(|b| b > alert.burn_rate_threshold);
        assert_eq!(alert.firing, want);
    }
    // cost-per-success: the burn rate is (spend / successes) / ceiling.
    let cost = report
        .slos
        .iter()
        .find(|s| s.name == "cost-per-success")
        .unwrap();
    let lo = nanos(AT) - 30 * 86_400 * 1_000_000_000;
    let mut by_trace: BTreeMap<&[u8], Vec<&Raw>> = BTreeMap::new();
    for s in &spans {
        by_trace.entry(&s.trace).or_default().push(s);
    }
    let (mut spend, mut successes) = (0.0, 0.0);
    for run in by_trace.values() {
        let start = run.iter().map(|s| s.start).min().unwrap();
        if start >= lo && start < nanos(AT) {
            spend += run.iter().filter_map(|s| s.cost().0).sum::<f64>();
            successes += run
                .iter()
                .any(|s| s.s("automation.outcome") == Some("success"))
                as i64 as f64;
        }
    }
    let period = cost.windows.iter().find(|w| w.window == "30d").unwrap();
    assert!(close(
        period.burn_rate.unwrap(),
        spend / successes / 0.05,
        1e-9
    ));
    // Prometheus gauges use Sloth's names.
    let text = custos_analytics::slo::render_prometheus(&report, &set);
    for name in [
        "slo:sli_error:ratio_rate5m{",
        "slo:sli_error:ratio_rate30d{",
        "slo:objective:ratio{",
        "slo:error_budget:ratio{",
        "slo:period_error_budget_remaining:ratio{",
        "slo:current_burn_rate:ratio{",
        "sloth_slo_info{",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    assert!(text.contains("sloth_service=\"reference-workflows\",sloth_slo=\"run-success\""));
}

/// A statement is planned before it runs, and the plan says which tables it reads: through
/// views and subqueries too, so a caller can ask for `read_audit` before anything runs.
#[tokio::test]
async fn prepared_statements_name_every_table_they_read() {
    let dir = tempfile::tempdir().unwrap();
    let analytics = fixture_analytics(dir.path()).await;
    let tables = |sql: &'static str| {
        let a = &analytics;
        async move {
            a.prepare(sql)
                .await
                .unwrap()
                .tables()
                .iter()
                .cloned()
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(tables("SELECT count(*) FROM spans").await, ["spans"]);
    // `runs` is a view over the run rollup's partial rows: both are named.
    let runs = tables("SELECT count(*) FROM runs").await;
    assert!(runs.contains(&"run_parts".to_string()), "{runs:?}");
    let decisions = tables("SELECT count(*) FROM decisions").await;
    assert!(decisions.contains(&"spans".to_string()), "{decisions:?}");
    for sql in [
        "SELECT * FROM audit",
        "SELECT count(*) FROM spans WHERE trace_id IN (SELECT principal FROM audit)",
        "WITH a AS (SELECT seq FROM audit) SELECT count(*) FROM a",
        "SELECT count(*) FROM spans s JOIN (SELECT kind FROM datafusion.public.audit) x ON s.name = x.kind",
    ] {
        let t = tables(sql).await;
        assert!(
            t.contains(&custos_analytics::AUDIT_TABLE.to_string()),
            "{sql}: {t:?}"
        );
    }
    assert!(!tables("SELECT 1").await.contains(&"audit".to_string()));
    // Preparing refuses what running refuses, and a prepared statement runs.
    assert!(analytics.prepare("DROP TABLE spans").await.is_err());
    let r = analytics
        .prepare("SELECT count(*) AS n FROM spans")
        .await
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(r.num_rows(), 1);
}
