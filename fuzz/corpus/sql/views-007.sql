SELECT workflow, step, count(*) AS decisions, count(*) FILTER (WHERE human_reviewed) AS reviewed,
  count(*) FILTER (WHERE human_override) AS overrides, count(human_override) AS with_verdict,
  min(confidence), max(confidence)
FROM decisions GROUP BY 1, 2 ORDER BY 1, 2
