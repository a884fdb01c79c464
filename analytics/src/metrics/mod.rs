//! The standard metrics ("ready answers"), each one SQL query over the views.
//!
//! Definitions are in docs/metrics.md; the SQL is here, in constants, so what `custos metrics` and
//! `GET /api/metrics` report is exactly what a user gets by running the same query. A window is
//! `[at - window, at)`; a run belongs to the window its first span started in.
//!
//! This module holds the request, the report and the helpers the other analytics modules share
//! (timestamps, reading result rows); `query` holds the SQL and computes a report,
//! `render` renders one as text tables or CSV.

mod query;
mod render;

use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, QueryResult, Result};

pub use query::{DECISIONS_SQL, DRIFT_SQL, ERRORS_SQL, RUNS_SQL, STEPS_SQL, bind, compute};
pub use render::{render_csv, render_table, text_table};

/// Drift thresholds on the population stability index.
pub const PSI_WATCH: f64 = 0.1;
/// PSI at or above which drift needs action.
pub const PSI_ACT: f64 = 0.25;
/// Fewer rows than this on either side and drift is reported as `insufficient_data`: PSI over
/// small samples is biased upwards (see [`psi_noise`]).
pub const DRIFT_MIN_ROWS: i64 = 100;

/// The PSI expected from sampling noise alone when nothing drifted: about
/// `(bins − 1) · (1/n_baseline + 1/n_current)` (PSI is approximately a chi-square statistic).
pub fn psi_noise(baseline_rows: i64, current_rows: i64) -> Option<f64> {
    (baseline_rows > 0 && current_rows > 0).then(|| {
        (crate::udf::PSI_BINS as f64 - 1.0)
            * (1.0 / baseline_rows as f64 + 1.0 / current_rows as f64)
    })
}

/// The drift verdict for a PSI value and the sample sizes behind it.
pub fn drift_status(psi: Option<f64>, baseline_rows: i64, current_rows: i64) -> &'static str {
    match psi {
        _ if baseline_rows < DRIFT_MIN_ROWS || current_rows < DRIFT_MIN_ROWS => "insufficient_data",
        None => "insufficient_data",
        Some(p) if p >= PSI_ACT => "act",
        Some(p) if p >= PSI_WATCH => "watch",
        Some(_) => "stable",
    }
}

/// How the metrics are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// By workflow name.
    Workflow,
    /// By model (of the run's decision step, of the step, of the decision).
    Model,
    /// By model, model version and prompt version.
    Version,
    /// By UTC minute (sparklines of the last hour).
    Minute,
    /// By UTC hour.
    Hour,
    /// By UTC day.
    Day,
}

impl GroupBy {
    /// Parses `workflow`, `model`, `version`, `minute`, `hour` or `day`.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "workflow" => Self::Workflow,
            "model" => Self::Model,
            "version" => Self::Version,
            "minute" => Self::Minute,
            "hour" => Self::Hour,
            "day" => Self::Day,
            other => {
                return Err(Error::Plan(format!(
                    "unknown grouping `{other}`; expected one of workflow, model, version, minute, hour, day"
                )));
            }
        })
    }

    /// The grouping key as SQL over `runs`, `steps` or `decisions` (all have these columns).
    pub fn key_sql(self) -> &'static str {
        match self {
            Self::Workflow => "coalesce(workflow, '(none)')",
            Self::Model => "coalesce(model, '(none)')",
            Self::Version => {
                "concat(coalesce(model, '(none)'), ' ', coalesce(model_version, '-'), \
                 ' prompt ', coalesce(prompt_version, '-'))"
            }
            Self::Minute => "to_char(date_trunc('minute', start_time), '%Y-%m-%dT%H:%M:00Z')",
            Self::Hour => "to_char(date_trunc('hour', start_time), '%Y-%m-%dT%H:00Z')",
            Self::Day => "to_char(date_trunc('day', start_time), '%Y-%m-%d')",
        }
    }

    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Workflow => "workflow",
            Self::Model => "model",
            Self::Version => "version",
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }
}

