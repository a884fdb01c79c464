SELECT * FROM runs WHERE run_id = (SELECT min(run_id) FROM runs WHERE retries > 0 AND overrides > 0)
