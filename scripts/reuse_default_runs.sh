#!/usr/bin/env bash
# Copies the runs of a cross-fitted study at the defaults (compare --folds,
# no --grid) into a grid study's directory, under the name the grid gives the
# default value, so that `compare` reuses them instead of training them again
# (their configurations are identical; compare checks that before reusing).
#
# Usage: scripts/reuse_default_runs.sh runs/study15_digits runs/study15g_digits
# The method labels and default values are those of the studies' commands
# (docs/studies/*-evidence.md).
set -euo pipefail
if [ $# -ne 2 ] || [ ! -d "$1" ]; then
  echo "Usage: $0 DEFAULTS_STUDY_DIR GRID_STUDY_DIR (the first must exist)" >&2
  exit 2
fi
src=$1
dst=$2
declare -A tag=(
  [vanilla]=default [ens-vanilla]=default
  [label-smoothing]=label_smoothing0.1 [focal]=focal_gamma3.0 [mixup]=mixup_alpha0.2
  [ar-adals]=eps_updateshrunk [ar-confidence]=eps_updateshrunk [ar-first-order]=eps_updateshrunk
  [ar-margin]=eps_updateshrunk [ens-ar]=eps_updateshrunk
)
for method in "${!tag[@]}"; do
  for fold_dir in "$src/$method"/fold*; do
    [ -d "$fold_dir/default/seed0" ] || continue
    target="$dst/$method/$(basename "$fold_dir")/${tag[$method]}"
    [ -e "$target/seed0" ] && continue
    mkdir -p "$target"
    rm -rf "$target/seed0.tmp"
    cp -r "$fold_dir/default/seed0" "$target/seed0.tmp"
    # metrics.json names its run directory: the new one.
    old=$(realpath "$fold_dir/default/seed0")
    new=$(realpath -m "$target/seed0")
    sed -i "s#\"run\": \"$old\"#\"run\": \"$new\"#" "$target/seed0.tmp/metrics.json"
    mv "$target/seed0.tmp" "$target/seed0"  # complete, or not there
  done
done