/// An evaluation time as users write it (`--at`, `?at=`): RFC 3339, or now when absent. The
/// message says what is wrong with the value; callers name the parameter.
pub fn parse_at(at: Option<&str>) -> std::result::Result<DateTime<Utc>, String> {
    match at {
        None => Ok(Utc::now()),
        Some(s) => {
            let t = DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    format!("`{s}` is not an RFC 3339 time like 2026-11-21T12:00:00Z: {e}")
                })?;
            // Span times are nanoseconds since 1970 in an i64, which ends in 2262; a window
            // (at most 36500d) before `at` stays within what the engine can compare.
            if !(1970..=2200).contains(&chrono::Datelike::year(&t)) {
                return Err(format!("`{s}` is outside the years 1970 to 2200"));
            }
            Ok(t)
        }
    }
}

/// A SQL timestamp literal for `t`.
pub fn sql_timestamp(t: DateTime<Utc>) -> String {
    format!("TIMESTAMP '{}'", t.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
}

/// What to compute.
#[derive(Debug, Clone, Copy)]
pub struct MetricsRequest {
    /// Window length.
    pub window: Duration,
    /// End of the window (exclusive); usually now.
    pub at: DateTime<Utc>,
    /// Grouping.
    pub by: GroupBy,
}

/// Latency percentiles in milliseconds (exact, linear interpolation; see docs/metrics.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

/// The metrics of one group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupMetrics {
    /// The group's key (workflow, model, version or time bucket).
    pub key: String,
    /// Runs started in the window.
    pub runs: i64,
    /// Runs whose root span has arrived.
    pub finished_runs: i64,
    /// Runs still in progress (no root span yet).
    pub in_progress_runs: i64,
    /// Finished runs with outcome `success`.
    pub successes: i64,
    /// Finished runs with outcome `failure`.
    pub failures: i64,
    /// Finished runs with outcome `escalated`.
    pub escalations: i64,
    /// successes ÷ finished runs.
    pub success_rate: Option<f64>,
    /// escalations ÷ finished runs.
    pub escalation_rate: Option<f64>,
    /// Runs per hour over the window.
    pub runs_per_hour: f64,
    /// Latency of finished runs.
    pub run_latency_ms: Percentiles,
    /// Latency of step spans.
    pub step_latency_ms: Percentiles,
    /// Step spans.
    pub step_spans: i64,
    /// Step spans with status `error`.
    pub error_spans: i64,
    /// error spans ÷ step spans.
    pub error_rate: Option<f64>,
    /// Extra attempts: step spans beyond the first of the same step in the same run.
    pub retries: i64,
    /// Decisions (spans with a confidence or a decision outcome).
    pub decisions: i64,
    /// Decisions a human reviewed.
    pub human_reviews: i64,
    /// Reviewed decisions the human overrode.
    pub overrides: i64,
    /// human reviews ÷ decisions.
    pub human_review_rate: Option<f64>,
    /// overrides ÷ human reviews.
    pub override_rate: Option<f64>,
    /// All spend of the window's runs, failed, escalated and in-progress runs included (USD).
    pub spend_usd: f64,
    /// Spend computed from the price table rather than reported by spans (USD).
    pub computed_spend_usd: f64,
    /// Spans with token usage for a model without a price: their cost is missing from spend.
    pub unpriced_spans: i64,
    /// spend ÷ successful runs.
    pub cost_per_success_usd: Option<f64>,
}

/// One class of errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorClass {
    /// Step kind (`model`, `connector`, ...).
    pub step_kind: String,
    /// Class of the status message (docs/metrics.md).
    pub class: String,
    /// Connector, when the span names one.
    pub connector: String,
    /// Error spans.
    pub errors: i64,
    /// Runs affected.
    pub runs: i64,
}

