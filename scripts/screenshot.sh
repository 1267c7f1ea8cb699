#!/usr/bin/env bash
# Open a feedlens report in headless Chromium and save a screenshot: a browser check that the
# page renders from the file system with no network (not run in CI).
#
#   scripts/screenshot.sh [REPORT_DIR_OR_INDEX_HTML] [OUT.png] [WIDTH,HEIGHT]
#
# Defaults: reports/zoo, REPORT_DIR/screenshot.png is NOT used (the report folder is generated
# output); the default OUT is ./report-screenshot.png, the window 1200,3000.
# Needs Debian's `chromium` (apt-get update && apt-get install -y chromium).
set -euo pipefail

target=${1:-reports/zoo}
out=${2:-report-screenshot.png}
size=${3:-1200,3000}

if [[ -d $target ]]; then
    target=$target/index.html
fi
if [[ ! -f $target ]]; then
    echo "error: $target: no such report page (run feedlens report first)" >&2
    exit 1
fi
browser=$(command -v chromium || command -v chromium-browser || true)
if [[ -z $browser ]]; then
    echo "error: chromium not found (apt-get update && apt-get install -y chromium)" >&2
    exit 1
fi

page=$(realpath "$target")
out_abs=$(realpath -m "$out")
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT

# No sandbox (containers run as root), no GPU, and nothing that talks to the network.
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --hide-scrollbars \
    --screenshot="$out_abs" --window-size="$size" "file://$page" 2>/dev/null

if [[ ! -s $out_abs ]]; then
    echo "error: chromium wrote no screenshot to $out_abs" >&2
    exit 1
fi
echo "wrote $out_abs"
