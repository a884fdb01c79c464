SELECT step_kind, count(*), approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95
FROM steps WHERE step IS NOT NULL GROUP BY 1 ORDER BY 1
