SELECT date_trunc('hour', start_time) AS hour, count(*) AS runs FROM runs GROUP BY 1 ORDER BY 1 LIMIT 4
