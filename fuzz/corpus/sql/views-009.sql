SELECT workflow, sum(retries) AS retries, sum(errors) AS error_spans, sum(steps) AS step_spans FROM runs GROUP BY 1 ORDER BY 1
