"""Pairs per second of ``dipreg.register_many`` (B pairs at once) against B separate ``dipreg.register`` calls.

Every pair is the embedded sample pair at ``--size`` with its own seed (the content does not change the
cost). For each batch size B: ``register_many`` on B pairs, timed once after an untimed warm-up batch,
against ``register`` one pair at a time, timed on ``min(B, --max-single)`` pairs and scaled to B (each
call costs the same). Both run the same preset and iterations; the device is synchronised by the final
``.cpu()`` of every result. "speed-up" = batched pairs/s over one-by-one pairs/s; the GPU target is >= 5x.

    python benchmarks/bench_batch.py --device cuda --preset gpu --batch 1 4 16 32 --iterations 50
    python benchmarks/bench_batch.py --threads 1 --batch 1 4 --iterations 20   # CPU
    python benchmarks/bench_batch.py --quick                                    # seconds, tiny settings
"""

from __future__ import annotations

import time

import torch
from _common import parser, setup

import dipreg
from dipreg.data import sample_pair
from dipreg.methods.batch import register_many


def measure(batch: int, *, preset: str, dev: torch.device, size: int, max_single: int, **overrides) -> dict:
    """Seconds and pairs/s of one ``register_many`` over ``batch`` pairs and of one-by-one ``register``."""
    pair = sample_pair(size=size)
    pairs = [(pair.moving, pair.fixed)] * batch
    register_many(pairs[:1], config=preset, device=dev, progress=False, **{**overrides, "iterations": 2})  # warm-up
    start = time.perf_counter()
    register_many(pairs, config=preset, seed=0, device=dev, progress=False, **overrides)
    t_batch = time.perf_counter() - start
    n_single = min(batch, max_single)
    start = time.perf_counter()
    for i in range(n_single):
        dipreg.register(pair.moving, pair.fixed, config=preset, seed=i, device=dev, progress=False, **overrides)
    t_single = (time.perf_counter() - start) / n_single
    return {"batch": batch, "batch_s": t_batch, "single_s": t_single, "batch_pps": batch / t_batch,
            "single_pps": 1 / t_single, "speedup": t_single * batch / t_batch}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = parser(__doc__)
    ap.add_argument("--preset", default=None, help="default: 'gpu' on CUDA, 'cpu' otherwise")
    ap.add_argument("--batch", nargs="+", type=int, default=[1, 4, 16])
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--max-single", type=int, default=4, help="one-by-one calls timed per row (then scaled)")
    args = ap.parse_args(argv)
    dev = setup(args)
    preset = args.preset or ("gpu" if dev.type == "cuda" else "cpu")
    overrides: dict = {"iterations": args.iterations}
    if args.quick:
        args.batch, args.size, args.max_single = [1, 2], 64, 2
        overrides = {"iterations": 3, "down": (8, 8), "up": (8, 8), "in_channels": 4, "readout_draws": 1}
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    print(f"device {dev} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}; preset {preset} "
          f"{overrides}; {args.size} x {args.size}\n")
    print("| pairs B | register_many s | one-by-one s (B x one call) | register_many pairs/s | one-by-one pairs/s "
          "| speed-up |")
    print("|---|---|---|---|---|---|")
    rows = []
    for b in args.batch:
        r = measure(b, preset=preset, dev=dev, size=args.size, max_single=args.max_single, **overrides)
        rows.append(r)
        print(f"| {b} | {r['batch_s']:.2f} | {r['single_s'] * b:.2f} | {r['batch_pps']:.3f} | {r['single_pps']:.3f} "
              f"| {r['speedup']:.1f}x |", flush=True)
    return rows


if __name__ == "__main__":
    main()
