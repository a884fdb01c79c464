SELECT date, CAST(count(*) FILTER (WHERE human_reviewed) AS DOUBLE) / count(*) AS review_rate,
  CAST(count(*) FILTER (WHERE human_override) AS DOUBLE) / count(*) FILTER (WHERE human_reviewed) AS override_rate
FROM decisions GROUP BY 1 ORDER BY 1
