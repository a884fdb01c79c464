SELECT cost_source, count(*) FROM runs GROUP BY 1 ORDER BY 1
