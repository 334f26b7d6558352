"""Overhead of ``dipreg.register``'s loop over a minimal hand-written PyTorch loop of the same network.

Both build the same :class:`dipreg.methods.dip.DIPField` (same config, seed, pair, iterations); the hand loop
is the paper's loop on it (a fresh draw each step, the data term and fold barrier, the mean over
``readout_draws`` draws at the end), without ``register``'s affine stage, intensity matching, volume term, fixed
input and lowest-loss readout, so for the ``cpu`` preset the printed field difference is not a check and the
hand loop does a little less work. It has no per-step ``float(loss)`` (no device sync), no NaN check, no history,
no early-stopping bookkeeping, no progress bar and no callback. ``register`` runs with ``progress=False``.
The two are timed alternately, ``--repeats`` times each, and the medians are compared (target: <= 5 %).

    python benchmarks/bench_overhead.py                      # cpu preset, 256 x 256, 40 iterations
    python benchmarks/bench_overhead.py --preset paper --size 128 --iterations 10
    python benchmarks/bench_overhead.py --device cuda --preset gpu
    python benchmarks/bench_overhead.py --quick
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from _common import parser, setup

import dipreg
from dipreg.data import sample_pair
from dipreg.intensity import rescale
from dipreg.losses import fold_penalty, get_loss
from dipreg.methods.dip import DIPField
from dipreg.presets import get_preset
from dipreg.transform import warp, warp_tensor


def hand_loop(moving: np.ndarray, fixed: np.ndarray, cfg, seed: int, dev: torch.device) -> np.ndarray:
    """The same optimisation as ``register``, written as plainly as PyTorch allows. Returns the field."""
    m_t = torch.as_tensor(rescale(moving, cfg.intensity_clip), dtype=torch.float32, device=dev)[None, None]
    f_t = torch.as_tensor(rescale(fixed, cfg.intensity_clip), dtype=torch.float32, device=dev)[None, None]
    gen = torch.Generator(device=dev).manual_seed(seed)
    model = DIPField(cfg, moving.shape, torch.Generator().manual_seed(seed)).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)
    loss_fn = get_loss(cfg.loss)
    for _ in range(cfg.iterations):
        u = model(model.noise(gen, dev))
        loss = loss_fn(warp_tensor(m_t, u), f_t)
        if cfg.fold_penalty:
            loss = loss + cfg.fold_penalty * fold_penalty(u)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        u = sum(model(model.noise(gen, dev)) for _ in range(cfg.readout_draws)) / cfg.readout_draws
    disp = u[0].double().cpu().numpy()
    warp(moving, disp)  # register also returns the warped image
    return disp


def main(argv: list[str] | None = None) -> dict:
    ap = parser(__doc__)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    dev = setup(args)
    overrides: dict = {"iterations": args.iterations, "patience": 0}
    if args.quick:
        args.size, args.repeats = 32, 2
        overrides.update(iterations=3, down=(8, 8), up=(8, 8), in_channels=8, grid_scale=2)
    cfg = get_preset(args.preset).replace(**overrides)
    pair = sample_pair(size=args.size)

    def run_register():
        return dipreg.register(pair.moving, pair.fixed, config=cfg, seed=0, device=dev, progress=False).displacement

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    # warm-up, and a check that both loops compute the same thing
    same = np.abs(run_register() - hand_loop(pair.moving, pair.fixed, cfg, 0, dev)).max()
    t_reg, t_hand = [], []
    for _ in range(args.repeats):
        for fn, store in ((run_register, t_reg), (lambda: hand_loop(pair.moving, pair.fixed, cfg, 0, dev), t_hand)):
            sync()
            t = time.perf_counter()
            fn()
            sync()
            store.append(time.perf_counter() - t)
    reg, hand = statistics.median(t_reg), statistics.median(t_hand)
    overhead = reg / hand - 1
    print(f"device {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}; preset {cfg.preset}, "
          f"{args.size} x {args.size}, {cfg.iterations} iterations, {args.repeats} alternating repeats; "
          f"max |u_register - u_hand| = {same:.2e} px\n")
    print("| loop | median s | ms / iteration | all runs (s) |")
    print("|---|---|---|---|")
    for name, ts in (("dipreg.methods.dip", t_reg), ("hand-written", t_hand)):
        med = statistics.median(ts)
        print(f"| {name} | {med:.3f} | {1e3 * med / cfg.iterations:.1f} | {', '.join(f'{t:.2f}' for t in ts)} |")
    verdict = "within" if overhead <= 0.05 else "ABOVE"
    print(f"\noverhead of register: {100 * overhead:+.1f} % ({verdict} the 5 % target)")
    return {"register": reg, "hand": hand, "overhead": overhead, "max_diff": float(same)}


if __name__ == "__main__":
    main()
