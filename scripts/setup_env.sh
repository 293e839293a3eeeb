#!/usr/bin/env bash
# Creates .venv if it is missing and installs the package into it (editable).
# Usage: source scripts/setup_env.sh [EXTRAS]   e.g. `test`
# Sourced by demo.sh and test.sh so that both set up a fresh machine the same way.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
if [ ! -x "$root/.venv/bin/python" ]; then
  echo "Creating $root/.venv with $($python --version 2>&1)" >&2
  "$python" -m venv "$root/.venv"
  "$root/.venv/bin/python" -m pip install --quiet --upgrade pip
fi
extras="${1:-}"
spec="$root"
[ -n "$extras" ] && spec="$root[$extras]"
# Quick when everything is already installed; needed after every pull.
"$root/.venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec" \
  || { echo "Installing aradals-tf into .venv failed: see pip's output above." >&2; exit 1; }
export PATH="$root/.venv/bin:$PATH"
