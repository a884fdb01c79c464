//! The SQL views over `spans`: `steps`, `runs` and `decisions`.
//!
//! Their columns are a public contract (docs/metrics.md); every standard metric and SLO is written
//! against them, so users' own SQL sees exactly the numbers custos reports.

use datafusion::prelude::SessionContext;

use crate::{Error, Result};

/// `steps`: one row per span of an automation run, with its effective cost.
///
/// `cost_usd` is the reported cost when the span reports one, else the cost computed from the
/// price table; `cost_source` says which (`reported`, `computed`, `unpriced` when tokens were
/// reported for a model without a price, `none` when there is no usage at all).
pub const STEPS: &str = r#"
CREATE VIEW steps AS
SELECT
  start_time, end_time, start_time_unix_nano, end_time_unix_nano, duration_ms,
  workflow, run_id, trace_id, span_id, parent_span_id, name, service_name,
  step, step_kind, status_code, status_message,
  model, provider, model_version, prompt_version,
  input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens,
  CASE WHEN cost_usd IS NOT NULL THEN cost_usd
       ELSE price_usd(model, start_time, input_tokens, output_tokens, cache_read_tokens,
                      cache_write_tokens, reasoning_tokens) END AS cost_usd,
  CASE WHEN cost_usd IS NOT NULL THEN 'reported'
       WHEN price_usd(model, start_time, input_tokens, output_tokens, cache_read_tokens,
                      cache_write_tokens, reasoning_tokens) IS NOT NULL THEN 'computed'
       WHEN input_tokens IS NOT NULL OR output_tokens IS NOT NULL THEN 'unpriced'
       ELSE 'none' END AS cost_source,
  confidence, decision,
  (human_override IS NOT NULL OR human_reviewer IS NOT NULL OR review_ms IS NOT NULL)
    AS human_reviewed,
  human_override, human_reviewer, review_ms, outcome,
  (outcome IS NOT NULL OR parent_span_id IS NULL) AS is_root,
  attributes['automation.connector'] AS connector,
  CASE WHEN status_code <> 'error' OR status_code IS NULL THEN NULL
       WHEN status_message IS NULL OR status_message = '' THEN 'unspecified'
       WHEN regexp_like(status_message, '(?i)time[d ]?out|deadline') THEN 'timeout'
       WHEN regexp_like(status_message, '(?i)\b429\b|rate.?limit|too many requests|quota')
         THEN 'rate_limited'
       WHEN regexp_like(status_message, '(?i)\b5\d\d\b|unavailable|bad gateway')
         THEN 'upstream_5xx'
       WHEN regexp_like(status_message, '(?i)\b40[13]\b|unauthori[sz]ed|forbidden|permission')
         THEN 'auth'
       WHEN regexp_like(status_message, '(?i)policy|denied by') THEN 'policy_denied'
       WHEN regexp_like(status_message, '(?i)\b4\d\d\b|invalid|validation|malformed')
         THEN 'bad_request'
       ELSE 'other' END AS error_class,
  date
FROM spans
"#;

