#!/usr/bin/env bash
# The main job on the embedded data (mnist5k, offline), end to end:
#   1. train vanilla, uniform label smoothing and AR-AdaLS (same backbone, data, epochs);
#   2. evaluate each on the clean test split and 75 corrupted copies, raw and
#      temperature-scaled, and print the comparison;
#   3. the calibration-by-robustness diagnostic of the vanilla model;
#   4. export AR-AdaLS as a calibrated SavedModel and query it like TF Serving.
# Sets up .venv first if needed. Environment: EPOCHS (20), SEED (0), OUT (runs/demo),
# STRATA_BY (first_order; attack for the every-batch attack of the paper, which
# multiplies the training time, docs/studies/training-cost.md; margin; confidence).
# AR-AdaLS runs with the library defaults, chosen on the validation splits of
# mnist5k and digits (docs/studies/defaults.md); label smoothing's eps is the one
# the comparison chose on validation (docs/studies/baselines.md).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
epochs="${EPOCHS:-20}"
seed="${SEED:-0}"
out="${OUT:-runs/demo}"
strata_by="${STRATA_BY:-first_order}"
plots="$out/plots"
start=$SECONDS

train() {  # name, then extra train options
  local name="$1"; shift
  echo; echo "=== train $name (mnist5k, $epochs epochs, seed $seed)"
  aradals-tf train --dataset mnist5k --epochs "$epochs" --seed "$seed" --out "$out/$name" --overwrite "$@"
  echo; echo "=== evaluate $name"
  aradals-tf evaluate --run "$out/$name" --shift all --plots "$plots"
}

train vanilla --method vanilla
train label-smoothing --method label-smoothing --label-smoothing 0.01
train ar-adals --method ar-adals --strata-by "$strata_by"

echo; echo "=== comparison (test split; 'shift mean' = 15 CIFAR-10-C corruptions x severities 1-5)"
aradals-tf compare "$out/vanilla" "$out/label-smoothing" "$out/ar-adals"

echo; echo "=== calibration by adversarial robustness (vanilla model, test split)"
aradals-tf robustness --run "$out/vanilla" --plot "$plots/vanilla_robustness.png"

echo; echo "=== export AR-AdaLS for TF Serving and query it"
rm -rf "$out/saved_models"
aradals-tf export --run "$out/ar-adals" --calibration temperature --base-dir "$out/saved_models" --name ar-adals
python -c "
import numpy as np
from aradals_tf import quiet_tensorflow
quiet_tensorflow.configure()
quiet_tensorflow.import_tensorflow()
from aradals_tf import data
images, _ = data.load_arrays('mnist5k', 'test', seed=$seed)
np.save('$out/three_test_digits.npy', images[:3])
"
aradals-tf predict --saved-model "$out/saved_models/ar-adals" --input "$out/three_test_digits.npy"
aradals-tf predict --saved-model "$out/saved_models/ar-adals" --input "$out/three_test_digits.npy" --signature robustness

echo
echo "Done in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s. Plots: $plots; SavedModel: $out/saved_models/ar-adals/1"
