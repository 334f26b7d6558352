#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install everything into it.
# Sourced by build_book.sh and test.sh; safe to run again (a stamp file skips a finished install).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DIPREG_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
STAMP="$VENV/.dipreg-installed"
HASH="$(cat "$ROOT/requirements.txt" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$HASH" ]; then
  python -m pip install -q --upgrade pip
  if ! python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1; then
      python -m pip install -q torch
    else
      # the CPU build: a local wheel on this project's machines, else PyTorch's CPU index (plain
      # `pip install torch` on Linux pulls a multi-GB CUDA build)
      python -m pip install -q "torch==2.13.0+cpu" 2>/dev/null \
        || python -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
    fi
  fi
  python -m pip install -q -r "$ROOT/requirements.txt"
  python -m pip install -q --no-deps -e "$ROOT"
  echo "$HASH" > "$STAMP"
fi