/// `runs`: one row per run (`run_id`) that has at least one span naming a workflow.
///
/// Aggregated in two levels, per (run, step) and then per run, so `retries` (step spans beyond
/// the first of the same step) needs no `count(DISTINCT ...)`, which is several times slower.
pub const RUNS: &str = r#"
CREATE VIEW runs AS
WITH per_step AS (
  SELECT
    run_id, step, count(*) AS n,
    max(workflow) FILTER (WHERE is_root) AS root_workflow, max(workflow) AS any_workflow,
    min(trace_id) FILTER (WHERE is_root) AS root_trace_id, min(trace_id) AS any_trace_id,
    max(service_name) FILTER (WHERE is_root) AS root_service, max(service_name) AS any_service,
    min(start_time) AS start_time, min(start_time_unix_nano) AS start_ns,
    max(end_time) FILTER (WHERE is_root) AS root_end_time,
    max(end_time_unix_nano) FILTER (WHERE is_root) AS root_end_ns,
    bool_or(is_root) AS has_root,
    max(outcome) FILTER (WHERE is_root) AS root_outcome,
    bool_or(is_root AND status_code = 'error') AS root_error,
    sum(cost_usd) AS cost_usd,
    count(*) FILTER (WHERE cost_source = 'unpriced') AS unpriced,
    count(*) FILTER (WHERE cost_source = 'computed') AS computed,
    count(*) FILTER (WHERE cost_source = 'reported') AS reported,
    sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
    count(*) FILTER (WHERE status_code = 'error') AS errors,
    count(*) FILTER (WHERE human_reviewed) AS human_reviews,
    count(*) FILTER (WHERE human_override) AS overrides,
    max(start_time_unix_nano) FILTER (WHERE confidence IS NOT NULL OR decision IS NOT NULL)
      AS decision_ns,
    last_value(model ORDER BY start_time_unix_nano, span_id)
      FILTER (WHERE confidence IS NOT NULL OR decision IS NOT NULL) AS model,
    last_value(model_version ORDER BY start_time_unix_nano, span_id)
      FILTER (WHERE confidence IS NOT NULL OR decision IS NOT NULL) AS model_version,
    last_value(prompt_version ORDER BY start_time_unix_nano, span_id)
      FILTER (WHERE confidence IS NOT NULL OR decision IS NOT NULL) AS prompt_version,
    min(date) AS date
  FROM steps
  GROUP BY run_id, step
)
SELECT
  coalesce(max(root_workflow), max(any_workflow)) AS workflow,
  run_id,
  coalesce(min(root_trace_id), min(any_trace_id)) AS trace_id,
  coalesce(max(root_service), max(any_service)) AS service_name,
  min(start_time) AS start_time,
  max(root_end_time) AS end_time,
  CAST(max(root_end_ns) - min(start_ns) AS DOUBLE) / 1e6 AS duration_ms,
  CASE
    WHEN NOT bool_or(has_root) THEN 'in_progress'
    WHEN max(root_outcome) IS NOT NULL THEN max(root_outcome)
    WHEN bool_or(root_error) THEN 'failure'
    ELSE 'success'
  END AS outcome,
  sum(cost_usd) AS cost_usd,
  CASE
    WHEN sum(unpriced) > 0 THEN 'incomplete'
    WHEN sum(computed) > 0 AND sum(reported) > 0 THEN 'mixed'
    WHEN sum(computed) > 0 THEN 'computed'
    WHEN sum(reported) > 0 THEN 'reported'
    ELSE 'none'
  END AS cost_source,
  sum(input_tokens) AS input_tokens,
  sum(output_tokens) AS output_tokens,
  sum(n) FILTER (WHERE step IS NOT NULL) AS steps,
  coalesce(sum(n - 1) FILTER (WHERE step IS NOT NULL), 0) AS retries,
  sum(errors) AS errors,
  sum(human_reviews) AS human_reviews,
  sum(overrides) AS overrides,
  last_value(model ORDER BY decision_ns) FILTER (WHERE decision_ns IS NOT NULL) AS model,
  last_value(model_version ORDER BY decision_ns) FILTER (WHERE decision_ns IS NOT NULL)
    AS model_version,
  last_value(prompt_version ORDER BY decision_ns) FILTER (WHERE decision_ns IS NOT NULL)
    AS prompt_version,
  min(date) AS date
FROM per_step
GROUP BY run_id
HAVING max(any_workflow) IS NOT NULL
"#;

/// `decisions`: one row per span that carries a confidence or a decision outcome.
pub const DECISIONS: &str = r#"
CREATE VIEW decisions AS
SELECT
  start_time, workflow, run_id, step, model, model_version, prompt_version,
  confidence, decision, human_reviewed,
  CASE WHEN human_reviewed THEN coalesce(human_override, false) END AS human_override,
  review_ms, human_reviewer, step_kind, trace_id, span_id, date
FROM steps
WHERE confidence IS NOT NULL OR decision IS NOT NULL
"#;

/// Registers the views on a session that has `spans` and the custos functions.
pub async fn register(ctx: &SessionContext) -> Result<()> {
    for sql in [STEPS, RUNS, DECISIONS] {
        ctx.sql(sql)
            .await
            .map_err(|e| Error::Setup(format!("cannot create a view: {}", e.strip_backtrace())))?;
    }
    Ok(())
}
