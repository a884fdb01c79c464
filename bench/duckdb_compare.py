#!/usr/bin/env python3
"""Ask DuckDB the questions `custos bench analytics` asks, over the same active Parquet files.

Called by `custos bench analytics` with the list of the Delta table's active files (so files a
compaction removed are not read twice). Prints JSON: {"version": ..., "timings": {name: median_ms}}.
The SQL mirrors custos' views (analytics/src/views.rs) and metrics (analytics/src/metrics.rs);
DuckDB has no psi() aggregate, so drift is written out as a histogram query. Requires
`pip install duckdb`.
"""
import argparse
import datetime as dt
import json
import statistics
import time

import duckdb

p = argparse.ArgumentParser()
p.add_argument("--files", required=True)
p.add_argument("--end", required=True)
p.add_argument("--trace-id", required=True)
p.add_argument("--repeats", type=int, default=3)
a = p.parse_args()

files = json.load(open(a.files))
end = dt.datetime.fromisoformat(a.end.replace("Z", "+00:00"))
start30 = end - dt.timedelta(days=30)
start15 = end - dt.timedelta(days=15)
ts = lambda t: "TIMESTAMPTZ '" + t.strftime("%Y-%m-%d %H:%M:%S+00") + "'"
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
con.execute(f"CREATE VIEW spans AS SELECT * FROM read_parquet({json.dumps(files)})")
con.execute("""
CREATE VIEW steps AS SELECT *,
  coalesce(cost_usd, CASE WHEN model LIKE 'claude-sonnet-4%' THEN
    ((coalesce(input_tokens,0) - coalesce(cache_read_tokens,0) - coalesce(cache_write_tokens,0)) * 3.0
     + coalesce(cache_read_tokens,0) * 0.30 + coalesce(cache_write_tokens,0) * 3.75
     + (coalesce(output_tokens,0) - coalesce(reasoning_tokens,0)) * 15.0
     + coalesce(reasoning_tokens,0) * 15.0) / 1e6 END) AS cost,
  CASE WHEN cost_usd IS NOT NULL THEN 'reported' WHEN model LIKE 'claude-sonnet-4%' THEN 'computed'
       WHEN input_tokens IS NOT NULL OR output_tokens IS NOT NULL THEN 'unpriced' ELSE 'none' END AS cost_source,
  (human_override IS NOT NULL OR human_reviewer IS NOT NULL OR review_ms IS NOT NULL) AS human_reviewed,
  (outcome IS NOT NULL OR parent_span_id IS NULL) AS is_root,
  attributes['automation.connector'] AS connector,
  CASE WHEN status_code <> 'error' OR status_code IS NULL THEN NULL
       WHEN regexp_matches(status_message, '(?i)time[d ]?out|deadline') THEN 'timeout'
       WHEN regexp_matches(status_message, '(?i)\\b5\\d\\d\\b|unavailable') THEN 'upstream_5xx'
       ELSE 'other' END AS error_class
FROM spans
""")
con.execute("""
CREATE VIEW runs AS SELECT
  coalesce(max(workflow) FILTER (WHERE is_root), max(workflow)) AS workflow, run_id,
  min(start_time) AS start_time,
  (max(end_time_unix_nano) FILTER (WHERE is_root) - min(start_time_unix_nano)) / 1e6 AS duration_ms,
  CASE WHEN NOT bool_or(is_root) THEN 'in_progress'
       WHEN max(outcome) FILTER (WHERE is_root) IS NOT NULL THEN max(outcome) FILTER (WHERE is_root)
       WHEN bool_or(is_root AND status_code = 'error') THEN 'failure' ELSE 'success' END AS outcome,
  sum(cost) AS cost_usd,
  count(step) - count(DISTINCT step) AS retries,
  arg_max(model, start_time) FILTER (WHERE confidence IS NOT NULL OR decision IS NOT NULL) AS model
FROM steps GROUP BY run_id HAVING max(workflow) IS NOT NULL
""")
con.execute("""
CREATE VIEW decisions AS SELECT start_time, workflow, run_id, step, model, confidence, human_reviewed,
  CASE WHEN human_reviewed THEN coalesce(human_override, false) END AS human_override
FROM steps WHERE confidence IS NOT NULL OR decision IS NOT NULL
""")
w30 = f"start_time >= {ts(start30)} AND start_time < {ts(end)}"
questions = {
    "runs: outcomes, run latency p50/p95/p99, spend, retries": f"""
      SELECT workflow, count(*), count(*) FILTER (WHERE outcome <> 'in_progress'),
        count(*) FILTER (WHERE outcome = 'success'), count(*) FILTER (WHERE outcome = 'failure'),
        count(*) FILTER (WHERE outcome = 'escalated'),
        approx_quantile(duration_ms, 0.5), approx_quantile(duration_ms, 0.95), approx_quantile(duration_ms, 0.99),
        coalesce(sum(cost_usd), 0), coalesce(sum(retries), 0)
      FROM runs WHERE {w30} GROUP BY 1""",
    "steps: step latency, error rate, computed cost": f"""
      SELECT workflow, count(*), count(*) FILTER (WHERE status_code = 'error'),
        approx_quantile(duration_ms, 0.5), approx_quantile(duration_ms, 0.95), approx_quantile(duration_ms, 0.99),
        coalesce(sum(cost) FILTER (WHERE cost_source = 'computed'), 0),
        count(*) FILTER (WHERE cost_source = 'unpriced')
      FROM steps WHERE step IS NOT NULL AND {w30} GROUP BY 1""",
    "decisions: review and override rates": f"""
      SELECT workflow, count(*), count(*) FILTER (WHERE human_reviewed), count(*) FILTER (WHERE human_override)
      FROM decisions WHERE {w30} GROUP BY 1""",
    "errors: taxonomy": f"""
      SELECT step_kind, error_class, connector, count(*), count(DISTINCT run_id)
      FROM steps WHERE status_code = 'error' AND step IS NOT NULL AND {w30} GROUP BY 1, 2, 3 ORDER BY 4 DESC""",
    "drift: psi and ks per model, 15d vs 15d": f"""
      WITH d AS (SELECT model, least(9, greatest(0, floor(confidence * 10)))::INT AS bin,
                        start_time >= {ts(start15)} AS cur
                 FROM decisions WHERE confidence IS NOT NULL AND {w30}),
           c AS (SELECT model, bin, count(*) FILTER (WHERE NOT cur) AS b, count(*) FILTER (WHERE cur) AS c
                 FROM d GROUP BY ALL),
           t AS (SELECT model, sum(b) AS nb, sum(c) AS nc FROM c GROUP BY model)
      SELECT model, sum(((c + 0.5) / (nc + 5) - (b + 0.5) / (nb + 5))
                        * ln(((c + 0.5) / (nc + 5)) / ((b + 0.5) / (nb + 5))))
      FROM c JOIN t USING (model) GROUP BY model""",
    "trace by id": f"SELECT * FROM spans WHERE trace_id = '{a.trace_id}'",
}
timings = {}
for name, sql in questions.items():
    con.execute(sql).fetchall()
    ms = []
    for _ in range(max(1, a.repeats)):
        t = time.perf_counter()
        con.execute(sql).fetchall()
        ms.append((time.perf_counter() - t) * 1e3)
    timings[name] = statistics.median(ms)
total = 0.0
for name in list(questions)[:5]:
    total += timings[name]
timings["custos metrics --window 30d (all five queries)"] = total
print(json.dumps({"version": duckdb.__version__, "timings": timings}))
