SELECT model, model_version, prompt_version, count(*) FILTER (WHERE human_reviewed) AS reviewed,
  count(*) FILTER (WHERE human_override) AS overrides,
  CAST(count(*) FILTER (WHERE human_override) AS DOUBLE) / count(*) FILTER (WHERE human_reviewed) AS override_rate
FROM decisions GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
