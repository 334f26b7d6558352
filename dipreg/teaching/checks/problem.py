"""Checks for chapter "The registration problem" (``book/02_problem.ipynb``).

``check_lncc`` compares a student's local normalised cross-correlation loss with
:func:`dipreg.losses.lncc`; ``check_jacobian_determinant`` compares a student's det J_phi with
:func:`dipreg.metrics.jacobian_determinant`. Both name the typical mistakes (a missing identity, the
wrong finite differences, a loss that is higher-is-better, ...).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from dipreg.losses import lncc
from dipreg.metrics import jacobian_determinant
from dipreg.teaching.checks.cases import random_shape, run_with_alternatives

__all__ = ["check_jacobian_determinant", "check_lncc"]


# --------------------------------------------------------------------------------------------------
# Exercise: local normalised cross-correlation


def _local_stats(a: torch.Tensor, b: torch.Tensor, window: int):
    kernel = torch.ones(1, 1, window, window, dtype=a.dtype) / window**2

    def box(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, padding=window // 2)

    ma, mb = box(a), box(b)
    return box(a * a) - ma**2, box(b * b) - mb**2, box(a * b) - ma * mb


def _ncc_map(a: torch.Tensor, b: torch.Tensor, window: int, eps: float = 1e-5) -> torch.Tensor:
    va, vb, cov = _local_stats(a, b, window)
    return cov / torch.sqrt(va.clamp_min(0) * vb.clamp_min(0) + eps)


def check_lncc(fn: Callable, trials: int = 3, seed: int | None = None) -> bool:
    """Check ``fn(warped, fixed, window) -> loss``: 1 - mean of the squared local NCC, as :func:`dipreg.losses.lncc`.

    ``warped`` and ``fixed`` are (1, 1, H, W) float64 tensors and ``window`` an odd box size; local
    means are box filters with zero padding (``F.conv2d(..., padding=window // 2)``) and the squared
    correlation is ``cov**2 / (var_w * var_f + 1e-5)``. The result is a scalar (0-d tensor or float).
    """
    def case(rng: np.random.Generator) -> dict:
        h, w = random_shape(rng, 16, 32)
        window = int(rng.choice([3, 5, 7, 9]))
        f = torch.from_numpy(ndimage.gaussian_filter(rng.random((h, w)), 1.0))[None, None]
        wp = 0.6 * f + 0.4 * torch.from_numpy(ndimage.gaussian_filter(rng.random((h, w)), 1.0))[None, None]
        wp, f = wp * 4 + 1, f * 2  # not in [0, 1]: global scale and offset must not matter much
        ref = lncc(wp, f, window=window)
        ncc = _ncc_map(wp, f, window)
        alts = [
            ("this is the mean squared local correlation itself, which is *higher* for better alignment; a loss must "
             "be lower-is-better: return 1 - mean(NCC**2)", 1.0 - ref),
            ("the local correlation is not squared: dipreg's LNCC uses 1 - mean(cov**2 / (var_w var_f + eps)) "
             "so that inverted contrast also counts as a match", 1.0 - ncc.mean()),
            ("this is a *global* correlation over the whole image; LNCC computes means, variances and covariance "
             "in a sliding window (a box filter, F.conv2d with a ones / window**2 kernel)",
             1.0 - torch.corrcoef(torch.stack([wp.flatten(), f.flatten()]))[0, 1] ** 2),
        ]
        return {"args": (wp.clone(), f.clone(), window), "expected": ref, "alternatives": alts}

    return run_with_alternatives(fn, case, "lncc", trials=trials, seed=seed, atol=1e-4, rtol=1e-3)


# --------------------------------------------------------------------------------------------------
# Exercise: the Jacobian determinant of phi(x) = x + u(x)


def _smooth_displacement(rng: np.random.Generator, h: int, w: int, amp: float) -> np.ndarray:
    u = rng.normal(0, amp, (2, h, w))
    return np.stack([ndimage.gaussian_filter(c, 1.5) for c in u]) * 4.0


def _det(a00, a01, a10, a11) -> np.ndarray:
    return a00 * a11 - a01 * a10


def check_jacobian_determinant(fn: Callable, trials: int = 3, seed: int | None = None) -> bool:
    """Check ``fn(u) -> det``: det J_phi of phi(x) = x + u(x) for a (2, H, W) numpy displacement in pixels.

    Expected: :func:`dipreg.metrics.jacobian_determinant` (central differences, ``np.gradient``,
    one-sided at the borders); the result has shape (H, W).
    """
    def case(rng: np.random.Generator) -> dict:
        h, w = random_shape(rng, 10, 30)
        u = _smooth_displacement(rng, h, w, 1.5)
        (u0r, u0c), (u1r, u1c) = np.gradient(u[0]), np.gradient(u[1])

        def fwd(a: np.ndarray, axis: int) -> np.ndarray:
            return np.diff(a, axis=axis, append=np.take(a, [-1], axis=axis))

        f0r, f0c, f1r, f1c = fwd(u[0], 0), fwd(u[0], 1), fwd(u[1], 0), fwd(u[1], 1)
        alts = [
            ("this is det of the Jacobian of u alone; phi(x) = x + u(x), so J_phi = I + grad u: add 1 to the two "
             "diagonal entries", _det(u0r, u0c, u1r, u1c)),
            ("rows and columns are mixed up: either the derivatives are taken along the wrong axes or channels 0 "
             "and 1 of u are swapped (both give the same determinant). Axis 0 of the array is rows, axis 1 columns, "
             "and u[0] is the row displacement, so d u_0 / d row is np.gradient(u[0], axis=0)",
             _det(1 + u0c, u0r, u1c, 1 + u1r)),
            ("you used forward differences (np.diff); dipreg uses central differences, np.gradient, which is "
             "second-order accurate and centred on the pixel", _det(1 + f0r, f0c, f1r, 1 + f1c)),
            ("the sign of the off-diagonal product is wrong: det [[a, b], [c, d]] = a d - b c",
             (1 + u0r) * (1 + u1c) + u0c * u1r),
            ("this is the determinant of x - u(x) (the displacement with the wrong sign)", jacobian_determinant(-u)),
        ]
        return {"args": (u.copy(),), "expected": jacobian_determinant(u), "alternatives": alts}

    return run_with_alternatives(fn, case, "jacobian_determinant", trials=trials, seed=seed, atol=1e-8, rtol=1e-6)
