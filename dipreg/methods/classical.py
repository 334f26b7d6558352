"""The classical baseline of paper eq. 1: optimise the displacement field itself, with a smoothness penalty.

Book: chapter "Classical registration" (``book/04_classical.ipynb``).

``argmin_u  L(fixed, warp(moving, u)) + weight * R(u)``: the unknowns are the 2 x H x W numbers of
the displacement ``u`` (pixels, channel 0 rows, channel 1 columns), optimised by Adam from ``u = 0``.
With ``weight = 0`` the problem is ill-posed and the field folds; :data:`REGULARIZERS` holds the two
classic hand-made priors, the diffusion (first-derivative) and bending (second-derivative) energies.
Coarse-to-fine optimisation (``levels``) lets the field move by more than the few pixels the image
gradient can see at full resolution. The field is a :class:`dipreg.methods.engine.ParameterField` per level,
optimised by :func:`dipreg.methods.engine.run` (one stage per level), the loop every method shares.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from numbers import Real
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dipreg.intensity import MATCHES, check_background, check_clip, prepare_pair
from dipreg.losses import get_loss
from dipreg.methods.dip import Step, resolve_device
from dipreg.methods.engine import ParameterField, Stage, Terms, checked, mean_loss, run
from dipreg.result import RegistrationResult
from dipreg.transform import ALIGN_CORNERS, resize_displacement, warp, warp_tensor
from dipreg.validate import ArrayLike, as_image, check_seed, same_shape


def _check_field(u: torch.Tensor, name: str) -> None:
    if not isinstance(u, torch.Tensor) or u.ndim != 4 or u.shape[1] != 2:
        got = tuple(u.shape) if isinstance(u, torch.Tensor) else type(u).__name__
        raise ValueError(f"{name}: expected a displacement tensor of shape (N, 2, H, W), got {got}")


def diffusion(u: torch.Tensor) -> torch.Tensor:
    """Diffusion energy: the mean over pixels of the squared Frobenius norm of the Jacobian of ``u``.

    Forward differences along rows and columns, summed over both channels:
    ``mean(sum_c (u_c[r+1, c] - u_c[r, c])**2) + mean(sum_c (u_c[r, c+1] - u_c[r, c])**2)``.
    ``u`` is (N, 2, H, W) in pixels; the energy is dimensionless (pixel / pixel)^2. A constant field
    gives 0, a linear field ``u(x) = A x`` gives ``||A||_F**2``.
    """
    _check_field(u, "diffusion")
    d_rows = u[:, :, 1:, :] - u[:, :, :-1, :]
    d_cols = u[:, :, :, 1:] - u[:, :, :, :-1]
    return d_rows.pow(2).sum(1).mean() + d_cols.pow(2).sum(1).mean()


def bending(u: torch.Tensor) -> torch.Tensor:
    """Bending energy: the mean over pixels of ``sum_c u_c,rr**2 + 2 u_c,rc**2 + u_c,cc**2``.

    Central second differences along rows and columns, a forward mixed difference for ``u_rc``.
    ``u`` is (N, 2, H, W) in pixels; the energy is in 1 / pixel^2. Zero for every affine field
    ``u(x) = A x + b``; ``u_0(x) = row**2 / 2`` gives 1. Needs H, W >= 3.
    """
    _check_field(u, "bending")
    if min(u.shape[-2:]) < 3:
        raise ValueError(f"bending: needs a field at least 3 x 3 pixels, got {tuple(u.shape[-2:])}")
    u_rr = u[:, :, 2:, :] - 2 * u[:, :, 1:-1, :] + u[:, :, :-2, :]
    u_cc = u[:, :, :, 2:] - 2 * u[:, :, :, 1:-1] + u[:, :, :, :-2]
    u_rc = u[:, :, 1:, 1:] - u[:, :, 1:, :-1] - u[:, :, :-1, 1:] + u[:, :, :-1, :-1]
    return u_rr.pow(2).sum(1).mean() + 2 * u_rc.pow(2).sum(1).mean() + u_cc.pow(2).sum(1).mean()


REGULARIZERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"diffusion": diffusion, "bending": bending}
"""The smoothness priors R(u) of eq. 1 by name."""

_ORDER = {"diffusion": 1, "bending": 2}



@dataclass(frozen=True)
class ClassicalSettings:
    """The settings of :func:`register_classical`, its keyword arguments other than the images, ``seed``,
    ``device``, ``progress`` and ``callback`` (see its docstring for units and why these defaults).

    The ``config`` of the method's :class:`~dipreg.result.RegistrationResult` (``iterations`` then holds the
    steps of every level); ``register_classical(m, f, **settings.to_dict())`` runs them. Values are kept as
    given, so that a setting records exactly what was asked for.
    """

    regularizer: str = "diffusion"
    weight: float = 0.3
    loss: str = "mae"
    lr: float = 0.1
    iterations: int | Sequence[int] = 150
    levels: int = 5
    intensity_clip: float = 0.005
    intensity_match: str = "linear"
    intensity_background: str = "darkest"

    def to_dict(self) -> dict[str, Any]:
        """The settings as keyword arguments of :func:`register_classical` (JSON-ready)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def replace(self, **changes: Any) -> ClassicalSettings:
        """A copy with ``changes``."""
        return replace(self, **changes)


