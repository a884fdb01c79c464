#!/usr/bin/env bash
# Renders an audit report's HTML in headless Chromium (Debian's `chromium` package), checks that the
# browser sees every section, the inline SVG charts and no script, and writes a PNG screenshot.
#
#   scripts/report-screenshot.sh REPORT_DIR/report.html docs/audit-report.png
#
# A report to render comes from `custos audit report --out DIR`, or from the end-to-end test:
#   CUSTOS_KEEP_REPORT=/tmp/custos-report cargo test --workspace --test integration -- gate_policy_and_audit
set -euo pipefail
html="${1:?usage: $0 REPORT.html OUT.png}"
png="${2:?usage: $0 REPORT.html OUT.png}"
browser="$(command -v chromium || command -v chromium-browser || true)"
if [ -z "$browser" ]; then
  echo "error: chromium not found; install it with \`apt-get install -y chromium\`" >&2
  exit 2
fi
url="file://$(realpath "$html")"
flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars --force-device-scale-factor=1)
dom="$(mktemp)"
trap 'rm -f "$dom"' EXIT
"$browser" "${flags[@]}" --dump-dom "$url" > "$dom" 2>/dev/null
fail=0
for id in scope decisions gate oversight changes slos denials integrity retention; do
  if ! grep -q "<section id=\"$id\">" "$dom"; then
    echo "missing section: $id" >&2
    fail=1
  fi
done
charts="$(grep -o '<svg class="chart"' "$dom" | wc -l)"
if [ "$charts" -lt 3 ]; then
  echo "expected at least 3 inline SVG charts, the browser saw $charts" >&2
  fail=1
fi
if grep -q '<script' "$dom"; then
  echo "the report must not contain scripts" >&2
  fail=1
fi
[ "$fail" = 0 ] || exit 1
"$browser" "${flags[@]}" --window-size=1280,2200 --screenshot="$(realpath -m "$png")" "$url" 2>/dev/null
echo "ok: 9 sections, $charts charts, no scripts; screenshot in $png"
