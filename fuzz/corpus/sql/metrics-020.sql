SELECT workflow, sum(cost_usd) AS spend, count(*) FILTER (WHERE outcome = 'success') AS successes,
  sum(cost_usd) / count(*) FILTER (WHERE outcome = 'success') AS cost_per_success
FROM runs
WHERE start_time >= TIMESTAMP '2026-11-02T00:00:00Z' AND start_time < TIMESTAMP '2026-11-03T00:00:00Z'
GROUP BY 1 ORDER BY 1
