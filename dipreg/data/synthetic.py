"""Synthetic deformations with a known ground truth.

:func:`random_displacement` draws a smooth, invertible displacement: a random stationary velocity
field (Gaussian-smoothed white noise) is integrated by scaling and squaring, which gives a
diffeomorphism up to discretisation. The result is checked: its Jacobian determinant (of
``x + u(x)``, central differences) must stay above ``min_jacobian`` everywhere, otherwise the field
is scaled down (with a warning) until it does. :func:`synthetic_pair` turns an image into a
:class:`~dipreg.data.Pair` whose ground truth is that displacement.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from scipy import ndimage as ndi

from dipreg.data.pair import Pair
from dipreg.metrics import jacobian_determinant
from dipreg.transform import integrate_velocity, warp
from dipreg.validate import as_displacement, as_image

SeedLike = int | np.integer | np.random.Generator


def _rng(seed: Any) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        if seed < 0:
            raise ValueError(f"seed: expected a non-negative int, got {seed}")
        return np.random.default_rng(int(seed))
    raise TypeError(f"seed: expected an int or a numpy.random.Generator, got {type(seed).__name__}")


def _shape(shape: Any) -> tuple[int, int]:
    try:
        dims = tuple(int(s) for s in shape)
    except TypeError as exc:
        raise TypeError(f"shape: expected (H, W), got {shape!r}") from exc
    if len(dims) != 2 or min(dims) < 4:
        raise ValueError(f"shape: expected (H, W) with both sides >= 4, got {shape!r}")
    return dims  # type: ignore[return-value]


def _exp(v: np.ndarray) -> np.ndarray:
    """Scaling and squaring (:func:`dipreg.transform.integrate_velocity`, in float64): the displacement of
    exp(v), with as many squarings as keep v / 2**n below 0.25 px per step (at least 4)."""
    vmax = float(np.sqrt((v**2).sum(0)).max())
    n = max(4, math.ceil(math.log2(max(vmax, 1e-12) / 0.25)))
    return integrate_velocity(torch.from_numpy(np.ascontiguousarray(v))[None], n)[0].numpy()


def _norm_max(u: np.ndarray) -> float:
    return float(np.sqrt((u**2).sum(0)).max())


def random_displacement(
    shape: tuple[int, int],
    *,
    max_displacement: float = 4.0,
    smoothness: float | None = None,
    seed: SeedLike,
    min_jacobian: float = 0.2,
) -> np.ndarray:
    """A random smooth invertible displacement (2, H, W) in pixels (pull-back convention).

    Args:
        shape: (H, W).
        max_displacement: the largest displacement length ``max_x |u(x)|`` in pixels (reached exactly
            unless it had to be reduced, see ``min_jacobian``). 0 gives the identity.
        smoothness: standard deviation, in pixels, of the Gaussian that smooths the random velocity
            field; larger is smoother. Default ``min(H, W) / 8``.
        seed: int or :class:`numpy.random.Generator`; the same seed gives the same field.
        min_jacobian: lower bound enforced on ``det J`` of ``x + u(x)``. If the requested amplitude
            violates it, the field is scaled down by 10 % steps until it holds and a warning says so.

    Returns:
        float64 array (2, H, W): channel 0 rows, channel 1 columns.
    """
    h, w = _shape(shape)
    if not np.isfinite(max_displacement) or max_displacement < 0:
        raise ValueError(f"max_displacement: expected a finite number >= 0 (pixels), got {max_displacement}")
    sigma = min(h, w) / 8.0 if smoothness is None else float(smoothness)
    if not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"smoothness: expected a Gaussian sigma > 0 in pixels, got {smoothness}")
    if not 0 < min_jacobian < 1:
        raise ValueError(f"min_jacobian: expected a value in (0, 1), got {min_jacobian}")
    rng = _rng(seed)
    noise = rng.standard_normal((2, h, w))
    if max_displacement == 0:
        return np.zeros((2, h, w))
    v = np.stack([ndi.gaussian_filter(noise[k], sigma, mode="reflect") for k in range(2)])
    v *= max_displacement / _norm_max(v)
    # The exponential is not linear in v: adjust the amplitude so that max |u| hits the target.
    u = _exp(v)
    for _ in range(4):
        ratio = max_displacement / _norm_max(u)
        if abs(ratio - 1.0) < 1e-3:
            break
        v *= ratio
        u = _exp(v)
    u *= max_displacement / _norm_max(u)  # exact amplitude; a change below 0.1 %
    target = max_displacement
    while jacobian_determinant(u).min() < min_jacobian:
        v *= 0.9
        u = _exp(v)
        target = _norm_max(u)
    if target < max_displacement * (1 - 1e-6):
        warnings.warn(
            f"random_displacement: max_displacement={max_displacement:g} px with smoothness={sigma:g} px would make "
            f"det J fall below {min_jacobian}; reduced to {target:.3g} px. Use a larger smoothness for larger "
            "displacements.",
            stacklevel=2,
        )
    return u


def synthetic_pair(
    image: Any,
    *,
    seed: SeedLike,
    mask: Any = None,
    labels: Any = None,
    image_id: str = "image",
    displacement: Any = None,
    **kwargs: Any,
) -> Pair:
    """A registration pair with known answer: ``moving = image``, ``fixed = warp(image, u_true)``.

    ``Pair.displacement`` is ``u_true``, so a perfect registration of moving onto fixed returns it:
    ``warp(pair.moving, pair.displacement) == pair.fixed`` (bilinear, zero outside the image).

    Args:
        image: (H, W) image (numpy or torch).
        seed: int or Generator for :func:`random_displacement`.
        mask: optional (H, W) bool mask of ``image``; the fixed mask is the mask warped the same way
            (bilinear, then >= 0.5).
        labels: optional (H, W) int labels of ``image``; warped with nearest neighbour.
        image_id: id of the moving image; the fixed id is ``"{image_id}~warp(seed=...)"``.
        displacement: use this (2, H, W) field instead of drawing one (``seed`` is then only recorded).
        **kwargs: passed to :func:`random_displacement` (``max_displacement``, ``smoothness``,
            ``min_jacobian``).
    """
    moving = as_image(image, "image")
    if displacement is None:
        u = random_displacement(moving.shape, seed=seed, **kwargs)
    else:
        if kwargs:
            raise TypeError(f"synthetic_pair: {sorted(kwargs)} cannot be combined with an explicit displacement")
        u = as_displacement(displacement, "displacement", moving.shape)
    fixed = warp(moving, u, order=1)
    pair = Pair(moving=moving, fixed=fixed, moving_mask=mask, moving_labels=labels, displacement=u,
                moving_id=str(image_id),
                fixed_id=f"{image_id}~warp(seed={seed if not isinstance(seed, np.random.Generator) else 'rng'})")
    if pair.moving_mask is not None:
        pair.fixed_mask = warp(pair.moving_mask.astype(np.float64), u, order=1) >= 0.5
    if pair.moving_labels is not None:
        pair.fixed_labels = np.rint(warp(pair.moving_labels.astype(np.float64), u, order=0)).astype(np.int64)
    det = jacobian_determinant(u)
    pair.meta = {
        "source": "synthetic",
        "seed": seed if not isinstance(seed, np.random.Generator) else "numpy.random.Generator",
        "max_displacement_px": _norm_max(u),
        "smoothness_px": kwargs.get("smoothness", min(moving.shape) / 8.0) if displacement is None else None,
        "min_det_jacobian": float(det.min()),
        "max_det_jacobian": float(det.max()),
        "convention": "warp(moving, displacement) == fixed (pull-back, pixels, [row, col])",
    }
    return pair
