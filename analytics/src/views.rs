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
  coalesce(cost_usd, computed_cost_usd) AS cost_usd,
  CASE WHEN cost_usd IS NOT NULL THEN 'reported'
       WHEN computed_cost_usd IS NOT NULL THEN 'computed'
       WHEN input_tokens IS NOT NULL OR output_tokens IS NOT NULL THEN 'unpriced'
       ELSE 'none' END AS cost_source,
  confidence, decision,
  (human_override IS NOT NULL OR human_reviewer IS NOT NULL OR review_ms IS NOT NULL)
    AS human_reviewed,
  human_override, human_reviewer, review_ms, outcome,
  (outcome IS NOT NULL OR parent_span_id IS NULL) AS is_root,
  attributes['automation.connector'] AS connector,
  coalesce(review_of, links[1]['span_id']) AS review_of,
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
  source,
  date
-- Priced once per span, and only for spans that report no cost of their own.
FROM (SELECT *,
        CASE WHEN cost_usd IS NULL
             THEN price_usd(model, start_time, input_tokens, output_tokens, cache_read_tokens,
                            cache_write_tokens, reasoning_tokens) END AS computed_cost_usd
      FROM spans)
"#;

/// `runs`: one row per run (`run_id`) that has at least one span naming a workflow, merged from
/// the partial rows of `run_parts` ([`crate::rollup`]): the run rollup where it covers the table,
/// computed from the spans where it does not.
pub const RUNS: &str = r#"
CREATE VIEW runs AS
SELECT
  coalesce(max(root_workflow), max(workflow)) AS workflow,
  run_id,
  coalesce(min(root_trace_id), min(trace_id)) AS trace_id,
  coalesce(max(root_service_name), max(service_name)) AS service_name,
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
  sum(steps) AS steps,
  sum(steps) - distinct_count_merge(step_hashes) AS retries,
  sum(errors) AS errors,
  sum(human_reviews) AS human_reviews,
  sum(overrides) AS overrides,
  last_value(model ORDER BY decision_ns, decision_span_id)
    FILTER (WHERE decision_ns IS NOT NULL) AS model,
  last_value(model_version ORDER BY decision_ns, decision_span_id)
    FILTER (WHERE decision_ns IS NOT NULL) AS model_version,
  last_value(prompt_version ORDER BY decision_ns, decision_span_id)
    FILTER (WHERE decision_ns IS NOT NULL) AS prompt_version,
  coalesce(max(root_source), min(source)) AS source,
  min(date) AS date
FROM run_parts
GROUP BY run_id
HAVING max(workflow) IS NOT NULL
"#;

/// `decisions`: one row per span that carries a confidence or a decision outcome, with the
/// human review of it, whether recorded on the decision's span or on a span of its own.
///
/// A review on its own span (a span with `automation.human.*` attributes and no confidence or
/// decision) reviews one decision of the same run: the one it names (`automation.review.of` or
/// its first span link), else its parent when that is a decision, else the latest decision that
/// started no later than it (ties: the greater span id). A decision with several reviews is
/// overridden when any of them overrode it; its reviewer and review time are the ones on its own
/// span, else the latest review's.
///
/// The plan is chosen for memory and speed at millions of spans: the named and parent matches are
/// equi-joins on span ids, only reviews that neither name a decision nor hang under one are joined
/// with the decisions of their run, and a review is attached to its decision by
/// `(run_id, span_id)`.
pub const DECISIONS: &str = r#"
CREATE VIEW decisions AS
WITH d AS (
  SELECT * FROM steps WHERE confidence IS NOT NULL OR decision IS NOT NULL
),
r AS (
  SELECT run_id AS r_run, trace_id AS r_trace, span_id AS r_span, parent_span_id AS r_parent,
    review_of AS r_of, start_time_unix_nano AS r_start, human_override AS r_override,
    human_reviewer AS r_reviewer, review_ms AS r_review_ms
  FROM steps
  WHERE human_reviewed AND confidence IS NULL AND decision IS NULL
),
parented AS (
  SELECT r.*, p.span_id IS NOT NULL AS r_parent_is_decision
  FROM r LEFT JOIN (SELECT trace_id, span_id FROM d) p
    ON p.trace_id = r.r_trace AND p.span_id = r.r_parent
),
-- A review that names no decision and whose parent is none takes the latest decision of its run
-- that started no later than it; the join's condition keeps the other reviews out of it.
targeted AS (
  SELECT r.r_run AS run_id,
    CASE WHEN r.r_of IS NOT NULL THEN r.r_of
         WHEN r.r_parent_is_decision THEN r.r_parent
         ELSE last_value(d.span_id ORDER BY d.start_time_unix_nano, d.span_id) END AS target,
    r.r_span, r.r_start, r.r_override, r.r_reviewer, r.r_review_ms
  FROM parented r LEFT JOIN d
    ON d.run_id = r.r_run AND r.r_of IS NULL AND NOT r.r_parent_is_decision
   AND d.start_time_unix_nano <= r.r_start
  GROUP BY r.r_run, r.r_span, r.r_of, r.r_parent, r.r_parent_is_decision, r.r_start,
    r.r_override, r.r_reviewer, r.r_review_ms
),
reviews AS (
  SELECT run_id AS v_run, target AS v_span,
    bool_or(coalesce(r_override, false)) AS r_override,
    last_value(r_reviewer ORDER BY r_start, r_span) AS r_reviewer,
    last_value(r_review_ms ORDER BY r_start, r_span) AS r_review_ms
  FROM targeted WHERE target IS NOT NULL
  GROUP BY run_id, target
)
SELECT
  d.start_time, d.workflow, d.run_id, d.step, d.model, d.model_version, d.prompt_version,
  d.confidence, d.decision,
  (d.human_reviewed OR v.v_span IS NOT NULL) AS human_reviewed,
  CASE WHEN d.human_reviewed OR v.v_span IS NOT NULL
       THEN coalesce(d.human_override, v.r_override, false) END AS human_override,
  CASE WHEN d.human_reviewed THEN d.review_ms ELSE v.r_review_ms END AS review_ms,
  CASE WHEN d.human_reviewed THEN d.human_reviewer ELSE v.r_reviewer END AS human_reviewer,
  d.step_kind, d.trace_id, d.span_id, d.source, d.date
FROM d LEFT JOIN reviews v ON v.v_run = d.run_id AND v.v_span = d.span_id
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
