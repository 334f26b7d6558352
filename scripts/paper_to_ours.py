"""Run the ladder from the ``paper`` preset to the default, and its controls, on labelled brain pairs (book chapter
10).

Usage (from the repository root)::

    python scripts/paper_to_ours.py [--out dipreg/data/book/paper_steps] [--split held-out] [--steps NAME,...]
                                    [--device cuda] [--rerun-changed]

Runs :func:`dipreg.experiments.steps.run_steps` on :func:`dipreg.data.tissue_pairs` of ``--split`` (the held-out
pairs by default: they chose none of the default's settings), on the CPU with one torch thread: the rungs of
:data:`~dipreg.experiments.steps.STEPS`, then the :data:`~dipreg.experiments.steps.CONTROLS`. Resumable: run
the same command again and only the missing (rung, pair) rows run. ``--steps`` runs only the named ones, in the
order given (e.g. the cheap rungs first, ``paper`` last: it takes 20-60 min per pair on a CPU). ``--rerun-changed``
runs again the rungs whose configuration changed since they ran (after a change of the default).
"""

from __future__ import annotations

import argparse
import time

import torch

from dipreg.data import tissue_pairs
from dipreg.experiments.steps import CONTROLS, STEPS, run_steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="dipreg/data/book/paper_steps")
    ap.add_argument("--split", default="held-out", help="tissue pairs: development, held-out or all")
    ap.add_argument("--target", default="cpu", help="the preset at the top of the ladder")
    ap.add_argument("--steps", default=None,
                    help=f"comma-separated rungs and controls (default all: {[s[0] for s in STEPS + CONTROLS]})")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, ...")
    ap.add_argument("--rerun-changed", action="store_true",
                    help="run again the rungs whose configuration changed since their rows ran (a preset changed)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    steps = [s.strip() for s in args.steps.split(",")] if args.steps else None
    t0 = time.perf_counter()
    path = run_steps(tissue_pairs(args.split), args.out, target=args.target, steps=steps, seed=0, device=args.device,
                     rerun_changed=args.rerun_changed)
    print(f"wrote {path} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
