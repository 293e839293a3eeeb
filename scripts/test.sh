#!/usr/bin/env bash
# Sets up .venv (with the test and docs extras) if needed and runs the test suite
# (which also builds the docs site with --strict).
# Extra arguments go to pytest, e.g. ./scripts/test.sh -k metrics
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh test,docs
exec python -m pytest "$@"
