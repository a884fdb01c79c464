#!/usr/bin/env bash
set -euo pipefail
# Times each request of one `custos top` poll against a running server (range 1h), five polls.
#
#   scripts/top-poll-cost.sh http://127.0.0.1:4380
#
# docs/benchmarks.md ("Dashboard polls") has figures and how the data was made.

api="${1:-http://127.0.0.1:4380}"
t() { curl -s -o /dev/null -w "%{time_total}" "$@"; }
sql() { t -H 'content-type: application/json' --data "{\"sql\": \"$1\"}" "$api/api/sql"; }
for i in 1 2 3 4 5; do
  a=$(t "$api/api/status"); b=$(t "$api/api/metrics?window=1h&by=workflow"); c=$(t "$api/api/metrics?window=1h&by=minute")
  d=$(t "$api/api/slo?max_age=2m"); e=$(t "$api/api/reviews"); f=$(t "$api/api/audit/verify")
  g=$(sql "SELECT seq, CAST(time AS VARCHAR) AS time, kind, principal, action, resource, decision, array_to_string(policies, ',') AS policies FROM audit ORDER BY seq DESC LIMIT 200")
  h=$(sql "SELECT run_id, workflow, outcome, duration_ms, cost_usd, CAST(start_time AS VARCHAR) AS start_time FROM runs ORDER BY start_time DESC LIMIT 200")
  echo "status $a metrics $b minute $c slo $d reviews $e verify $f audit $g runs $h total $(echo "$a $b $c $d $e $f $g $h" | awk '{s = 0; for (i = 1; i <= NF; i++) s += $i; printf "%.3f", s}') without-verify $(echo "$a $b $c $d $e $g $h" | awk '{s = 0; for (i = 1; i <= NF; i++) s += $i; printf "%.3f", s}')"
done
