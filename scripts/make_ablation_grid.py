"""Precompute the ablation grid of book chapter 10 on the embedded sample pair.

Usage (from the repository root)::

    python scripts/make_ablation_grid.py [--out dipreg/data/book/ablation_sample.npz] [--iterations N]

Runs :func:`dipreg.experiments.ablation.run_grid` with the ``cpu`` preset on ``sample_pair(size=128)``, one axis
at a time (:data:`dipreg.experiments.ablation.ABLATION_AXES`), on the CPU with one torch thread so that the run
is reproducible in time and does not starve a shared machine. Re-running resumes an interrupted file.
"""

from __future__ import annotations

import argparse
import time

import torch

from dipreg.data import sample_pair
from dipreg.experiments.ablation import ABLATION_AXES, run_grid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="dipreg/data/book/ablation_sample.npz")
    ap.add_argument("--iterations", type=int, default=None, help="steps of every run (default: the preset's own)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    pair = sample_pair(size=args.size)
    axes = dict(ABLATION_AXES)
    t0 = time.perf_counter()
    path = run_grid(pair, args.out, base="cpu", axes=axes, iterations=args.iterations, seed=0, device="cpu")
    print(f"wrote {path} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
