#!/usr/bin/env bash
# Takes a PNG screenshot of `custos top` running in a real terminal: an xterm on a virtual X display
# (Debian's `xvfb`, `xterm`, `x11-apps` for xwd, `imagemagick` and `fonts-dejavu-core`).
#
#   scripts/top-screenshot.sh http://127.0.0.1:4380 docs/top-overview.png [KEYS]
#
# KEYS, if given, are typed into the dashboard (with xdotool-free `tmux send-keys` semantics: the
# dashboard runs inside tmux inside the xterm) before the picture is taken, e.g. `4` for Reviews.
# docs/dashboard.md says how the README's picture was made.
set -euo pipefail
server="${1:?usage: $0 SERVER_URL OUT.png [KEYS]}"
png="${2:?usage: $0 SERVER_URL OUT.png [KEYS]}"
keys="${3:-}"
for tool in Xvfb xterm xwd tmux; do
  if ! command -v "$tool" > /dev/null; then
    echo "error: \`$tool\` not found; apt-get install -y xvfb xterm x11-apps imagemagick tmux fonts-dejavu-core" >&2
    exit 2
  fi
done
# ImageMagick's convert (Debian installs it in /usr/bin; prefer it over other `convert`s on PATH).
convert="$(command -v magick || { [ -x /usr/bin/convert ] && echo /usr/bin/convert; } || command -v convert || true)"
if [ -z "$convert" ]; then
  echo "error: ImageMagick not found; apt-get install -y imagemagick" >&2
  exit 2
fi
bin="${CUSTOS_BIN:-$(command -v custos || echo target/debug/custos)}"
display=":$((90 + RANDOM % 100))"
session="custos-shot-$$"
Xvfb "$display" -screen 0 1400x900x24 > /dev/null 2>&1 &
xvfb=$!
trap 'tmux kill-session -t "$session" 2> /dev/null || true; kill "$xvfb" 2> /dev/null || true' EXIT
sleep 1
tmux new-session -d -s "$session" -x 120 -y 36 "$bin top --server $server"
DISPLAY="$display" xterm -geometry 120x36+0+0 -fa 'DejaVu Sans Mono' -fs 11 \
  -bg '#1e1e1e' -fg '#d4d4d4' -e tmux attach -t "$session" &
sleep 6
if [ -n "$keys" ]; then
  tmux send-keys -t "$session" $keys
  sleep 3
fi
tmux set-option -t "$session" status off > /dev/null
sleep 1
DISPLAY="$display" xwd -root -silent | "$convert" xwd:- -trim +repage "$png"
echo "wrote $png"
