SELECT coalesce(model, '(none)') AS model, cost_source, count(*) AS spans, sum(cost_usd) AS cost
FROM steps GROUP BY 1, 2 ORDER BY 1, 2
