#!/usr/bin/env bash
# Set up the environment if needed, then lint and run the test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
. "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
ruff check .
python scripts/sync_notebooks.py --check
python scripts/student_notebooks.py --check
python -m pytest -q "$@"
