SELECT input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_usd,
  ((input_tokens - cache_read_tokens - cache_write_tokens) * 3.0 + cache_read_tokens * 0.30
   + cache_write_tokens * 3.75 + (output_tokens - reasoning_tokens) * 15.0 + reasoning_tokens * 15.0) / 1e6
   AS by_hand
FROM steps WHERE cost_source = 'computed' ORDER BY start_time LIMIT 3
