#!/usr/bin/env bash
# Sets everything up, then runs the linter and the test suite (what CI runs). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
# Two workers, one per core: the suite is many short processes that leave a core idle. An idle worker takes queued
# tests from the busy one (worksteal), so a long test at the end does not hold the run. `-n 0` runs it in one.
.venv/bin/python -m pytest -n 2 --dist worksteal "$@"
