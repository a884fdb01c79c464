#!/usr/bin/env python3
"""Ask DuckDB the questions `custos bench analytics` asks, over the same spans.

Called by `custos bench analytics` with the list of the Delta table's active files (so files a
compaction removed are not read twice). Asks every question twice: (a) over custos' own files, and
(b) over one zstd Parquet file of the same spans that DuckDB writes itself (`COPY ... TO`), so the
table's layout and custos' plans can be told apart. Prints JSON:
{"version", "single_file_bytes", "timings": {name: median_ms}, "single": {name: median_ms}}.

The SQL mirrors custos' views (analytics/src/views.rs) and metrics (analytics/src/metrics/query.rs):
exact percentiles (`quantile_cont`), the same review matching in `decisions`, the same error
classes, and prices from the same price table (`--prices`, longest prefix first). DuckDB has no
psi() or ks() aggregate, so drift is written out as a histogram query. Requires
`pip install duckdb pyyaml`.
"""
import argparse
import datetime as dt
import json
import os
import statistics
import tempfile
import time

import duckdb

p = argparse.ArgumentParser()
p.add_argument("--files", required=True)
p.add_argument("--end", required=True)
p.add_argument("--days", type=int, default=30)
p.add_argument("--trace-id", required=True)
p.add_argument("--prices")
p.add_argument("--repeats", type=int, default=3)
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()

files = json.load(open(a.files))
end = dt.datetime.fromisoformat(a.end.replace("Z", "+00:00"))
start = end - dt.timedelta(days=a.days)
half = end - dt.timedelta(days=a.days / 2)
ts = lambda t: "TIMESTAMPTZ '" + t.strftime("%Y-%m-%d %H:%M:%S+00") + "'"


def price_case():
    """The price table as one CASE over `model`: longest prefix (or exact name) first."""
    if not a.prices:
        return "NULL"
    import yaml

    entries = yaml.safe_load(open(a.prices)).get("prices", [])
    entries.sort(key=lambda e: (-len(e["model"]), not e.get("prefix", False)))
    arms = []
    for e in entries:
        m = e["model"].replace("'", "''")
        cond = f"starts_with(model, '{m}')" if e.get("prefix") else f"model = '{m}'"
        i, o = e["input"], e["output"]
        cr, cw, r = e.get("cache_read", i), e.get("cache_write", i), e.get("reasoning", o)
        arms.append(
            f"WHEN {cond} THEN ((coalesce(input_tokens,0) - coalesce(cache_read_tokens,0) - coalesce(cache_write_tokens,0)) * {i}"
            f" + coalesce(cache_read_tokens,0) * {cr} + coalesce(cache_write_tokens,0) * {cw}"
            f" + (coalesce(output_tokens,0) - coalesce(reasoning_tokens,0)) * {o}"
            f" + coalesce(reasoning_tokens,0) * {r}) / 1e6"
        )
    if not arms:
        return "NULL"
    return ("CASE WHEN input_tokens IS NULL AND output_tokens IS NULL AND cache_read_tokens IS NULL"
            " AND cache_write_tokens IS NULL AND reasoning_tokens IS NULL THEN NULL "
            + " ".join(arms) + " END")


