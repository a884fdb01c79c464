//! Confidence-threshold tuning from reviewed decisions.
//!
//! For a workflow's decisions, each candidate threshold `t` (0.00, 0.01, ..., 1.00) splits decisions
//! into those that would be automated (`confidence >= t`) and those sent to a human. The curve
//! reports, per threshold, the automation rate (share of decisions at or above `t`) and the
//! expected error rate of the automated share, estimated from the decisions humans reviewed: among
//! reviewed decisions with `confidence >= t`, the share a human overrode. The recommendation is the
//! lowest threshold (most automation) whose expected error rate is at or below the target with at
//! least [`MIN_REVIEWED`] reviewed decisions behind the estimate; the Wilson 95% upper bound is
//! reported beside each estimate so a small sample is visible as such.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::metrics::{Rows, sql_timestamp, text_table};
use crate::{Analytics, Error, Result};

/// Fewest reviewed decisions at or above a threshold for it to be recommended.
pub const MIN_REVIEWED: i64 = 30;

/// The decisions read for tuning.
pub const THRESHOLDS_SQL: &str = "SELECT confidence, human_reviewed, human_override FROM decisions
WHERE workflow = {workflow} AND confidence IS NOT NULL {step_filter}
  AND start_time >= {start} AND start_time < {end}";

/// One point of the curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdPoint {
    /// The threshold.
    pub threshold: f64,
    /// Decisions with confidence at or above it.
    pub automated: i64,
    /// automated ÷ all decisions.
    pub automation_rate: f64,
    /// Reviewed decisions at or above it.
    pub reviewed: i64,
    /// Overridden among those.
    pub overrides: i64,
    /// overrides ÷ reviewed.
    pub expected_error_rate: Option<f64>,
    /// Wilson 95% upper bound of the expected error rate.
    pub error_rate_upper_95: Option<f64>,
}

/// The tuning answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdReport {
    /// Workflow.
    pub workflow: String,
    /// Step, when restricted to one.
    pub step: Option<String>,
    /// Target error rate.
    pub target_error: f64,
    /// Decisions with a confidence.
    pub decisions: i64,
    /// Of which reviewed.
    pub reviewed: i64,
    /// The curve, one point per hundredth with at least one decision at or above it.
    pub curve: Vec<ThresholdPoint>,
    /// The recommended threshold, if one meets the target.
    pub recommended: Option<ThresholdPoint>,
}

/// What to tune.
#[derive(Debug, Clone)]
pub struct ThresholdRequest {
    /// Workflow name.
    pub workflow: String,
    /// Restrict to one decision step.
    pub step: Option<String>,
    /// Target error rate, e.g. 0.03.
    pub target_error: f64,
    /// Window start.
    pub start: DateTime<Utc>,
    /// Window end (exclusive).
    pub end: DateTime<Utc>,
}

fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Wilson score interval upper bound at 95%.
pub fn wilson_upper(successes: i64, n: i64) -> Option<f64> {
    if n <= 0 {
        return None;
    }
    let (n, p, z) = (n as f64, successes as f64 / n as f64, 1.96f64);
    let denom = 1.0 + z * z / n;
    let centre = p + z * z / (2.0 * n);
    let margin = z * ((p * (1.0 - p) + z * z / (4.0 * n)) / n).sqrt();
    Some(((centre + margin) / denom).min(1.0))
}

/// Builds the curve from `(confidence, reviewed, overridden)` rows.
pub fn curve(
    rows: &[(f64, bool, bool)],
    target_error: f64,
) -> (Vec<ThresholdPoint>, Option<ThresholdPoint>) {
    let total = rows.len() as i64;
    let mut points = Vec::new();
    for hundredth in 0..=100 {
        let t = hundredth as f64 / 100.0;
        let (mut automated, mut reviewed, mut overrides) = (0i64, 0i64, 0i64);
        for (c, r, o) in rows {
            // A tolerance so a confidence of 0.7 counts as at or above the threshold 0.70.
            if *c >= t - 1e-9 {
                automated += 1;
                if *r {
                    reviewed += 1;
                    overrides += *o as i64;
                }
            }
        }
        if automated == 0 {
            continue;
        }
        points.push(ThresholdPoint {
            threshold: t,
            automated,
            automation_rate: automated as f64 / total as f64,
            reviewed,
            overrides,
            expected_error_rate: (reviewed > 0).then(|| overrides as f64 / reviewed as f64),
            error_rate_upper_95: wilson_upper(overrides, reviewed),
        });
    }
    let recommended = points
        .iter()
        .find(|p| {
            p.reviewed >= MIN_REVIEWED && p.expected_error_rate.is_some_and(|e| e <= target_error)
        })
        .cloned();
    (points, recommended)
}

