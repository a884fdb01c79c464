SELECT workflow,
  approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS approx_p50,
  percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS exact_p50,
  approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS approx_p99,
  percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS exact_p99
FROM runs WHERE outcome <> 'in_progress' GROUP BY 1 ORDER BY 1