PRICE = price_case()
VIEWS = [
    f"""
CREATE OR REPLACE VIEW steps AS SELECT *,
  coalesce(cost_usd, {PRICE}) AS cost,
  CASE WHEN cost_usd IS NOT NULL THEN 'reported' WHEN ({PRICE}) IS NOT NULL THEN 'computed'
       WHEN input_tokens IS NOT NULL OR output_tokens IS NOT NULL THEN 'unpriced' ELSE 'none' END AS cost_source,
  (human_override IS NOT NULL OR human_reviewer IS NOT NULL OR review_ms IS NOT NULL) AS human_reviewed,
  (outcome IS NOT NULL OR parent_span_id IS NULL) AS is_root,
  attributes['automation.connector'] AS connector,
  coalesce(review_of, links[1]['span_id']) AS review_of,
  CASE WHEN status_code <> 'error' OR status_code IS NULL THEN NULL
       WHEN status_message IS NULL OR status_message = '' THEN 'unspecified'
       WHEN regexp_matches(status_message, '(?i)time[d ]?out|deadline') THEN 'timeout'
       WHEN regexp_matches(status_message, '(?i)\\b429\\b|rate.?limit|too many requests|quota') THEN 'rate_limited'
       WHEN regexp_matches(status_message, '(?i)\\b5\\d\\d\\b|unavailable|bad gateway') THEN 'upstream_5xx'
       WHEN regexp_matches(status_message, '(?i)\\b40[13]\\b|unauthori[sz]ed|forbidden|permission') THEN 'auth'
       WHEN regexp_matches(status_message, '(?i)policy|denied by') THEN 'policy_denied'
       WHEN regexp_matches(status_message, '(?i)\\b4\\d\\d\\b|invalid|validation|malformed') THEN 'bad_request'
       ELSE 'other' END AS error_class
FROM spans
""",
    """
CREATE OR REPLACE VIEW runs AS SELECT
  coalesce(max(workflow) FILTER (WHERE is_root), max(workflow)) AS workflow, run_id,
  min(start_time) AS start_time,
  (max(end_time_unix_nano) FILTER (WHERE is_root) - min(start_time_unix_nano)) / 1e6 AS duration_ms,
  CASE WHEN NOT bool_or(is_root) THEN 'in_progress'
       WHEN max(outcome) FILTER (WHERE is_root) IS NOT NULL THEN max(outcome) FILTER (WHERE is_root)
       WHEN bool_or(is_root AND status_code = 'error') THEN 'failure' ELSE 'success' END AS outcome,
  sum(cost) AS cost_usd,
  count(step) - count(DISTINCT step) AS retries
FROM steps GROUP BY run_id HAVING max(workflow) IS NOT NULL
""",
    """
CREATE OR REPLACE VIEW decisions AS
WITH d AS (SELECT * FROM steps WHERE confidence IS NOT NULL OR decision IS NOT NULL),
r AS (
  SELECT run_id AS r_run, trace_id AS r_trace, span_id AS r_span, parent_span_id AS r_parent,
    review_of AS r_of, start_time_unix_nano AS r_start, human_override AS r_override
  FROM steps WHERE human_reviewed AND confidence IS NULL AND decision IS NULL
),
matched AS (
  SELECT d.trace_id AS d_trace, d.span_id AS d_span, r.*,
    row_number() OVER (
      PARTITION BY r.r_trace, r.r_span
      ORDER BY CASE WHEN d.span_id = r.r_of THEN 0
                    WHEN d.trace_id = r.r_trace AND d.span_id = r.r_parent THEN 1 ELSE 2 END,
               d.start_time_unix_nano DESC, d.span_id DESC) AS rank
  FROM r JOIN d ON d.run_id = r.r_run
  WHERE d.span_id = r.r_of
     OR (r.r_of IS NULL AND (d.start_time_unix_nano <= r.r_start
                             OR (d.trace_id = r.r_trace AND d.span_id = r.r_parent)))
),
reviews AS (
  SELECT d_trace, d_span, bool_or(coalesce(r_override, false)) AS r_override
  FROM matched WHERE rank = 1 GROUP BY d_trace, d_span
)
SELECT d.start_time, d.workflow, d.run_id, d.step, d.model, d.confidence, d.decision,
  (d.human_reviewed OR v.d_span IS NOT NULL) AS human_reviewed,
  CASE WHEN d.human_reviewed OR v.d_span IS NOT NULL
       THEN coalesce(d.human_override, v.r_override, false) END AS human_override
FROM d LEFT JOIN reviews v ON v.d_trace = d.trace_id AND v.d_span = d.span_id
""",
]
w = f"start_time >= {ts(start)} AND start_time < {ts(end)}"
QUESTIONS = {
    "runs: outcomes, run latency p50/p95/p99, spend, retries": f"""
      SELECT workflow, count(*), count(*) FILTER (WHERE outcome <> 'in_progress'),
        count(*) FILTER (WHERE outcome = 'in_progress'),
        count(*) FILTER (WHERE outcome = 'success'), count(*) FILTER (WHERE outcome = 'failure'),
        count(*) FILTER (WHERE outcome = 'escalated'),
        quantile_cont(duration_ms, 0.5), quantile_cont(duration_ms, 0.95), quantile_cont(duration_ms, 0.99),
        coalesce(sum(cost_usd), 0), coalesce(sum(retries), 0)
      FROM runs WHERE {w} GROUP BY 1""",
    "steps: step latency, error rate, computed cost": f"""
      SELECT workflow, count(*), count(*) FILTER (WHERE status_code = 'error'),
        quantile_cont(duration_ms, 0.5), quantile_cont(duration_ms, 0.95), quantile_cont(duration_ms, 0.99),
        coalesce(sum(cost) FILTER (WHERE cost_source = 'computed'), 0),
        count(*) FILTER (WHERE cost_source = 'unpriced')
      FROM steps WHERE step IS NOT NULL AND {w} GROUP BY 1""",
    "decisions: review and override rates": f"""
      SELECT workflow, count(*), count(*) FILTER (WHERE human_reviewed), count(*) FILTER (WHERE human_override)
      FROM decisions WHERE {w} GROUP BY 1""",
    "errors: taxonomy": f"""
      SELECT coalesce(step_kind, '(none)'), error_class, coalesce(connector, '(none)'), count(*), count(DISTINCT run_id)
      FROM steps WHERE status_code = 'error' AND step IS NOT NULL AND {w} GROUP BY 1, 2, 3 ORDER BY 4 DESC""",
    "drift: psi and ks per model, half vs half": f"""
      WITH d AS (SELECT model, least(9, greatest(0, floor(confidence * 10)))::INT AS bin,
                        start_time >= {ts(half)} AS cur
                 FROM decisions WHERE confidence IS NOT NULL AND {w}),
           c AS (SELECT model, bin, count(*) FILTER (WHERE NOT cur) AS b, count(*) FILTER (WHERE cur) AS c
                 FROM d GROUP BY ALL),
           t AS (SELECT model, sum(b) AS nb, sum(c) AS nc FROM c GROUP BY model)
      SELECT model, sum(((c + 0.5) / (nc + 5) - (b + 0.5) / (nb + 5))
                        * ln(((c + 0.5) / (nc + 5)) / ((b + 0.5) / (nb + 5))))
      FROM c JOIN t USING (model) GROUP BY model""",
    "trace by id": f"SELECT * FROM spans WHERE trace_id = '{a.trace_id}'",
}
REPORT = "custos metrics (all five queries)"


