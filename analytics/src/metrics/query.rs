//! The SQL of the standard metrics, one constant per query over the views, and computing a
//! report from them: runs, steps and decisions per group, derived rates, the error taxonomy and
//! confidence drift.

use std::collections::BTreeMap;

use super::{
    Drift, ErrorClass, GroupMetrics, MetricsReport, MetricsRequest, Percentiles, Rows,
    drift_status, psi_noise, sql_timestamp,
};
use crate::{Analytics, Result};

/// Per-run metrics.
pub const RUNS_SQL: &str = "SELECT {key} AS key,
  count(*) AS runs,
  count(*) FILTER (WHERE outcome <> 'in_progress') AS finished_runs,
  count(*) FILTER (WHERE outcome = 'in_progress') AS in_progress_runs,
  count(*) FILTER (WHERE outcome = 'success') AS successes,
  count(*) FILTER (WHERE outcome = 'failure') AS failures,
  count(*) FILTER (WHERE outcome = 'escalated') AS escalations,
  percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50,
  percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95,
  percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99,
  coalesce(sum(cost_usd), 0.0) AS spend_usd,
  coalesce(sum(retries), 0) AS retries
FROM runs WHERE start_time >= {start} AND start_time < {end}
GROUP BY 1";

/// Per-step metrics.
pub const STEPS_SQL: &str = "SELECT {key} AS key,
  count(*) AS step_spans,
  count(*) FILTER (WHERE status_code = 'error') AS error_spans,
  percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50,
  percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95,
  percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99,
  coalesce(sum(cost_usd) FILTER (WHERE cost_source = 'computed'), 0.0) AS computed_spend_usd,
  count(*) FILTER (WHERE cost_source = 'unpriced') AS unpriced_spans
FROM steps WHERE step IS NOT NULL AND start_time >= {start} AND start_time < {end}
GROUP BY 1";

/// Per-decision metrics.
pub const DECISIONS_SQL: &str = "SELECT {key} AS key,
  count(*) AS decisions,
  count(*) FILTER (WHERE human_reviewed) AS human_reviews,
  count(*) FILTER (WHERE human_override) AS overrides
FROM decisions WHERE start_time >= {start} AND start_time < {end}
GROUP BY 1";

/// The error taxonomy.
pub const ERRORS_SQL: &str = "SELECT coalesce(step_kind, '(none)') AS step_kind,
  error_class AS class, coalesce(connector, '(none)') AS connector,
  count(*) AS errors, count(DISTINCT run_id) AS runs
FROM steps WHERE status_code = 'error' AND step IS NOT NULL AND start_time >= {start} AND start_time < {end}
GROUP BY 1, 2, 3 ORDER BY errors DESC, 1, 2, 3";

/// Confidence drift per model.
pub const DRIFT_SQL: &str = "SELECT coalesce(model, '(none)') AS model,
  count(*) FILTER (WHERE NOT is_current) AS baseline_rows,
  count(*) FILTER (WHERE is_current) AS current_rows,
  psi(confidence, is_current) AS psi,
  ks(confidence, is_current) AS ks,
  avg(confidence) FILTER (WHERE NOT is_current) AS baseline_mean,
  avg(confidence) FILTER (WHERE is_current) AS current_mean
FROM (SELECT model, confidence, start_time >= {start} AS is_current FROM decisions
      WHERE confidence IS NOT NULL AND start_time >= {baseline_start} AND start_time < {end})
GROUP BY 1 ORDER BY 1";

