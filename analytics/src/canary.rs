//! Canary measurement for the deploy gate: a candidate version against the current one, over the
//! same workflow and window, from the `decisions` and `runs` views.
//!
//! Traffic belongs to a version by the `automation.prompt.version` (or `automation.model.version`)
//! its decision spans carry; a run belongs to the version of its last decision. Definitions:
//!
//! - `decisions`: decision spans of the version in the window (the sample size);
//! - `override_rate`: overridden ÷ human-reviewed decisions;
//! - `error_rate`: failed ÷ finished runs;
//! - `p99_ms`: 99th percentile run duration (exact), finished runs;
//! - `cost_per_success_usd`: spend of all the version's runs ÷ successful runs;
//! - `confidence_psi`: PSI of the candidate's confidence against the current version's
//!   (`psi(confidence, is_candidate)`, the same function as `custos metrics`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::metrics::{Rows, sql_timestamp};
use crate::{Analytics, Result};

/// Which version attribute a change moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A prompt version (`automation.prompt.version`).
    Prompt,
    /// A model version (`automation.model.version`).
    Model,
}

impl ChangeKind {
    /// The views' column holding the version.
    pub fn column(self) -> &'static str {
        match self {
            ChangeKind::Prompt => "prompt_version",
            ChangeKind::Model => "model_version",
        }
    }

    /// `prompt` or `model`.
    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::Prompt => "prompt",
            ChangeKind::Model => "model",
        }
    }
}

/// What to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryQuery {
    /// Prompt or model.
    pub kind: ChangeKind,
    /// The workflow.
    pub workflow: String,
    /// Only decisions of this step, when set.
    pub step: Option<String>,
    /// The current version.
    pub current: String,
    /// The candidate version.
    pub candidate: String,
    /// Window start (inclusive).
    pub from: DateTime<Utc>,
    /// Window end (exclusive).
    pub to: DateTime<Utc>,
    /// Count only decisions (and runs, by their root span) from these sources (the workflow's
    /// `trusted_sources`); `None` counts every source.
    pub sources: Option<Vec<String>>,
}

