SELECT run_id, end_time, duration_ms, steps FROM runs WHERE outcome = 'in_progress' ORDER BY run_id
