SELECT workflow, outcome, count(*) AS runs, count(end_time) AS with_end, count(duration_ms) AS with_duration
FROM runs GROUP BY 1, 2 ORDER BY 1, 2
