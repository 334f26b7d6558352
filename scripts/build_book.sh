#!/usr/bin/env bash
# Set up the environment if needed, then execute every chapter and build the HTML book in _build/html.
#   bash scripts/build_book.sh            # the instructor/reader build, solutions in dropdowns
#   bash scripts/build_book.sh --student  # the student build without solutions: HTML in _build/student,
#                                         # notebooks to hand out in _build/student/notebooks
# A failing cell fails the build (nb_execution_raise_on_error). On a CPU machine the chapters use the
# small CPU profile; with a CUDA GPU they use the paper's settings (dipreg.teaching.book.setup).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
. "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
export PYTHONHASHSEED=0  # (no MPLBACKEND: the kernels must use the inline backend to show figures)
# One thread per kernel unless told otherwise: the CPU profile's networks are small (per-op overhead
# dominates), and on a shared 2-core machine two threads per process were many times slower.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
rm -rf _build/.jupyter_cache  # the cache keys on notebook code only: never reuse stale results
if [ "${1:-}" = "--student" ]; then
  cfg="$ROOT/.student_config.yml"  # beside _config.yml: local_extensions paths are relative to it
  trap 'rm -f "$cfg"' EXIT
  sed 's/hide_solutions: false/hide_solutions: true/' _config.yml > "$cfg"
  grep -q "hide_solutions: true" "$cfg"
  jupyter-book build --all . --config "$cfg" --path-output _build/student
  python scripts/student_notebooks.py _build/student/notebooks
  echo "student book: $ROOT/_build/student/_build/html/index.html"
else
  python scripts/timed_build.py
fi
