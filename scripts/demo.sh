#!/usr/bin/env bash
# The main job on the embedded data (mnist5k, offline): train a vanilla and a
# label-smoothing model, evaluate both on clean and corrupted test data (raw
# and temperature-scaled), print the calibration tables and write reliability
# diagrams. Sets up .venv first if needed.
# Environment: EPOCHS (default 20), SEED (0), OUT (runs/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
epochs="${EPOCHS:-20}"
seed="${SEED:-0}"
out="${OUT:-runs/demo}"
plots="$out/plots"
for method in vanilla label-smoothing; do
  echo "=== train $method (mnist5k, $epochs epochs, seed $seed)"
  aradals-tf train --dataset mnist5k --method "$method" --epochs "$epochs" --seed "$seed" \
    --out "$out/$method" --overwrite
  echo "=== evaluate $method"
  aradals-tf evaluate --run "$out/$method" --shift all --plots "$plots"
done
echo
echo "=== comparison (test split; 'shift mean' = all corruptions x severities 1-5)"
aradals-tf compare "$out/vanilla" "$out/label-smoothing"
echo
echo "Reliability diagrams: $plots"
