#!/usr/bin/env bash
# Creates ./.venv if needed and installs icl (editable, with dev tools) into it.
# torch: on a machine with an NVIDIA GPU, the default CUDA build; otherwise the CPU build
# pinned below (set ICL_TORCH="torch==X.Y.Z ..." to choose another spec or extra pip args).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if [ -n "${ICL_TORCH:-}" ]; then
    read -r -a spec <<< "$ICL_TORCH"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    spec=("torch>=2.2")
  else
    spec=("torch==2.13.0")  # CPU build: never pull a multi-GB CUDA wheel onto a CPU machine
  fi
  echo "installing ${spec[*]} ..." >&2
  "${PIP[@]}" "${spec[@]}"
fi
stamp=.venv/.icl-installed
want=$(cat pyproject.toml | cksum)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing icl and its dependencies into .venv ..." >&2
  "${PIP[@]}" -e ".[dev]" 2> >(grep -v "^WARNING: Location" >&2)
  echo "$want" > "$stamp"
fi