/// Drift of one model's confidence distribution, current window against the window before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    /// Model.
    pub model: String,
    /// Baseline rows.
    pub baseline_rows: i64,
    /// Current rows.
    pub current_rows: i64,
    /// Population stability index.
    pub psi: Option<f64>,
    /// PSI expected from sampling noise alone at these sample sizes.
    pub psi_noise: Option<f64>,
    /// Kolmogorov–Smirnov statistic.
    pub ks: Option<f64>,
    /// Mean confidence in the baseline.
    pub baseline_mean: Option<f64>,
    /// Mean confidence in the current window.
    pub current_mean: Option<f64>,
    /// `stable`, `watch`, `act` or `insufficient_data`.
    pub status: String,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsReport {
    /// Window start (inclusive), RFC 3339.
    pub window_start: String,
    /// Window end (exclusive), RFC 3339.
    pub window_end: String,
    /// Window length, e.g. `24h`.
    pub window: String,
    /// Grouping.
    pub by: GroupBy,
    /// One entry per group, ordered by key.
    pub groups: Vec<GroupMetrics>,
    /// Errors by step kind, message class and connector, most frequent first.
    pub errors: Vec<ErrorClass>,
    /// Confidence drift per model; baseline is the window before the current one.
    pub drift: Vec<Drift>,
}

/// Reads result columns by name.
pub(crate) struct Rows<'a> {
    result: &'a QueryResult,
}

impl<'a> Rows<'a> {
    pub(crate) fn new(result: &'a QueryResult) -> Self {
        Self { result }
    }

    /// Calls `f` with a row accessor for every row.
    pub(crate) fn each(&self, mut f: impl FnMut(&Row<'_>)) {
        for batch in &self.result.batches {
            for i in 0..batch.num_rows() {
                f(&Row { batch, i });
            }
        }
    }
}

pub(crate) struct Row<'a> {
    batch: &'a arrow::record_batch::RecordBatch,
    i: usize,
}

impl Row<'_> {
    fn column(&self, name: &str) -> Option<&arrow::array::ArrayRef> {
        let idx = self.batch.schema().index_of(name).ok()?;
        let c = self.batch.column(idx);
        if c.is_null(self.i) { None } else { Some(c) }
    }
    pub(crate) fn f64(&self, name: &str) -> Option<f64> {
        let c = self.column(name)?;
        match c.data_type() {
            DataType::Float64 => Some(c.as_primitive::<Float64Type>().value(self.i)),
            DataType::Int64 => Some(c.as_primitive::<Int64Type>().value(self.i) as f64),
            _ => {
                let c = arrow::compute::cast(c, &DataType::Float64).ok()?;
                Some(c.as_primitive::<Float64Type>().value(self.i))
            }
        }
    }
    pub(crate) fn i64(&self, name: &str) -> i64 {
        self.f64(name).map_or(0, |v| v as i64)
    }
    pub(crate) fn string(&self, name: &str) -> String {
        let Some(c) = self.column(name) else {
            return String::new();
        };
        arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &Default::default())
            .map(|f| f.value(self.i).to_string())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_table_header_matches_its_rows() {
        let report = MetricsReport {
            window_start: String::new(),
            window_end: String::new(),
            window: "1d".into(),
            by: GroupBy::Workflow,
            groups: Vec::new(),
            errors: Vec::new(),
            drift: vec![Drift {
                model: "m".into(),
                baseline_rows: 500,
                current_rows: 400,
                psi: Some(0.3),
                psi_noise: psi_noise(500, 400),
                ks: Some(0.2),
                baseline_mean: Some(0.8),
                current_mean: Some(0.7),
                status: "act".into(),
            }],
        };
        let text = render_table(&report);
        let lines: Vec<&str> = text.lines().rev().take(2).collect();
        let (row, header) = (lines[0], lines[1]);
        assert_eq!(
            header.split_whitespace().collect::<Vec<_>>(),
            [
                "model", "baseline", "n", "current", "n", "psi", "noise", "ks", "mean", "before",
                "mean", "now", "status"
            ]
        );
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            [
                "m", "500", "400", "0.300", "0.041", "0.200", "0.800", "0.700", "act"
            ]
        );
    }

    #[test]
    fn drift_verdicts() {
        assert_eq!(drift_status(Some(0.3), 100, 100), "act");
        assert_eq!(drift_status(Some(0.1), 100, 100), "watch");
        assert_eq!(drift_status(Some(0.05), 100, 100), "stable");
        assert_eq!(drift_status(Some(0.9), 10, 100), "insufficient_data");
    }
}