/// Substitutes the window into one of the SQL constants.
pub fn bind(sql: &str, req: &MetricsRequest) -> String {
    let window = chrono::Duration::from_std(req.window).unwrap_or(chrono::Duration::zero());
    let start = req.at - window;
    sql.replace("{key}", req.by.key_sql())
        .replace("{baseline_start}", &sql_timestamp(start - window))
        .replace("{start}", &sql_timestamp(start))
        .replace("{end}", &sql_timestamp(req.at))
}
fn ratio(n: i64, d: i64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

/// Computes the report.
pub async fn compute(analytics: &Analytics, req: &MetricsRequest) -> Result<MetricsReport> {
    let groups = groups(analytics, req).await?;
    let errors = error_classes(analytics, req).await?;
    let drift = drift(analytics, req).await?;
    let window = chrono::Duration::from_std(req.window).unwrap_or(chrono::Duration::zero());
    Ok(MetricsReport {
        window_start: (req.at - window).to_rfc3339(),
        window_end: req.at.to_rfc3339(),
        window: crate::duration::format(req.window),
        by: req.by,
        groups: groups.into_values().collect(),
        errors,
        drift,
    })
}

/// The metrics of every group: runs, steps and decisions, then the rates derived from them.
async fn groups(
    analytics: &Analytics,
    req: &MetricsRequest,
) -> Result<BTreeMap<String, GroupMetrics>> {
    let mut groups: BTreeMap<String, GroupMetrics> = BTreeMap::new();
    let entry = |groups: &mut BTreeMap<String, GroupMetrics>, key: String| {
        groups
            .entry(key.clone())
            .or_insert_with(|| GroupMetrics {
                key,
                ..Default::default()
            })
            .clone()
    };
    let hours = req.window.as_secs_f64() / 3600.0;

    let runs = analytics.query(&bind(RUNS_SQL, req)).await?;
    Rows::new(&runs).each(|r| {
        let mut g = entry(&mut groups, r.string("key"));
        g.runs = r.i64("runs");
        g.finished_runs = r.i64("finished_runs");
        g.in_progress_runs = r.i64("in_progress_runs");
        g.successes = r.i64("successes");
        g.failures = r.i64("failures");
        g.escalations = r.i64("escalations");
        g.run_latency_ms = Percentiles {
            p50: r.f64("p50"),
            p95: r.f64("p95"),
            p99: r.f64("p99"),
        };
        g.spend_usd = r.f64("spend_usd").unwrap_or(0.0);
        g.retries = r.i64("retries");
        groups.insert(g.key.clone(), g);
    });
    let steps = analytics.query(&bind(STEPS_SQL, req)).await?;
    Rows::new(&steps).each(|r| {
        let mut g = entry(&mut groups, r.string("key"));
        g.step_spans = r.i64("step_spans");
        g.error_spans = r.i64("error_spans");
        g.step_latency_ms = Percentiles {
            p50: r.f64("p50"),
            p95: r.f64("p95"),
            p99: r.f64("p99"),
        };
        g.computed_spend_usd = r.f64("computed_spend_usd").unwrap_or(0.0);
        g.unpriced_spans = r.i64("unpriced_spans");
        groups.insert(g.key.clone(), g);
    });
    let decisions = analytics.query(&bind(DECISIONS_SQL, req)).await?;
    Rows::new(&decisions).each(|r| {
        let mut g = entry(&mut groups, r.string("key"));
        g.decisions = r.i64("decisions");
        g.human_reviews = r.i64("human_reviews");
        g.overrides = r.i64("overrides");
        groups.insert(g.key.clone(), g);
    });
    for g in groups.values_mut() {
        derive_rates(g, hours);
    }
    Ok(groups)
}

/// The rates of a group, from its counts; `hours` is the window's length.
fn derive_rates(g: &mut GroupMetrics, hours: f64) {
    g.success_rate = ratio(g.successes, g.finished_runs);
    g.escalation_rate = ratio(g.escalations, g.finished_runs);
    g.runs_per_hour = if hours > 0.0 {
        g.runs as f64 / hours
    } else {
        0.0
    };
    g.error_rate = ratio(g.error_spans, g.step_spans);
    g.human_review_rate = ratio(g.human_reviews, g.decisions);
    g.override_rate = ratio(g.overrides, g.human_reviews);
    g.cost_per_success_usd = (g.successes > 0).then(|| g.spend_usd / g.successes as f64);
}

/// The error taxonomy of the window.
async fn error_classes(analytics: &Analytics, req: &MetricsRequest) -> Result<Vec<ErrorClass>> {
    let mut errors = Vec::new();
    let result = analytics.query(&bind(ERRORS_SQL, req)).await?;
    Rows::new(&result).each(|r| {
        errors.push(ErrorClass {
            step_kind: r.string("step_kind"),
            class: r.string("class"),
            connector: r.string("connector"),
            errors: r.i64("errors"),
            runs: r.i64("runs"),
        })
    });
    Ok(errors)
}

/// Confidence drift per model, the window against the one before it.
async fn drift(analytics: &Analytics, req: &MetricsRequest) -> Result<Vec<Drift>> {
    let mut drift = Vec::new();
    let result = analytics.query(&bind(DRIFT_SQL, req)).await?;
    Rows::new(&result).each(|r| {
        let (baseline_rows, current_rows) = (r.i64("baseline_rows"), r.i64("current_rows"));
        let psi = r.f64("psi");
        drift.push(Drift {
            model: r.string("model"),
            baseline_rows,
            current_rows,
            psi,
            psi_noise: psi_noise(baseline_rows, current_rows),
            ks: r.f64("ks"),
            baseline_mean: r.f64("baseline_mean"),
            current_mean: r.f64("current_mean"),
            status: drift_status(psi, baseline_rows, current_rows).to_string(),
        })
    });
    Ok(drift)
}
