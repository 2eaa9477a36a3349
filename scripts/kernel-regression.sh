#!/usr/bin/env bash
# Nadaraya–Watson kernel regression as attention pooling: queries are the points x where the curve is
# evaluated, keys the training inputs x_i, values the training targets y_i, and the Gaussian score
# s = −(x − x_i)²/(2σ²) makes f(x) = Σ_i softmax_i(s) · y_i. Fits the same noisy data with a wide and a
# narrow kernel and draws both against the data.
# Usage: scripts/kernel-regression.sh [OUT_DIR] [--png]   (default docs/; --png also renders with headless Chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs}"
mkdir -p "$out"
if ! /usr/bin/python3 -c 'import numpy' 2> /dev/null; then
  apt-get update -q > /dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-numpy > /dev/null
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
/usr/bin/python3 - "$work" <<'PY'
import sys, numpy as np
d = sys.argv[1]
rng = np.random.default_rng(0)
f = lambda x: 2 * np.sin(x) + x ** 0.8
xi = np.sort(rng.uniform(0, 5, 50))
yi = f(xi) + rng.normal(0, 0.5, 50)
grid = np.linspace(0, 5, 200)
for name, a in {"xi": xi, "yi": yi, "grid": grid, "truth": f(grid)}.items():
    np.save(f"{d}/{name}.npy", a.astype(np.float32).reshape(-1, 1))
PY

for sigma in 1.5 0.1; do
  ./attention run --q "$work/grid.npy" --k "$work/xi.npy" --v "$work/yi.npy" --score gaussian --sigma "$sigma" --out "$work/fit-$sigma.npy" --quiet
done

./attention plot --out "$out/kernel-regression.svg" --title "Nadaraya–Watson kernel regression = attention with a Gaussian score" \
  --points "$work/xi.npy,$work/yi.npy,data: y = 2 sin x + x^0.8 + noise" --line "$work/grid.npy,$work/truth.npy,2 sin x + x^0.8" \
  --line "$work/grid.npy,$work/fit-1.5.npy,σ = 1.5 (near the mean)" --line "$work/grid.npy,$work/fit-0.1.npy,σ = 0.1 (near nearest neighbour)"

if [[ "${2:-}" == "--png" ]]; then
  read -r width height < <(sed -n 's/^<svg [^>]*width="\([0-9]*\)" height="\([0-9]*\)".*/\1 \2/p' "$out/kernel-regression.svg")
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --force-device-scale-factor=1 \
    --window-size="$width,$height" --screenshot="$(realpath "$out")/kernel-regression.png" "file://$(realpath "$out")/kernel-regression.svg" 2> /dev/null
  echo "wrote $out/kernel-regression.png"
fi
