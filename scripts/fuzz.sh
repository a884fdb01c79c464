#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 120) with cargo fuzz on the nightly toolchain,
# starting from fuzz/corpus/TARGET and growing it. Crashes land in fuzz/artifacts/TARGET; the run
# fails if any target finds one. docs/fuzzing.md says how to reproduce and minimise one.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-120}"
shift || true
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
# One build for every target (they share the workspace's dependencies).
cargo +nightly fuzz build -O
failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== $t (${seconds}s)"
  # -timeout: one input taking more than 10 s is a hang; -rss_limit_mb bounds memory per input.
  set +o pipefail
  cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -max_len=262144 \
      -print_final_stats=1 2>&1 | tee "/tmp/custos-fuzz-$t.log" \
    | grep -E "^(#[0-9]+ *DONE|==[0-9]+==|stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY|Done)"
  status=${PIPESTATUS[0]}
  set -o pipefail
  if [ -n "$(ls -A "artifacts/$t" 2>/dev/null)" ]; then
    failed+=("$t")
  elif [ "$status" -ne 0 ] || ! grep -q "stat::number_of_executed_units" "/tmp/custos-fuzz-$t.log"; then
    # Not a finding: the target did not run (a build failure, say). Never report it as clean.
    echo "$t did not run to the end (exit $status); see /tmp/custos-fuzz-$t.log"
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -ne 0 ]; then
  echo "crashes or hangs found, or a target did not run, in: ${failed[*]} (see fuzz/artifacts/ and /tmp/custos-fuzz-TARGET.log)"
  exit 1
fi
echo "no crashes, no hangs: ${targets[*]}"
