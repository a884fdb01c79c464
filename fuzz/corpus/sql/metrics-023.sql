SELECT workflow, CAST(count(*) FILTER (WHERE outcome = 'escalated') AS DOUBLE)
  / count(*) FILTER (WHERE outcome <> 'in_progress') AS escalation_rate
FROM runs GROUP BY 1 ORDER BY 1
