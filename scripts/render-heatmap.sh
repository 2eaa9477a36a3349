#!/usr/bin/env bash
# Renders the README's heatmap: self-attention over ten Chinese tokens with random embeddings and
# weights (seeded), drawn by `attention inspect --heatmap` as SVG and photographed by headless
# Chromium to PNG, which shows the SVG exactly as a browser does (CJK labels included).
# Usage: scripts/render-heatmap.sh [OUT_DIR]   (default docs/); installs chromium and a CJK font when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs}"
mkdir -p "$out"
if ! command -v chromium > /dev/null || ! fc-list | grep -qi "Noto Sans CJK"; then
  apt-get update -q > /dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium fonts-noto-cjk > /dev/null
fi

tokens="$(mktemp)"
trap 'rm -f "$tokens"' EXIT
printf '%s\n' 今天 天气 真 好 ， 我 想 出 去 玩 > "$tokens"
./attention inspect --random --seq 10 --dim 16 --heads 4 --seed 7 --causal --head 2 \
  --q-labels "$tokens" --k-labels "$tokens" --heatmap "$out/heatmap-zh.svg" --quiet

read -r width height < <(sed -n 's/^<svg [^>]*width="\([0-9]*\)" height="\([0-9]*\)".*/\1 \2/p' "$out/heatmap-zh.svg")
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --force-device-scale-factor=1 \
  --window-size="$width,$height" --screenshot="$(realpath "$out")/heatmap-zh.png" "file://$(realpath "$out")/heatmap-zh.svg" 2> /dev/null
echo "wrote $out/heatmap-zh.svg and $out/heatmap-zh.png (${width}×${height})"
