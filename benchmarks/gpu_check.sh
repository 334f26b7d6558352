#!/usr/bin/env bash
# The one prepared GPU check: every GPU number issue 5 asks for, in one run of about 8 minutes on an
# H100/H200. Run it from the repository root on the lent machine (its python3 has torch, scikit-image,
# scipy and tifffile; dipreg is used from the checkout, nothing is installed):
#
#     bash benchmarks/gpu_check.sh "$OUT"          # OUT: folder for gpu_check.log (default /tmp/gpu_check)
#
# With DIPREG_LGG_ROOT set to the full LGG download (kaggle_3m), it also runs the unchanged `paper` preset on
# all consecutive pairs (issue 12), resumable across runs.
#
# Every step has its own time limit, so one hang cannot eat the whole lease; the log says which step
# failed. A dry run on a CPU (tiny settings, seconds) keeps the script from rotting:
#
#     DIPREG_CHECK_DEVICE=cpu DIPREG_CHECK_QUICK=1 bash benchmarks/gpu_check.sh /tmp/gpu_check
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUTDIR="${1:-/tmp/gpu_check}"
mkdir -p "$OUTDIR"
LOG="$OUTDIR/gpu_check.log"
DEV="${DIPREG_CHECK_DEVICE:-cuda}"
PY="${PYTHON:-python3}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
cd "$ROOT" || exit 1

if [ -n "${DIPREG_CHECK_QUICK:-}" ]; then
  STEP=(--quick) STEPC=(--quick) STEPA=(--quick --presets cpu) OVER=(--quick) BATCH=(--quick) PROJ_ITERS=3 PROJ_EXTRA="down=(8, 8), up=(8, 8), in_channels=4,"
else
  STEP=(--presets paper gpu cpu --sizes 128 256 --repeats 20 --budget 20)
  STEPC=(--presets gpu cpu --sizes 256 --repeats 20 --budget 20)
  STEPA=(--presets paper gpu --sizes 256 --repeats 20 --budget 20)
  OVER=(--preset gpu --iterations 200 --repeats 3)
  BATCH=(--preset gpu --batch 1 4 16 32 --iterations 50)
  PROJ_ITERS=1000 PROJ_EXTRA=""
fi

failed=0
run() {  # run LIMIT_S TITLE CMD...: one step, its output in the log, its exit status remembered
  local limit=$1 title=$2
  shift 2
  echo -e "\n## $title\n\n\$ $*" | tee -a "$LOG"
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    echo "!! step failed (exit $rc): $title" | tee -a "$LOG"
    failed=$((failed + 1))
  fi
}

: > "$LOG"
run 30 "machine" bash -c "date -u; nvidia-smi || true; $PY -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0))'"
run 150 "ms per step, eager (target: paper preset >= 60 % of the measured conv throughput)" \
  "$PY" benchmarks/bench_step.py --device "$DEV" "${STEP[@]}"
run 240 "ms per step, torch.compile" "$PY" benchmarks/bench_step.py --device "$DEV" --compile "${STEPC[@]}"
run 120 "ms per step with cudnn autotuning, then also bf16 autocast (timing only: register runs float32)" \
  bash -c "$PY benchmarks/bench_step.py --device $DEV --cudnn-benchmark ${STEPA[*]} &&
           $PY benchmarks/bench_step.py --device $DEV --cudnn-benchmark --amp bf16 ${STEPA[*]}"
run 90 "library overhead over a hand-written loop (target <= 5 %)" \
  "$PY" benchmarks/bench_overhead.py --device "$DEV" "${OVER[@]}"
run 150 "register_many against one-by-one (target >= 5x pairs per second)" \
  "$PY" benchmarks/bench_batch.py --device "$DEV" "${BATCH[@]}"
run 90 "same seed, same device, same numbers? (grid_sample's backward adds atomically on CUDA)" "$PY" -c "
import numpy as np, torch, dipreg
dev = torch.device('$DEV')
pair = dipreg.data.sample_pair()
kw = dict(device=dev, progress=False, seed=0, iterations=$PROJ_ITERS if $PROJ_ITERS < 50 else 50, $PROJ_EXTRA)
a, b = dipreg.register(pair.moving, pair.fixed, **kw), dipreg.register(pair.moving, pair.fixed, **kw)
same = a.history == b.history and np.array_equal(a.displacement, b.displacement)
print(f'two runs, seed 0: identical {same}; max |du| {np.abs(a.displacement - b.displacement).max():.2e} px, '
      f'max loss difference {max(abs(x - y) for x, y in zip(a.history, b.history)):.2e}')
"
run 90 "one full registration (gpu preset) and the projected 109-pair reproduction" "$PY" -c "
import time, torch, dipreg
dev = torch.device('$DEV')
pair = dipreg.data.sample_pair()
dipreg.register(pair.moving, pair.fixed, device=dev, progress=False, iterations=2)  # warm-up
start = time.perf_counter()
res = dipreg.register(pair.moving, pair.fixed, device=dev, progress=False, iterations=$PROJ_ITERS, $PROJ_EXTRA)
sec = time.perf_counter() - start
m = res.metrics()
print(f'{res.info[\"preset\"]} preset, {len(res.history)} iterations: {sec:.1f} s; SSIM {m[\"ssim_before\"]:.3f} -> '
      f'{m[\"ssim_after\"]:.3f}, folded {100 * m[\"folded_fraction\"]:.3f} %')
print(f'projected 109-pair reproduction, one pair at a time: {109 * sec / 60:.1f} min')
"
if [ -n "${DIPREG_LGG_ROOT:-}" ] && [ -d "${DIPREG_LGG_ROOT}" ]; then
  # issue 12: the unchanged paper preset on every consecutive pair of the full download (resumable: run the
  # script again to continue; the rows land in $OUTDIR/lgg_all_paper/results.csv)
  run 480 "the paper preset on all consecutive LGG pairs ($DIPREG_LGG_ROOT)" \
    "$PY" -m dipreg reproduce --data "$DIPREG_LGG_ROOT" --out "$OUTDIR/lgg_all_paper" --methods dip --preset paper \
    --device "$DEV" --no-progress ${DIPREG_CHECK_QUICK:+--limit 1 --iterations 2}
else
  echo -e "\n## the paper preset on all LGG pairs: skipped (set DIPREG_LGG_ROOT to the kaggle_3m folder)" | tee -a "$LOG"
fi
if [ -z "${DIPREG_CHECK_QUICK:-}" ]; then
  # issue 12: the paper rung of chapter 10's ladder on the held-out tissue pairs (embedded data), the rung that
  # takes 20-60 min per pair on a CPU; copy $OUTDIR/paper_steps/steps.jsonl rows into dipreg/data/book/paper_steps
  run 300 "the ladder's paper rung on the held-out tissue pairs" \
    "$PY" scripts/paper_to_ours.py --out "$OUTDIR/paper_steps" --steps paper --device "$DEV"
fi
echo -e "\n$failed step(s) failed; log: $LOG" | tee -a "$LOG"
exit "$failed"
