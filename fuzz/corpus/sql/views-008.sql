SELECT workflow, model, model_version, prompt_version, count(*) FROM runs GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
