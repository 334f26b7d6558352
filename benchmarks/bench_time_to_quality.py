"""Time for dipreg to reach the SSIM of ANTs SyN, pair by pair, against ANTs' own time.

For every LGG pair (consecutive patients, middle FLAIR slice: ``dipreg.data.lgg_pairs``):

1. ``dipreg.methods.ants.register_ants`` (``SyN``, the paper's comparator): its wall time and the SSIM of its
   warped image to the fixed one (``dipreg.metrics.ssim``, data range 1, whole image).
2. ``dipreg.register`` (``--preset``, default ``cpu``) with a callback that every ``--every`` steps warps
   the *original* moving image with the current step's displacement (one noise draw, not the final
   readout average) and computes the same SSIM. The clock starts just before ``register`` is called and
   the time spent inside the callback is subtracted, so the evaluation does not count. The first time
   the SSIM reaches ANTs' the run stops (``--no-stop`` runs every iteration).
   The returned result's SSIM and % folded pixels (det J <= 0) are printed beside it.

    python benchmarks/bench_time_to_quality.py                # all local LGG pairs, cpu preset
    python benchmarks/bench_time_to_quality.py --limit 2 --every 5
    python benchmarks/bench_time_to_quality.py --device cuda --preset gpu
    python benchmarks/bench_time_to_quality.py --compile      # register(compile=True), compiled once up front
    python benchmarks/bench_time_to_quality.py --quick        # embedded sample pair at 64 px, seconds
"""

from __future__ import annotations

import statistics
import time

import torch
from _common import parser, setup

import dipreg
from dipreg.data import default_lgg_root, lgg_pairs, sample_pair
from dipreg.methods.ants import register_ants
from dipreg.metrics import folded_fraction, ssim
from dipreg.transform import warp


def time_to_quality(pair, target: float, *, preset: str, every: int, stop: bool, dev: torch.device,
                    seed: int = 0, compile: bool = False, **overrides) -> dict:
    """Run ``dipreg.register`` on ``pair`` and return when (evaluation time excluded) SSIM first reached ``target``."""
    state = {"eval": 0.0, "hit": None, "hit_iter": None, "best": -1.0, "last": None}

    def callback(step) -> bool:
        t0 = time.perf_counter()
        done = False
        if (step.iteration + 1) % every == 0:
            u = step.displacement[0].double().cpu().numpy()
            s = ssim(warp(pair.moving, u), pair.fixed)
            state["best"] = max(state["best"], s)
            state["last"] = s
            if state["hit"] is None and s >= target:
                state["hit"] = t0 - start - state["eval"]
                state["hit_iter"] = step.iteration + 1
                done = stop
        state["eval"] += time.perf_counter() - t0
        return done

    start = time.perf_counter()
    res = dipreg.register(pair.moving, pair.fixed, config=preset, seed=seed, device=dev, progress=False,
                          callback=callback, compile=compile, **overrides)
    total = time.perf_counter() - start - state["eval"]
    return {**state, "total": total, "iterations": len(res.history), "final_ssim": ssim(res.warped, pair.fixed),
            "folded_pct": 100 * folded_fraction(res.displacement)}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = parser(__doc__)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--iterations", type=int, default=None, help="override the preset's iterations")
    ap.add_argument("--every", type=int, default=10, help="evaluate SSIM every k steps")
    ap.add_argument("--limit", type=int, default=None, help="at most this many pairs")
    ap.add_argument("--no-stop", action="store_true", help="run all iterations after reaching the target")
    ap.add_argument("--compile", action="store_true",
                    help="register(compile=True); the one-off compilation runs first and is reported apart")
    args = ap.parse_args(argv)
    dev = setup(args)
    overrides: dict = {}
    if args.iterations:
        overrides["iterations"] = args.iterations
    root = default_lgg_root()
    if args.quick:
        pairs = [sample_pair(size=64)]
        overrides.update(iterations=10, down=(8, 8), up=(8, 8), in_channels=8, grid_scale=4, readout_draws=1)
        args.every = 2
        source = "embedded sample pair at 64 x 64 (quick)"
    elif root is None:
        raise SystemExit("no LGG data found (dipreg.data.default_lgg_root() is None); set DIPREG_LGG_ROOT")
    else:
        pairs = list(lgg_pairs(root, limit=args.limit))
        source = f"LGG consecutive pairs, middle FLAIR ({root})"
    print(f"device {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}; preset {args.preset} "
          f"{overrides or ''}; SSIM every {args.every} steps; {source}")
    if args.compile:  # compile once (as a reproduction over many pairs would), outside the per-pair clocks
        start = time.perf_counter()
        dipreg.register(pairs[0].moving, pairs[0].fixed, config=args.preset, device=dev, progress=False, compile=True,
                        **{**overrides, "iterations": 1, "readout_draws": 1})
        print(f"torch.compile: {time.perf_counter() - start:.1f} s once per process (not in the times below)")
    print()
    print("| pair | SSIM before | ANTs SyN s | ANTs SSIM | dipreg s to ANTs SSIM | at step | ratio to ANTs | "
          "dipreg best SSIM seen | final SSIM | final % folded |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for pair in pairs:
        ants_res = register_ants(pair.moving, pair.fixed)
        target = ssim(ants_res.warped, pair.fixed)
        r = time_to_quality(pair, target, preset=args.preset, every=args.every, stop=not args.no_stop, dev=dev,
                            compile=args.compile, **overrides)
        hit = r["hit"]
        row = {"pair": pair.id, "before": ssim(pair.moving, pair.fixed), "ants_s": ants_res.seconds,
               "ants_ssim": target, **r}
        rows.append(row)
        ratio = f"{hit / ants_res.seconds:.1f}" if hit is not None else "not reached"
        hit_s = f"{hit:.1f}" if hit is not None else f"> {r['total']:.1f}"
        short = pair.id.replace("TCGA_", "").replace(":flair", "")
        print(f"| {short} | {row['before']:.3f} | {ants_res.seconds:.2f} | {target:.3f} | {hit_s} | "
              f"{r['hit_iter'] or '-'} | {ratio} | {r['best']:.3f} | {r['final_ssim']:.3f} | "
              f"{r['folded_pct']:.3f} |", flush=True)
    hits = [r["hit"] / r["ants_s"] for r in rows if r["hit"] is not None]
    if hits:
        print(f"\nreached ANTs' SSIM on {len(hits)}/{len(rows)} pairs; median time ratio dipreg/ANTs "
              f"{statistics.median(hits):.1f}")
    return rows


if __name__ == "__main__":
    main()