/// Computes the curve and the recommendation.
pub async fn compute(analytics: &Analytics, req: &ThresholdRequest) -> Result<ThresholdReport> {
    if !(0.0..=1.0).contains(&req.target_error) {
        return Err(Error::Plan(format!(
            "target error rate `{}` must be between 0 and 1 (e.g. 0.03 for 3%)",
            req.target_error
        )));
    }
    let step_filter = req
        .step
        .as_deref()
        .map(|s| format!("AND step = {}", sql_string(s)))
        .unwrap_or_default();
    let sql = THRESHOLDS_SQL
        .replace("{workflow}", &sql_string(&req.workflow))
        .replace("{step_filter}", &step_filter)
        .replace("{start}", &sql_timestamp(req.start))
        .replace("{end}", &sql_timestamp(req.end));
    let result = analytics.query(&sql).await?;
    let mut rows = Vec::new();
    Rows::new(&result).each(|r| {
        if let Some(c) = r.f64("confidence") {
            let reviewed = r.string("human_reviewed") == "true";
            let overridden = r.string("human_override") == "true";
            rows.push((c, reviewed, overridden));
        }
    });
    if rows.is_empty() {
        return Err(Error::Plan(format!(
            "no decisions with a confidence for workflow `{}` in the window; check the name with \
             `SELECT DISTINCT workflow FROM decisions`",
            req.workflow
        )));
    }
    let (points, recommended) = curve(&rows, req.target_error);
    Ok(ThresholdReport {
        workflow: req.workflow.clone(),
        step: req.step.clone(),
        target_error: req.target_error,
        decisions: rows.len() as i64,
        reviewed: rows.iter().filter(|r| r.1).count() as i64,
        curve: points,
        recommended,
    })
}

/// Renders the curve (every fifth hundredth plus the recommendation) and the recommendation.
pub fn render_table(r: &ThresholdReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "workflow {}{}: {} decisions, {} reviewed, target error {:.1}%\n",
        r.workflow,
        r.step
            .as_deref()
            .map(|s| format!(" step {s}"))
            .unwrap_or_default(),
        r.decisions,
        r.reviewed,
        r.target_error * 100.0
    );
    let rec = r.recommended.as_ref().map(|p| p.threshold);
    let rows: Vec<Vec<String>> = r
        .curve
        .iter()
        .filter(|p| ((p.threshold * 100.0).round() as i64) % 5 == 0 || Some(p.threshold) == rec)
        .map(|p| {
            let pc = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.1}%", v * 100.0));
            vec![
                format!(
                    "{:.2}{}",
                    p.threshold,
                    if Some(p.threshold) == rec { " *" } else { "" }
                ),
                format!("{:.1}%", p.automation_rate * 100.0),
                p.reviewed.to_string(),
                p.overrides.to_string(),
                pc(p.expected_error_rate),
                pc(p.error_rate_upper_95),
            ]
        })
        .collect();
    out.push_str(&text_table(
        &[
            "threshold",
            "automated",
            "reviewed",
            "overrides",
            "error",
            "error ≤ (95%)",
        ],
        &rows,
    ));
    match &r.recommended {
        Some(p) => {
            let _ = writeln!(
                out,
                "\nrecommended threshold {:.2}: automates {:.1}% of decisions with an expected error \
                 rate of {:.1}% (95% upper bound {:.1}%, from {} reviewed decisions)",
                p.threshold,
                p.automation_rate * 100.0,
                p.expected_error_rate.unwrap_or(0.0) * 100.0,
                p.error_rate_upper_95.unwrap_or(0.0) * 100.0,
                p.reviewed
            );
        }
        None => {
            let _ = writeln!(
                out,
                "\nno threshold meets the target error rate with at least {MIN_REVIEWED} reviewed \
                 decisions behind it; review more decisions or relax the target"
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_counts_at_or_above_and_recommends_lowest_meeting_target() {
        let mut rows = Vec::new();
        // 100 reviewed decisions at 0.60 with 20 overrides, 100 at 0.90 with 1 override.
        for i in 0..100 {
            rows.push((0.6, true, i < 20));
            rows.push((0.9, true, i < 1));
        }
        let (points, rec) = curve(&rows, 0.05);
        let at = |t: f64| {
            points
                .iter()
                .find(|p| (p.threshold - t).abs() < 1e-9)
                .unwrap()
        };
        assert_eq!(at(0.6).automated, 200);
        assert_eq!(at(0.6).overrides, 21);
        assert_eq!(at(0.61).automated, 100);
        assert_eq!(rec.unwrap().threshold, 0.61);
        assert!(wilson_upper(1, 100).unwrap() > 0.01);
        assert!(points.iter().all(|p| p.threshold <= 0.9 + 1e-9));
    }
}
