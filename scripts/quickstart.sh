#!/usr/bin/env bash
# The main job: set up .venv, train the CPU quick-start (a few minutes on 2 cores), evaluate
# it against least squares and averaging, and write plots to runs/quickstart/eval/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-env.sh
exec .venv/bin/icl train configs/quickstart.yaml --overwrite "$@"
