SELECT step, prompt_version, psi(confidence, start_time >= TIMESTAMP '2026-11-02T00:00:00Z') AS psi
FROM decisions GROUP BY 1, 2 ORDER BY 1, 2
