#!/usr/bin/env bash
# Set up .venv and run the default test suite (fast tests; add -m slow for the slow ones).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-env.sh
exec .venv/bin/python -m pytest -q "$@"