/// ` AND source IN (…)` for a trusted-source set (nothing for `None`; an empty set matches
/// nothing, and neither does a span stored before sources were recorded).
pub fn source_filter(sources: Option<&[String]>) -> String {
    match sources {
        None => String::new(),
        Some([]) => " AND false".into(),
        Some(s) => format!(
            " AND source IN ({})",
            s.iter()
                .map(|s| sql_string(s))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// One version's measurements; `None` where the window has no data for it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VersionStats {
    /// The version.
    pub version: String,
    /// Decisions in the window.
    pub decisions: i64,
    /// Of which reviewed by a human.
    pub reviewed: i64,
    /// Of which overridden.
    pub overrides: i64,
    /// Runs attributed to the version.
    pub runs: i64,
    /// Finished runs.
    pub finished_runs: i64,
    /// Successful runs.
    pub successes: i64,
    /// Failed runs.
    pub failures: i64,
    /// Spend of all its runs.
    pub spend_usd: f64,
    /// Overrides ÷ reviewed.
    pub override_rate: Option<f64>,
    /// Failures ÷ finished runs.
    pub error_rate: Option<f64>,
    /// p99 run duration.
    pub p99_ms: Option<f64>,
    /// Spend ÷ successes.
    pub cost_per_success_usd: Option<f64>,
}

/// Both versions and their comparison.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CanaryMeasurement {
    /// The candidate.
    pub candidate: VersionStats,
    /// The current version.
    pub current: VersionStats,
    /// PSI of confidence, candidate against current; `None` without confidences on both sides.
    pub confidence_psi: Option<f64>,
    /// Decisions with a confidence, candidate side.
    pub psi_candidate_rows: i64,
    /// Decisions with a confidence, current side.
    pub psi_current_rows: i64,
}

fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn ratio(n: i64, d: i64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

impl CanaryMeasurement {
    /// Nothing measured yet for `q`'s two versions.
    fn of(q: &CanaryQuery) -> Self {
        let side = |version: &str| VersionStats {
            version: version.to_string(),
            ..Default::default()
        };
        Self {
            candidate: side(&q.candidate),
            current: side(&q.current),
            ..Default::default()
        }
    }

    /// The candidate's figures when `version` is the candidate, else the current version's.
    fn side(&mut self, version: &str) -> &mut VersionStats {
        if version == self.candidate.version {
            &mut self.candidate
        } else {
            &mut self.current
        }
    }
}

impl VersionStats {
    /// The rates from the counts.
    fn derive_rates(&mut self) {
        self.override_rate = ratio(self.overrides, self.reviewed);
        self.error_rate = ratio(self.failures, self.finished_runs);
        self.cost_per_success_usd =
            (self.successes > 0).then(|| self.spend_usd / self.successes as f64);
    }
}

/// Measures `q` over the session's views.
pub async fn measure(analytics: &Analytics, q: &CanaryQuery) -> Result<CanaryMeasurement> {
    let col = q.kind.column();
    let cand = sql_string(&q.candidate);
    let cur = sql_string(&q.current);
    let step = q
        .step
        .as_deref()
        .map(|s| format!(" AND step = {}", sql_string(s)))
        .unwrap_or_default();
    let filter = format!(
        "workflow = {wf} AND {col} IN ({cand}, {cur}) AND start_time >= {from} AND start_time < {to}{sources}",
        wf = sql_string(&q.workflow),
        from = sql_timestamp(q.from),
        to = sql_timestamp(q.to),
        sources = source_filter(q.sources.as_deref()),
    );
    let mut m = CanaryMeasurement::of(q);
    let decisions = analytics
        .query(&format!(
            "SELECT {col} AS version, count(*) AS decisions, \
             count(*) FILTER (WHERE human_reviewed) AS reviewed, \
             count(*) FILTER (WHERE human_override) AS overrides \
             FROM decisions WHERE {filter}{step} GROUP BY 1"
        ))
        .await?;
    Rows::new(&decisions).each(|r| {
        let s = m.side(&r.string("version"));
        s.decisions = r.i64("decisions");
        s.reviewed = r.i64("reviewed");
        s.overrides = r.i64("overrides");
    });
    let runs = analytics
        .query(&format!(
            "SELECT {col} AS version, count(*) AS runs, \
             count(*) FILTER (WHERE outcome <> 'in_progress') AS finished_runs, \
             count(*) FILTER (WHERE outcome = 'success') AS successes, \
             count(*) FILTER (WHERE outcome = 'failure') AS failures, \
             percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99, \
             sum(cost_usd) AS spend_usd \
             FROM runs WHERE {filter} GROUP BY 1"
        ))
        .await?;
    Rows::new(&runs).each(|r| {
        let s = m.side(&r.string("version"));
        s.runs = r.i64("runs");
        s.finished_runs = r.i64("finished_runs");
        s.successes = r.i64("successes");
        s.failures = r.i64("failures");
        s.p99_ms = r.f64("p99");
        s.spend_usd = r.f64("spend_usd").unwrap_or(0.0);
    });
    m.candidate.derive_rates();
    m.current.derive_rates();
    let psi = analytics
        .query(&format!(
            "SELECT psi(confidence, {col} = {cand}) AS psi, \
             count(*) FILTER (WHERE {col} = {cand}) AS cand_rows, \
             count(*) FILTER (WHERE {col} = {cur}) AS cur_rows \
             FROM decisions WHERE {filter}{step} AND confidence IS NOT NULL"
        ))
        .await?;
    Rows::new(&psi).each(|r| {
        m.psi_candidate_rows = r.i64("cand_rows");
        m.psi_current_rows = r.i64("cur_rows");
        m.confidence_psi = r.f64("psi");
    });
    if m.psi_candidate_rows == 0 || m.psi_current_rows == 0 {
        m.confidence_psi = None;
    }
    Ok(m)
}
