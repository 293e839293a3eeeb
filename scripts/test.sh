#!/usr/bin/env bash
# Sets up .venv (with the test extra) if needed and runs the test suite.
# Extra arguments go to pytest, e.g. ./scripts/test.sh -k metrics
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh test
exec python -m pytest "$@"
