#!/usr/bin/env bash
# The evidence study of docs/studies/mnist5k-evidence.md, on CIFAR-10 with a ResNet-20, for users who have
# a GPU and the tfds data (this project's machines have neither; nothing here was run on CIFAR-10).
#
# Needs: the tfds `cifar10` dataset already prepared under DATA_DIR (tfds cannot download here; on a machine
# with internet `python -c "import tensorflow_datasets as tfds; tfds.load('cifar10', data_dir='DATA_DIR')"`),
# a CUDA build of TensorFlow, and about 6-8 GPU-hours on one V100/A100-class GPU: 10 methods x 3 seeds x
# EPOCHS epochs (an estimate from ResNet-20's usual 10-15 s per vanilla epoch and the measured cost ratios
# of training-cost.md, AR-AdaLS about 2.5x; not a measurement).
# CIFAR-10 has its own test split, so seeds replace the folds: 10,000 test images per seed.
#
# Usage: DATA_DIR=~/tensorflow_datasets ./scripts/reproduce_cifar10.sh [OUT] [EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/study_cifar10}"
EPOCHS="${2:-50}"
DATA_DIR="${DATA_DIR:?set DATA_DIR to the tfds data directory that holds cifar10}"
if [ ! -d "$DATA_DIR/cifar10" ]; then
  echo "Error: $DATA_DIR/cifar10 not found; prepare the tfds cifar10 dataset there first." >&2
  exit 1
fi
source scripts/setup_env.sh
.venv/bin/aradals-tf compare --out "$OUT" --dataset cifar10 --seeds 0,1,2 --epochs "$EPOCHS" \
  --set backbone=resnet20 --set data_dir="$DATA_DIR" --set batch_size=128 \
  --methods vanilla,ar-adals,ar-confidence=ar-adals,label-smoothing,ens-vanilla=vanilla,ens-ar=ar-adals,ar-first-order=ar-adals,ar-margin=ar-adals,focal,mixup \
  --set ar-confidence.strata_by=confidence --set ar-first-order.strata_by=first_order --set ar-margin.strata_by=margin \
  --set ens-vanilla.ensemble_size=3 --set ens-ar.ensemble_size=3 \
  --pair ar-adals:vanilla --pair ar-adals:vanilla+ts --pair ar-adals:ar-confidence \
  --pair ens-ar:ens-vanilla --pair ens-ar:ens-vanilla+ts