def time_all(con):
    timings = {}
    for name, sql in QUESTIONS.items():
        con.execute(sql).fetchall()
        ms = []
        for _ in range(max(1, a.repeats)):
            t = time.perf_counter()
            con.execute(sql).fetchall()
            ms.append((time.perf_counter() - t) * 1e3)
        timings[name] = statistics.median(ms)
    timings[REPORT] = sum(timings[n] for n in list(QUESTIONS)[:5])
    return timings


def connect(source):
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET threads = {a.threads}")
    con.execute(f"CREATE VIEW spans AS SELECT * FROM read_parquet({source})")
    for v in VIEWS:
        con.execute(v)
    return con


own = time_all(connect(json.dumps(files)))
with tempfile.TemporaryDirectory() as tmp:
    single = os.path.join(tmp, "spans.parquet")
    con = duckdb.connect()
    con.execute(f"SET threads = {a.threads}")
    con.execute(
        f"COPY (SELECT * FROM read_parquet({json.dumps(files)})) TO '{single}' "
        "(FORMAT parquet, COMPRESSION zstd)"
    )
    con.close()
    single_bytes = os.path.getsize(single)
    one = time_all(connect(json.dumps([single])))
print(json.dumps({
    "version": duckdb.__version__,
    "single_file_bytes": single_bytes,
    "timings": own,
    "single": one,
}))
