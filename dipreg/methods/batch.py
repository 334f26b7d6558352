"""Register many pairs at once: B independent deep-image-prior fields trained in one batched loop.

:func:`register_many` builds one :class:`dipreg.methods.dip.DIPField` per pair exactly as
:func:`dipreg.register` does (same seed, same initial weights, same noise draws), stacks their parameters
with :func:`torch.func.stack_module_state` and evaluates all B networks in one call with
:func:`torch.func.functional_call` under :func:`torch.vmap` (:class:`dipreg.methods.engine.BatchField`); the loop is
:func:`dipreg.methods.engine.run`, with one member per pair. Each network still sees a batch of one noise
image, so BatchNorm (training mode, as in ``register``) normalises with that pair's own statistics: the
batch-size-1 semantics of every pair are preserved. On a GPU the B small networks become grouped
convolutions, which keeps the device busy where one 64 x 64 control grid alone cannot.

The losses of the pairs are summed before ``backward``; the pairs share no parameter, so each one gets
exactly its own gradient, and Adam (or SGD) is elementwise, so the stacked optimiser takes the same step
for every pair as B separate optimisers would.

Agreement with ``register`` run pair by pair: the same starting point, not the same float32 path. The
batched (grouped) convolutions sum in another order, and Adam turns rounding-level gradients into
full-size steps (conv biases that feed a BatchNorm have an exact gradient of zero, so Adam steps along
pure rounding noise), so the two runs drift apart like any float32 reordering of this optimisation.
How far apart, for the presets and after how many steps, and the final SSIM of full runs either way:
``BENCHMARKS.md`` ("``register_many`` against ``register``, pair by pair").

The results are equally good registrations, not the same fields; compare quality metrics, not fields.
``tests/test_batch.py`` checks small networks (< 1e-4 px after one step, < 5 % of |u| after five).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from dipreg.config import RegistrationConfig
from dipreg.data.pair import Pair, as_pairs
from dipreg.losses import get_loss
from dipreg.methods.affine import area_change, area_warning, fit_affine, levels_to
from dipreg.methods.dip import (
    DetailField,
    make_field,
    make_optimizer,
    member_terms,
    optimiser_images,
    resolve_config,
    resolve_device,
)
from dipreg.methods.engine import BatchField, Noise, Stage, checked, run
from dipreg.result import RegistrationResult
from dipreg.transform import warp
from dipreg.validate import ArrayLike, as_image, check_seed, same_shape

__all__ = ["register_many"]


def _as_arrays(pairs: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """Validate ``pairs`` (:func:`dipreg.data.pair.as_pairs`) into (moving, fixed) float64 arrays of one shape."""
    out: list[tuple[np.ndarray, np.ndarray]] = []
    lazy = isinstance(pairs, Iterable) and not isinstance(pairs, (list, tuple, Pair, np.ndarray, torch.Tensor))
    for i, p in enumerate(as_pairs(list(pairs) if lazy else pairs, single=False)):
        mov, fix = as_image(p.moving, f"pairs[{i}].moving"), as_image(p.fixed, f"pairs[{i}].fixed")
        same_shape(mov, fix, f"pairs[{i}].moving", f"pairs[{i}].fixed")
        if out and mov.shape != out[0][0].shape:
            raise ValueError(f"pairs[{i}] has shape {mov.shape} but pairs[0] has shape {out[0][0].shape}; "
                             "register_many needs all pairs the same shape (resize them, e.g. "
                             "Pair.resized(...), or call it once per shape)")
        out.append((mov, fix))
    return out


def _seeds(seed: int | Sequence[int] | None, n: int) -> list[int]:
    if seed is None or (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)):
        first = check_seed(seed)
        return [check_seed(first + i, f"seed + {i} (pair {i})") for i in range(n)]
    if isinstance(seed, Sequence) and not isinstance(seed, str):
        seeds = list(seed)
        if len(seeds) != n:
            raise ValueError(f"seed: expected an int or a list of {n} ints (one per pair), got {len(seeds)} seeds")
        return [check_seed(s, f"seed[{i}]") for i, s in enumerate(seeds)]
    raise TypeError(f"seed: expected an int, a list of ints or None, got {type(seed).__name__}")


def register_many(pairs: Iterable[Pair | tuple[ArrayLike, ArrayLike]], *,
                  config: RegistrationConfig | str | None = None,
                  seed: int | Sequence[int] | None = 0, device: str | torch.device | None = None,
                  progress: bool = True, **overrides: Any) -> list[RegistrationResult]:
    """Register many same-shape pairs at once, each as ``dipreg.register`` would alone.

    Args:
        pairs: a list of :class:`dipreg.data.Pair` or of ``(moving, fixed)`` tuples (numpy arrays or
            tensors), all of one shape (H, W), each pair's images in the same intensity units.
        config, device, progress, **overrides: as in :func:`dipreg.register`.
        seed: an int ``s`` (pair ``i`` gets seed ``s + i``; ``None`` means 0) or a list of one int per pair.
            Pair ``i`` starts exactly as ``dipreg.register(moving_i, fixed_i, config=..., seed=seed_i)`` (same
            weights, same noise draws); the float32 paths then drift apart as they do between thread
            counts, to equally good results (the module docstring; figures in ``BENCHMARKS.md``).

    Returns:
        One :class:`RegistrationResult` per pair, in order. ``seconds`` is the batch's wall time divided by
        the number of pairs (the amortised cost); ``info["batch_seconds"]`` is the whole batch's wall time,
        ``info["batch_size"]`` the number of pairs and ``info["seed"]`` the pair's seed.

    Raises:
        TypeError, ValueError: bad pairs (empty list, mismatched shapes, bad images), config or seeds.
        RegistrationError: a pair's loss became NaN (the message names the pair).

    Early stopping (``patience > 0``) is per pair, as in ``register``: a pair that has converged is frozen
    (left out of the loss, its weights kept) while the others go on; ``info["stopped"]`` says which.
    Each result carries ``register``'s quality check (``info["warning"]`` and a RegistrationWarning when a
    pair ends less alike than it started). There is no ``callback``.
    """
    data = _as_arrays(pairs)
    n = len(data)
    seeds = _seeds(seed, n)
    dev = resolve_device(device)
    cfg = resolve_config(config, dev, overrides)
    start = time.perf_counter()
    shape = data[0][0].shape

    seen = [optimiser_images(m, f, cfg, dev) for m, f in data]
    m_t = torch.stack([m for m, _ in seen])[:, None]  # (B, 1, H, W)
    f_t = torch.stack([f for _, f in seen])[:, None]
    gens = [torch.Generator(device=dev).manual_seed(s) for s in seeds]
    models = [make_field(cfg, shape, s, dev) for s in seeds]
    loss_fn = get_loss(cfg.loss)
    thetas = [fit_affine(m_t[i:i + 1], f_t[i:i + 1], loss_fn, levels=levels_to(cfg.prealign_finest))
              if cfg.prealign == "affine" else None for i in range(n)]
    for m, theta in zip(models, thetas, strict=True):
        if theta is not None:
            m.set_prealign(theta)
    field = BatchField(models)
    noise = Noise(lambda: torch.stack([models[0].noise(g, dev) for g in gens]), cfg.noise == "fixed",
                  cfg.readout_draws)

    terms = member_terms(lambda: field(noise()), m_t, f_t, loss_fn, cfg)  # per pair, exactly as register computes it

    def nonfinite(it: int, i: int, value: float) -> str:
        return (f"pairs[{i}] (seed {seeds[i]}): the loss became {value} at iteration {it}; lower the learning "
                f"rate (now {cfg.lr}) or check the images")

    opt = make_optimizer(list(field.stacked), cfg, dev)
    fit = run([Stage(terms, opt, cfg.iterations)], members=n, total=cfg.iterations, patience=cfg.patience,
              min_delta=cfg.min_delta, nonfinite=nonfinite, progress=progress,
              desc=f"dipreg batch x{n} [{cfg.preset}, {dev.type}]",
              keep_best=noise.fixed is not None and cfg.readout == "best")

    u = noise.readout(field, None if any(b is None for b in fit.best) else torch.cat(fit.best))
    histories, readout_steps = [list(h) for h in fit.histories], list(fit.best_step)
    net_steps = [len(h) for h in histories]
    if cfg.detail_steps:  # as register: one free velocity per pair, all pairs in one loop
        detail = DetailField(cfg, shape, models[0].refine_grid, u)
        dfit = run([Stage(member_terms(detail, m_t, f_t, loss_fn, cfg),
                          make_optimizer([detail.velocity], cfg, dev, lr=cfg.detail_lr), cfg.detail_steps)],
                   members=n, total=cfg.detail_steps, progress=progress, keep_best=True,
                   nonfinite=lambda it, i, value: (f"pairs[{i}] (seed {seeds[i]}): the loss became {value} at step "
                                                   f"{it} of the detail stage; lower detail_lr (now {cfg.detail_lr})"),
                   desc=f"dipreg batch x{n} detail [{cfg.preset}, {dev.type}]")
        u = torch.cat(dfit.best)
        for i in range(n):
            histories[i] += dfit.histories[i]
            readout_steps[i] = net_steps[i] + dfit.best_step[i]
    batch_seconds = time.perf_counter() - start
    results = []
    for i, (mov, fix) in enumerate(data):
        disp, check = checked(m_t[i:i + 1], f_t[i:i + 1], u[i:i + 1], loss_fn, histories[i],
                              label=f"pairs[{i}]: ",
                              extra=None if thetas[i] is None else area_warning(thetas[i], shape))
        results.append(RegistrationResult(
            warped=warp(mov, disp), displacement=disp, history=histories[i], config=cfg,
            seconds=batch_seconds / n, moving=mov, fixed=fix, method="dip", device=str(dev),
            info={"preset": cfg.preset, "overridden": cfg.overridden(), "iterations": net_steps[i],
                  "detail_steps": len(histories[i]) - net_steps[i], "stopped": fit.reason(i),
                  "readout_step": readout_steps[i], "seed": seeds[i], "batch_size": n,
                  "batch_index": i, "batch_seconds": batch_seconds, **check,
                  **({} if thetas[i] is None else {"affine": thetas[i][0].tolist(),
                                                          "affine_area": area_change(thetas[i], shape)})}))
    return results
