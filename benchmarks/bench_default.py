"""Judge a registration setting the way a registration user does: known fields, anatomy, plausibility, time.

Three suites, each on pairs named in the output:

* ``robust``: known deformations of real and synthetic images with the faults of real data (a hot pixel,
  unequal intensity ranges, a gamma change, a zero-padded band; white noise and a large motion, where the
  network's prior shows). Score: mean endpoint error (pixels) inside
  the region where the answer is defined (the brain, or the image minus an 8-pixel border).
* ``tissue``: inter-subject brain slices with tissue labels (:func:`dipreg.data.tissue_pairs`; ``--split``
  development, held-out or all). Scores: mean label Dice, SD log det J, folded pixels, SSIM.
* ``lgg``: consecutive LGG pairs, middle FLAIR slice in [0, 1] (``--data``; ``--lgg-pairs`` how many of the
  first pairs of ``--data``: the development pairs only when it is ``../shared/data``). Scores: whole-image
  SSIM, SD log det J, folding.

Methods (``--methods``, comma-separated): ``dip`` (:func:`dipreg.register` with ``--preset`` and ``--set
KEY=VALUE`` overrides), ``classical``, ``ants-SyN``, ``ants-SyNCC`` (any ``ants-<type_of_transform>``).
Every registration runs on one torch thread (``--threads``) and single-threaded ITK; the time is the whole
call. The methods run case by case (every method on a case, then the next case), so that a drifting machine
slows them alike; each method after the first also gets the ratio of the first method's mean time to its own.
One JSON line per (method, suite, case) goes to ``--out`` (appended), and a summary table is printed.

    python benchmarks/bench_default.py --suites robust,tissue --methods dip,ants-SyN --threads 1
    python benchmarks/bench_default.py --suites lgg --data /path/to/kaggle_3m --lgg-pairs 109 --methods dip
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from _common import parser, setup
from scipy.ndimage import gaussian_filter

import dipreg
from dipreg.cli import parse_value
from dipreg.data import Pair, sample_pair, synthetic_pair, tissue_pairs
from dipreg.metrics import endpoint_error

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")


def _texture(seed: int = 0, size: tuple[int, int] = (256, 256)) -> np.ndarray:
    """A smooth random texture, values about [0.4, 0.6] (the issue's zero-band example)."""
    return gaussian_filter(np.random.default_rng(seed).random(size), 6)


def robust_cases() -> Iterator[tuple[str, Pair, np.ndarray]]:
    """(name, pair with the true displacement, mask where the endpoint error is measured)."""
    base = sample_pair("default")
    brain = synthetic_pair(base.moving, seed=1, mask=base.moving_mask, max_displacement=6.0, smoothness=24.0)
    region = brain.fixed_mask
    yield "brain clean", brain, region
    hot = brain.fixed.copy()
    hot[100, 100] = 3.0
    yield "brain hot pixel (fixed 3.0)", Pair(brain.moving, hot, displacement=brain.displacement), region
    yield ("brain fixed x 1000 + 50", Pair(brain.moving, brain.fixed * 1000 + 50, displacement=brain.displacement),
           region)
    yield "brain fixed gamma 0.6", Pair(brain.moving, brain.fixed ** 0.6, displacement=brain.displacement), region
    # where the network's prior shows (BENCHMARKS.md, session 18): noise far above these slices' own, large motion
    rng = np.random.default_rng(7)
    yield ("brain noise SD 0.05", Pair(brain.moving + rng.normal(0, 0.05, brain.moving.shape),
                                       brain.fixed + rng.normal(0, 0.05, brain.fixed.shape),
                                       displacement=brain.displacement), region)
    large = synthetic_pair(base.moving, seed=2, mask=base.moving_mask, max_displacement=18.0, smoothness=24.0)
    yield "brain field 18 px", large, large.fixed_mask
    tex = _texture()
    inner = np.zeros(tex.shape, bool)
    inner[8:-8, 8:-8] = True
    shift = np.zeros((2, *tex.shape))
    shift[0], shift[1] = 2.5, -1.25
    yield "texture shift, zero band", Pair(tex, dipreg.warp(tex, shift), displacement=shift), inner
    smooth = synthetic_pair(tex, seed=2, max_displacement=4.0, smoothness=32.0)
    yield "texture smooth field", smooth, inner


def run_method(name: str, pair: Pair, args: Any, device: Any) -> dipreg.RegistrationResult:
    """Register ``pair`` with the method ``name`` (see the module docstring)."""
    if name == "dip":
        return dipreg.register(pair.moving, pair.fixed, config=args.preset, seed=args.seed, device=device,
                               progress=False, **dict(args.overrides))
    if name == "classical":
        from dipreg.methods.classical import register_classical

        return register_classical(pair.moving, pair.fixed, device=device, progress=False)
    if name.startswith("ants-"):
        from dipreg.methods.ants import register_ants

        return register_ants(pair.moving, pair.fixed, type_of_transform=name[5:], seed=args.seed)
    raise SystemExit(f"--methods: unknown method {name!r}; expected dip, classical or ants-<transform>")


def _lgg_pairs(args: Any) -> Iterator[Pair]:
    from dipreg.data import lgg_pairs

    if not args.data:
        raise SystemExit("--suites lgg needs --data (the kaggle_3m folder)")
    yield from lgg_pairs(args.data, limit=args.lgg_pairs)


def cases(suite: str, args: Any) -> Iterator[tuple[str, Pair, np.ndarray | None]]:
    if suite == "robust":
        yield from robust_cases()
    elif suite == "tissue":
        for p in tissue_pairs(args.split):
            yield p.id, p, None
    elif suite == "lgg":
        for p in _lgg_pairs(args):
            yield p.id, p, None
    else:
        raise SystemExit(f"--suites: unknown suite {suite!r}; expected robust, tissue, lgg")


def evaluate(res: dipreg.RegistrationResult, pair: Pair, region: np.ndarray | None) -> dict[str, float]:
    row = res.metrics(moving_labels=pair.moving_labels, fixed_labels=pair.fixed_labels) \
        if pair.moving_labels is not None else res.metrics()
    if pair.displacement is not None:
        row["epe"] = endpoint_error(res.displacement, pair.displacement, region)
        row["epe_before"] = endpoint_error(np.zeros_like(pair.displacement), pair.displacement, region)
    row["seconds"] = res.seconds
    row["iterations"] = res.info.get("iterations", len(res.history))
    row["warning"] = res.info.get("warning")
    return row


_SUMMARY: dict[str, tuple[str, ...]] = {
    "robust": ("epe_before", "epe", "folded_fraction", "seconds"),
    "tissue": ("label_dice_before", "label_dice_after", "std_log_jac", "folded_fraction", "ssim_after", "seconds"),
    "lgg": ("ssim_before", "ssim_after", "std_log_jac", "folded_fraction", "seconds"),
}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--suites", default="robust,tissue", help="robust, tissue, lgg (comma-separated)")
    ap.add_argument("--methods", default="dip", help="dip, classical, ants-SyN, ants-SyNCC, ...")
    ap.add_argument("--preset", default=None, help="DIP preset (default: the device's default)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    type=lambda t: (t.split("=", 1)[0], parse_value(t.split("=", 1)[1])), help="DIP config field")
    ap.add_argument("--split", default="held-out", help="tissue pairs: development, held-out or all")
    ap.add_argument("--data", default=None, help="LGG kaggle_3m folder (suite lgg)")
    ap.add_argument("--lgg-pairs", type=int, default=5, help="first N consecutive LGG pairs (suite lgg)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label", default=None, help="name of this setting in the output (default: the --set list)")
    ap.add_argument("--out", default=None, help="append one JSON line per case to this file")
    ap.add_argument("--verbose", action="store_true", help="print every case")
    args = ap.parse_args()
    if args.threads is None:
        args.threads = 1
    device = setup(args)
    label = args.label or (",".join(f"{k}={v}" for k, v in args.overrides) or "default")
    methods = args.methods.split(",")
    if len(set(methods)) != len(methods):
        raise SystemExit(f"--methods: name each method once, got {args.methods!r}")
    for suite in args.suites.split(","):
        rows: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
        for name, pair, region in cases(suite, args):
            for method in methods:  # interleaved, case by case, so that drift of the machine hits every method
                res = run_method(method, pair, args, device)
                row = {"method": method, "setting": label if method == "dip" else "", "suite": suite,
                       "case": name, **evaluate(res, pair, region)}
                rows[method].append(row)
                if args.verbose:
                    print("   ", method, name, {k: round(row[k], 4) for k in _SUMMARY[suite] if k in row},
                          row["warning"] or "")
                if args.out:
                    with Path(args.out).open("a", encoding="utf-8") as fh:
                        fh.write(json.dumps({**row, "date": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
        for method in methods:
            done = rows[method]
            means = {k: float(np.nanmean([r[k] for r in done])) for k in _SUMMARY[suite] if k in done[0]}
            worst = f", worst epe {max(r['epe'] for r in done):.3f}" if suite == "robust" else ""
            ratio = ""
            if method != methods[0]:
                first = [r["seconds"] for r in rows[methods[0]]]
                per_case = [a / r["seconds"] for a, r in zip(first, done, strict=True)]
                ratio = (f", time of {methods[0]} / this: {np.mean(first) / means['seconds']:.2f} (median per case "
                         f"{np.median(per_case):.2f})")
            print(f"{method:>11} [{label if method == 'dip' else '-'}] {suite} ({len(done)}): "
                  + ", ".join(f"{k} {v:.4f}" for k, v in means.items()) + worst + ratio, flush=True)


if __name__ == "__main__":
    main()