DEFAULTS = ClassicalSettings().to_dict()
"""Default settings of :func:`register_classical`, as a dict (:class:`ClassicalSettings`)."""


def _pyramid_shape(shape: tuple[int, int], factor: int) -> tuple[int, int]:
    return max(2, math.ceil(shape[0] / factor)), max(2, math.ceil(shape[1] / factor))


def _downsample(image: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Anti-aliased bilinear resampling whose corner pixel centres coincide with the input's (align_corners)."""
    if tuple(image.shape[-2:]) == tuple(shape):
        return image
    return F.interpolate(image, size=shape, mode="bilinear", align_corners=ALIGN_CORNERS, antialias=True)


def _iterations_per_level(iterations: int | Sequence[int], levels: int) -> list[int]:
    if isinstance(iterations, (int, np.integer)) and not isinstance(iterations, bool):
        its = [int(iterations)] * levels
    elif isinstance(iterations, Sequence) and not isinstance(iterations, str):
        its = [int(i) for i in iterations]
        if len(its) != levels:
            raise ValueError(f"iterations: expected one count per level ({levels}), got {len(its)}: {list(iterations)}")
    else:
        raise TypeError(f"iterations: expected an int or one int per level, got {type(iterations).__name__}")
    if any(i < 0 for i in its) or its[-1] < 1:
        raise ValueError(f"iterations: expected counts >= 0 with at least 1 at full resolution, got {its}")
    return its


def register_classical(moving: ArrayLike, fixed: ArrayLike, *, regularizer: str = DEFAULTS["regularizer"],
                       weight: float = DEFAULTS["weight"], loss: str = DEFAULTS["loss"], lr: float = DEFAULTS["lr"],
                       iterations: int | Sequence[int] = DEFAULTS["iterations"], levels: int = DEFAULTS["levels"],
                       intensity_clip: float = DEFAULTS["intensity_clip"],
                       intensity_match: str = DEFAULTS["intensity_match"],
                       intensity_background: str = DEFAULTS["intensity_background"], seed: int | None = None,
                       device: str | torch.device | None = None, progress: bool = True,
                       callback: Callable[[Step], bool | None] | None = None) -> RegistrationResult:
    """Register ``moving`` onto ``fixed`` by optimising the displacement directly (paper eq. 1).

    Minimises ``loss(warp(moving, u), fixed) + weight * R(u)`` over the field ``u`` with Adam, starting
    at ``u = 0``, coarse to fine: level ``k`` (0-based) of ``levels`` works on images downsampled by
    ``2 ** (levels - 1 - k)`` (anti-aliased), and its field, resized with
    :func:`dipreg.transform.resize_displacement`, starts the next level. ``levels=1`` is a plain
    single-resolution run. Both images are mapped to [0, 1] for the optimisation only
    (:func:`dipreg.intensity.prepare_pair`).

    Args:
        moving, fixed: (H, W) images, numpy arrays or torch tensors, same shape, in the same intensity units
            (any; min-max rescaled to [0, 1] for the optimisation).
        regularizer: ``"diffusion"`` or ``"bending"`` (:data:`REGULARIZERS`). Each level evaluates R in
            full-resolution units (bending is divided by the squared downsampling factor), so one
            ``weight`` means the same prior at every level.
        weight: lambda of eq. 1, >= 0 (0 = data term only, which folds); for diffusion it weighs a
            dimensionless energy against the MAE of [0, 1] intensities. Default 0.3: the smallest weight that
            did not fold on the book's LGG pairs, with a margin (the measurements behind every default here:
            ``BENCHMARKS.md``, "Moved from docstrings").
        loss: data term, ``"mae"`` (the paper's), ``"mse"`` or ``"lncc"``.
        lr: Adam learning rate, about the largest step of a displacement component per iteration, in
            pixels of the current level. Default 0.1.
        iterations: Adam steps per level (an int for all levels, or one count per level, coarse first).
            Default 150, i.e. 750 steps at 5 levels.
        intensity_clip: fraction of each image's foreground intensities winsorised at each end before the
            rescaling (:func:`dipreg.intensity.rescale`; 0 = min-max). Default 0.005, as ANTs' scripts.
        intensity_match: ``"none"``, ``"linear"`` (default: the moving image brought to the fixed image's
            intensity scale and offset) or ``"histogram"``; see :func:`dipreg.intensity.prepare_pair`.
        intensity_background: ``"darkest"`` (default) or ``"border"``: what the intensity statistics leave out
            as background (:func:`dipreg.intensity.foreground`).
        levels: number of pyramid levels, coarse to fine by factors of 2. Default 5 (16 x 16 at the
            coarsest for 256 x 256); fewer levels register less of a large motion. The coarsest level must keep
            at least 4 x 4 pixels.
        seed: accepted for a uniform call shape; the method has no randomness (recorded in ``info``).
        device: ``"cpu"``, ``"cuda"``, ... or ``None`` for CUDA when available.
        progress: show a progress bar.
        callback: called after every step with a :class:`dipreg.methods.dip.Step` whose displacement and
            warped image are at full resolution (coarse fields resized); returning ``True`` stops the run.

    Returns:
        A :class:`RegistrationResult` with ``method="classical"``, ``displacement`` (2, H, W) in pixels,
        ``warped = dipreg.warp(moving, displacement)``, ``history`` the objective (data + weight * R) per
        step over all levels, ``config`` the :class:`ClassicalSettings` run (``iterations`` per level), ``info``
        with ``seed``, ``weight``,
        ``regularizer``, ``iterations`` (steps run), ``level_shapes``, ``level_starts`` (index into
        ``history`` where each level begins), ``data_history``, ``reg_history``, ``stopped``.

    Raises:
        TypeError, ValueError: bad images or settings. RegistrationError: the objective became NaN or inf.
    """
    mov = as_image(moving, "moving")
    fix = as_image(fixed, "fixed")
    same_shape(mov, fix, "moving", "fixed")
    if seed is not None:
        seed = check_seed(seed)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a function called with a Step after every step (or None), got "
                        f"{callback!r}")
    if regularizer not in REGULARIZERS:
        raise ValueError(f"regularizer: expected one of {sorted(REGULARIZERS)}, got {regularizer!r}")
    loss_fn = get_loss(loss)
    if isinstance(weight, bool) or not isinstance(weight, Real) or not math.isfinite(weight) or weight < 0:
        raise ValueError(f"weight: expected a finite number >= 0, got {weight!r}")
    if isinstance(lr, bool) or not isinstance(lr, Real) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr: expected a finite number > 0, got {lr!r}")
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
        raise ValueError(f"levels: expected an int >= 1, got {levels!r}")
    levels = int(levels)
    intensity_clip = check_clip(intensity_clip, "intensity_clip")
    if intensity_match not in MATCHES:
        raise ValueError(f"intensity_match: expected one of {list(MATCHES)}, got {intensity_match!r}")
    check_background(intensity_background, "intensity_background")
    its = _iterations_per_level(iterations, levels)
    shape = mov.shape
    factors = [2 ** (levels - 1 - k) for k in range(levels)]
    shapes = [_pyramid_shape(shape, f) for f in factors]
    if min(shapes[0]) < 4:
        fits = max((n for n in range(1, levels) if min(_pyramid_shape(shape, 2 ** (n - 1))) >= 4), default=1)
        raise ValueError(f"levels: {levels} levels shrink the {shape} image to {shapes[0]} at the coarsest; "
                         f"use levels={fits} or fewer for this size")
    dev = resolve_device(device)
    reg_fn = REGULARIZERS[regularizer]
    config = ClassicalSettings(regularizer=regularizer, weight=float(weight), loss=loss, lr=float(lr), iterations=its,
                               levels=levels, intensity_clip=intensity_clip, intensity_match=intensity_match,
                               intensity_background=intensity_background)
    start = time.perf_counter()

    m_full, f_full = (torch.as_tensor(x, dtype=torch.float32, device=dev)[None, None]
                      for x in prepare_pair(mov, fix, intensity_clip, intensity_match, intensity_background))
    data_hist: list[float] = []
    reg_hist: list[float] = []
    level_starts: list[int] = []
    fields: list[ParameterField] = []  # one per level begun

    def stages() -> Iterator[Stage]:
        """One stage per level, coarse to fine, each starting from the field the previous one reached."""
        for lvl_shape, n_steps in zip(shapes, its, strict=True):
            level_starts.append(sum(its[:len(fields)]))  # steps of the levels before
            m_t, f_t = _downsample(m_full, lvl_shape), _downsample(f_full, lvl_shape)
            if not fields:
                init = torch.zeros((1, 2, *lvl_shape), device=dev)
            else:
                init = resize_displacement(fields[-1].u.detach(), lvl_shape)
            field = ParameterField(init)
            fields.append(field)
            # R in full-resolution units: a derivative of order k scales by spacing ** (1 - k).
            spacing = (shape[0] - 1) / max(lvl_shape[0] - 1, 1)
            reg_scale = spacing ** (2 - 2 * _ORDER[regularizer])

            def terms(it: int, field: ParameterField = field, m_t: torch.Tensor = m_t, f_t: torch.Tensor = f_t,
                      reg_scale: float = reg_scale) -> Terms:
                u = field()
                warped_t = warp_tensor(m_t, u)
                data = loss_fn(warped_t, f_t)
                reg = reg_fn(u) * reg_scale
                return Terms([data + weight * reg], u, warped_t, {"data": data, "reg": reg})

            yield Stage(terms, torch.optim.Adam(field.parameters(), lr=lr), n_steps)

    def step(it: int, t: Terms, values: list[float]) -> bool | None:
        data_hist.append(float(t.parts["data"].detach()))
        reg_hist.append(float(t.parts["reg"].detach()))
        if callback is None:
            return None
        with torch.no_grad():
            u = t.output.detach()
            u_full = u if tuple(u.shape[-2:]) == shape else resize_displacement(u, shape)
            w_full = warp_tensor(m_full, u_full)
        return callback(Step(it, values[0], u_full, w_full))

    def nonfinite(it: int, _: int, value: float) -> str:
        return (f"the objective became {value} at step {it} (level {len(fields)} of {levels}); lower the learning "
                f"rate (now {lr}) or the weight (now {weight})")

    fit = run(stages(), total=sum(its), callback=step, nonfinite=nonfinite, progress=progress,
              desc=f"dipreg classical [{regularizer}, {dev.type}]",
              postfix=lambda values: {"level": len(fields), **mean_loss(values)})
    history = fit.histories[0]

    with torch.no_grad():
        u_last = fields[-1].u.detach()
        u_final = u_last if tuple(u_last.shape[-2:]) == shape else resize_displacement(u_last, shape)
    disp, check = checked(m_full, f_full, u_final, loss_fn, history)
    info = {"weight": float(weight), "regularizer": regularizer, "iterations": len(history), "levels": levels,
            "level_shapes": shapes, "level_starts": level_starts, "data_history": data_hist,
            "reg_history": reg_hist, "stopped": fit.stopped, "seed": seed, **check}
    return RegistrationResult(warped=warp(mov, disp), displacement=disp, history=history, config=config,
                              seconds=time.perf_counter() - start, moving=mov, fixed=fix, method="classical",
                              device=str(dev), info=info)
