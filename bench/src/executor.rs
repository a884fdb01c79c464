//! `custos bench executor`: executor throughput with a durable journal.
//!
//! Each run of the benchmark workflow makes four steps (a confident local model, a transform,
//! a ledger posting and an email), two of them side effects: authorized with the shipped
//! policies and recorded in the audit log (fdatasync each), journaled before and after the call
//! (redb, fsync'ed commits grouped across concurrent runs), and appended to the connectors' files
//! (fdatasync each). Runs are timed at one and at `concurrency` runs in flight, so the ratio shows
//! what group commit buys. No telemetry is sent.

use std::path::Path;
use std::time::Instant;

use custos_executor::batch::{self, Input};
use custos_executor::telemetry::Telemetry;
use custos_executor::{Executor, ExecutorOptions};
use custos_policy::engine::Engine;
use serde::Serialize;
use serde_json::json;

use crate::{Error, Result};

const WORKFLOW: &str = r#"
name: invoice-processing
version: "bench"
input: {invoice_id: string, amount_usd: number, vendor: string}
models:
  m: {provider: local, model: seeded-extractor, version: "1", seed: 1, accuracy: 1.0, confidence_shift: 1.0}
connectors:
  ledger: {kind: ledger}
  mail: {kind: outbox}
steps:
  - {id: extract, kind: model, task: extract, model: m, prompt_version: v1}
  - {id: validate, kind: transform, set: {amount_usd: extract.output.total, vendor: input.vendor}}
  - {id: post, kind: connector, connector: ledger, operation: post}
  - {id: notify, kind: connector, connector: mail, operation: send}
"#;

/// One timed configuration.
#[derive(Debug, Clone, Serialize)]
pub struct ExecutorFigures {
    /// Runs in flight at once.
    pub concurrency: usize,
    /// Runs finished.
    pub runs: usize,
    /// Steps run.
    pub steps: u64,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Steps per second.
    pub steps_per_second: f64,
    /// Runs per second.
    pub runs_per_second: f64,
    /// Median run duration in milliseconds.
    pub p50_run_ms: i64,
    /// 99th percentile run duration in milliseconds.
    pub p99_run_ms: i64,
}

async fn one(policies: &Path, runs: usize, concurrency: usize) -> Result<ExecutorFigures> {
    let dir = std::env::temp_dir().join(format!(
        "custos-bench-executor-{}-{concurrency}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let engine = Engine::load(policies)?;
    let ex = Executor::open(ExecutorOptions {
        data_dir: dir.clone(),
        engine: Some(engine.into()),
        telemetry: Telemetry::off(),
        principal: "executor".into(),
        scrub: None,
    })
    .map_err(Error::Executor)?;
    let inputs: Vec<Input> = (0..runs)
        .map(|i| Input {
            key: format!("bench:{i}"),
            value: json!({"invoice_id": format!("inv-{i}"), "amount_usd": 100.0 + i as f64, "vendor": "acme"}),
        })
        .collect();
    let t = Instant::now();
    let summary = batch::run_inputs(
        &ex,
        WORKFLOW,
        "bench.yaml",
        inputs,
        "automation",
        concurrency,
    )
    .await
    .map_err(Error::Executor)?;
    let seconds = t.elapsed().as_secs_f64();
    let steps: u64 = summary.runs.iter().map(|r| u64::from(r.steps_run)).sum();
    let ok = summary
        .runs
        .iter()
        .filter(|r| r.outcome.as_deref() == Some("success"))
        .count();
    if ok != runs {
        return Err(Error::Task(format!(
            "benchmark runs failed: {ok} of {runs} succeeded ({:?})",
            summary.outcomes()
        )));
    }
    let mut durations: Vec<i64> = summary
        .runs
        .iter()
        .filter_map(|r| r.finished_ms.map(|f| f - r.started_ms))
        .collect();
    durations.sort_unstable();
    let pct = |q: f64| {
        durations
            .get(((durations.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    drop(ex);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ExecutorFigures {
        concurrency,
        runs,
        steps,
        seconds,
        steps_per_second: steps as f64 / seconds.max(1e-9),
        runs_per_second: runs as f64 / seconds.max(1e-9),
        p50_run_ms: pct(0.5),
        p99_run_ms: pct(0.99),
    })
}

/// Times `runs` runs at one run in flight and at `concurrency`.
pub async fn run(policies: &Path, runs: usize, concurrency: usize) -> Result<Vec<ExecutorFigures>> {
    let serial = one(policies, (runs / 4).max(1), 1).await?;
    let grouped = one(policies, runs, concurrency.max(2)).await?;
    Ok(vec![serial, grouped])
}

/// The figures as text.
pub fn render(figures: &[ExecutorFigures]) -> String {
    let mut out = String::from(
        "executor throughput (durable journal, policy checks with audit records, connector effects fsync'ed)\n\nin flight  runs   steps  seconds  steps/s  runs/s  run p50 ms  run p99 ms\n",
    );
    for f in figures {
        out.push_str(&format!(
            "{:<10} {:<6} {:<6} {:<8.2} {:<8.0} {:<7.0} {:<11} {}\n",
            f.concurrency,
            f.runs,
            f.steps,
            f.seconds,
            f.steps_per_second,
            f.runs_per_second,
            f.p50_run_ms,
            f.p99_run_ms
        ));
    }
    if let [a, b] = figures {
        out.push_str(&format!(
            "\ngroup commit: {:.1}x the steps per second of one run at a time\n",
            b.steps_per_second / a.steps_per_second.max(1e-9)
        ));
    }
    out
}
