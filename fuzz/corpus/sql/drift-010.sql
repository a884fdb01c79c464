SELECT model, count(*) FILTER (WHERE NOT cur) AS baseline, count(*) FILTER (WHERE cur) AS current,
  psi(confidence, cur) AS psi, ks(confidence, cur) AS ks
FROM (SELECT model, confidence, start_time >= TIMESTAMP '2026-11-02T00:00:00Z' AS cur FROM decisions)
GROUP BY 1 ORDER BY 1
