#!/usr/bin/env bash
# Set up .venv and run the default test suite, spread over the cores (pytest-xdist -n auto):
# tests/unit (pure, fast) and tests/integration
# (CLI, subprocesses, training runs), without the slow tier. `bash scripts/test.sh -m slow` runs
# the slow tier alone (torch.compile, DDP, a killed sweep); `-m 'not gpu'` runs every CPU test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-env.sh
exec .venv/bin/python -m pytest -q -n auto "$@"
