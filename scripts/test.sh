#!/usr/bin/env bash
# Sets up .venv (with the test and docs extras) if needed and runs the test suite
# (which also builds the docs site with --strict).
# Extra arguments go to pytest, e.g. ./scripts/test.sh -k metrics
# The tests run in TEST_WORKERS processes (pytest-xdist; default 2, one per
# core of the machines here: most tests keep one core busy); 0 runs them in this one.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh test,docs
exec python -m pytest -n "${TEST_WORKERS:-2}" "$@"
