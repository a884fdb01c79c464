SELECT step_kind, error_class, connector, count(*) AS errors, count(DISTINCT run_id) AS runs
FROM steps WHERE status_code = 'error' AND step IS NOT NULL GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2, 3
