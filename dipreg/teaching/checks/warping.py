"""Checks for chapter "Warping images" (``book/03_warping.ipynb``).

Each ``check_*`` calls the student's function on fresh random input, compares it with dipreg's
reference (:mod:`dipreg.transform`) and, when they disagree, names the mistake: besides the generic
diagnoses of :func:`dipreg.teaching.checks.compare` (sign, swapped channels, (x, y) order, transposition,
scale), each check recomputes the answer that the typical wrong versions of *this* exercise would
give (the ``align_corners=False`` formula, a push-forward instead of a pull-back, a displacement left
in pixels inside ``grid_sample``, ...) and says which one the student's output matches.

The helper :func:`~dipreg.teaching.checks.cases.run_with_alternatives` is shared with the other chapters'
check modules.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from dipreg.losses import mae, mse
from dipreg.teaching.checks.cases import Alternative, random_shape, run_with_alternatives
from dipreg.transform import ALIGN_CORNERS, identity_grid, pixel_to_normalized, sampling_grid, warp_tensor

__all__ = [
    "check_bilinear_sample",
    "check_pixel_to_normalized",
    "check_ssd_gradient",
    "check_warp",
    "run_with_alternatives",
]

# --------------------------------------------------------------------------------------------------
# Exercise: bilinear interpolation by hand


def _bilinear_reference(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``image`` at (rows, cols), computed with grid_sample (align_corners=True)."""
    img = torch.from_numpy(image)[None, None]
    pts = torch.from_numpy(np.stack([rows, cols]))[:, None, :]  # (2, 1, K)
    grid = pixel_to_normalized(pts, image.shape)[None]  # (1, 1, K, 2)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=ALIGN_CORNERS)[0, 0, 0].numpy()


def _bilinear_swapped_weights(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    fr, fc = rows - r0, cols - c0
    return (fr * fc * image[r0, c0] + fr * (1 - fc) * image[r0, c0 + 1]
            + (1 - fr) * fc * image[r0 + 1, c0] + (1 - fr) * (1 - fc) * image[r0 + 1, c0 + 1])


def check_bilinear_sample(fn: Callable, trials: int = 3, seed: int | None = None) -> bool:
    """Check ``fn(image, rows, cols) -> values``: bilinear interpolation of a (H, W) numpy image at K points.

    ``rows`` and ``cols`` are float arrays of shape (K,) with ``0 <= rows < H - 1`` and
    ``0 <= cols < W - 1``; the result has shape (K,).
    """
    def case(rng: np.random.Generator) -> dict:
        h, w = random_shape(rng)
        image = rng.random((h, w))
        k = int(rng.integers(20, 60))
        rows = rng.uniform(0, h - 1, k) * (1 - 1e-9)
        cols = rng.uniform(0, w - 1, k) * (1 - 1e-9)
        alts = [
            ("you rounded to the nearest pixel (nearest-neighbour interpolation); bilinear interpolation mixes the "
             "four surrounding pixels with weights (1 - fr)(1 - fc), (1 - fr) fc, fr (1 - fc) and fr fc",
             image[np.round(rows).astype(int), np.round(cols).astype(int)]),
            ("you took the pixel at floor(row), floor(col) without interpolating",
             image[np.floor(rows).astype(int), np.floor(cols).astype(int)]),
            ("the weights are swapped: the pixel at floor(r) gets weight 1 - fr (it is the *nearer* one when fr is "
             "small), not fr", _bilinear_swapped_weights(image, rows, cols)),
        ]
        if rows.max() < w - 1 and cols.max() < h - 1:
            alts.append(("rows and columns are swapped: index the image as image[row, col]",
                         _bilinear_reference(image.T.copy(), rows, cols)))
        return {"args": (image.copy(), rows.copy(), cols.copy()), "expected": _bilinear_reference(image, rows, cols),
                "alternatives": alts}

    return run_with_alternatives(fn, case, "bilinear_sample", trials=trials, seed=seed, atol=1e-8, rtol=1e-6)


# --------------------------------------------------------------------------------------------------
# Exercise: pixel coordinates to grid_sample's normalised coordinates


def _xy(a: torch.Tensor) -> torch.Tensor:
    return a.flip(-1)


def check_pixel_to_normalized(fn: Callable, trials: int = 3, seed: int | None = None) -> bool:
    """Check ``fn(points, shape) -> grid``: pixel positions (2, ...) [row, col] to normalised (..., 2) [x, y].

    The convention is dipreg's ``align_corners=True``: pixel 0 -> -1 and pixel n - 1 -> +1 along each
    axis (:func:`dipreg.transform.pixel_to_normalized`).
    """
    def case(rng: np.random.Generator) -> dict:
        h, w = random_shape(rng)
        extra = tuple(int(s) for s in rng.integers(2, 7, size=int(rng.integers(1, 3))))
        pts = torch.from_numpy(np.stack([rng.uniform(-2, h + 1, extra), rng.uniform(-2, w + 1, extra)]))
        r, c = pts[0], pts[1]
        expected = pixel_to_normalized(pts, (h, w))

        def both_orders(hint: str, rows: torch.Tensor, cols: torch.Tensor) -> list[Alternative]:
            xy = torch.stack((cols, rows), -1)
            return [(hint, xy), (hint + "; also, the last axis must be ordered (x, y) = (column, row)", _xy(xy))]

        alts: list[Alternative] = []
        alts += both_orders(
            "this is the align_corners=False convention, (2 p + 1) / n - 1, which puts -1 and +1 on the outer "
            "*edges* of the border pixels: sampled with align_corners=True, points land up to half a pixel off "
            "(none at the centre, half a pixel at the borders). dipreg uses align_corners=True: "
            "p -> 2 p / (n - 1) - 1, so that -1 and +1 are the centres of the first and last pixel",
            (2 * r + 1) / h - 1, (2 * c + 1) / w - 1)
        alts += both_orders("you divided by n; with align_corners=True the last pixel n - 1 must map to +1, so "
                            "divide by n - 1: p -> 2 p / (n - 1) - 1", 2 * r / h - 1, 2 * c / w - 1)
        alts += both_orders("the '- 1' is missing: pixel 0 must map to -1, not 0", 2 * r / (h - 1), 2 * c / (w - 1))
        alts += both_orders("the factor 2 is missing: [-1, 1] is two units long, so p -> 2 p / (n - 1) - 1",
                            r / (h - 1) - 1, c / (w - 1) - 1)
        alts += both_orders("each axis is divided by the other axis's length: rows by H - 1, columns by W - 1",
                            2 * r / (w - 1) - 1, 2 * c / (h - 1) - 1)
        return {"args": (pts.clone(), (h, w)), "expected": expected, "alternatives": alts}

    fixes = [("the coordinate axis must be last, (..., 2), as grid_sample expects", lambda a: np.moveaxis(a, 0, -1))]
    return run_with_alternatives(fn, case, "pixel_to_normalized", trials=trials, seed=seed, fixes=fixes)


# --------------------------------------------------------------------------------------------------
# Exercise: the spatial transformer


def _random_displacement(rng: np.random.Generator, n: int, h: int, w: int, amp: float) -> torch.Tensor:
    """A smooth-ish random displacement (n, 2, h, w) in pixels: coarse noise upsampled bilinearly."""
    coarse = torch.from_numpy(rng.normal(0, amp, (n, 2, 4, 4)))
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True) \
        + torch.from_numpy(rng.normal(0, amp / 4, (n, 2, h, w)))


def check_warp(fn: Callable, trials: int = 3, seed: int | None = None) -> bool:
    """Check ``fn(image, u) -> warped``: the pull-back warp of (N, C, H, W) by a (N, 2, H, W) pixel displacement.

    Expected: :func:`dipreg.transform.warp_tensor` (bilinear, zeros outside, align_corners=True).
    """
    def case(rng: np.random.Generator) -> dict:
        h, w = random_shape(rng, 8, 20)
        n, c = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        image = torch.from_numpy(rng.random((n, c, h, w)))
        u = _random_displacement(rng, n, h, w, 2.5)
        grid = sampling_grid(u)

        def gs(g: torch.Tensor, align: bool = ALIGN_CORNERS) -> torch.Tensor:
            return F.grid_sample(image, g, mode="bilinear", padding_mode="zeros", align_corners=align)

        base = pixel_to_normalized(identity_grid((h, w), dtype=u.dtype), (h, w))[None]
        alts = [
            ("you warped with -u: dipreg's warp is a pull-back, warped(x) = moving(x + u(x)), so add u to the "
             "identity grid", warp_tensor(image, -u)),
            ("channels 0 and 1 of u are swapped: channel 0 is the row (downward) displacement, channel 1 the column "
             "displacement", warp_tensor(image, u.flip(1))),
            ("the grid's last axis is ordered (row, col); grid_sample reads it as (x, y) = (column, row)",
             gs(grid.flip(-1))),
            ("align_corners mismatch: the grid was normalised with the align_corners=True formula "
             "2 p / (n - 1) - 1 but grid_sample was called with align_corners=False (the default); pass "
             "align_corners=True", gs(grid, align=False)),
            ("the displacement was added in pixels to the normalised grid: convert it first, d pixels are "
             "2 d / (n - 1) normalised units", gs(base + u.flip(1).permute(0, 2, 3, 1))),
            ("the displacement was subtracted and is in pixels inside the normalised grid",
             gs(base - u.flip(1).permute(0, 2, 3, 1))),
            ("you used mode='nearest'; the spatial transformer interpolates bilinearly (mode='bilinear')",
             F.grid_sample(image, grid, mode="nearest", padding_mode="zeros", align_corners=ALIGN_CORNERS)),
            ("you used padding_mode='border'; dipreg fills the outside with zeros (padding_mode='zeros')",
             F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=ALIGN_CORNERS)),
        ]
        return {"args": (image.clone(), u.clone()), "expected": warp_tensor(image, u), "alternatives": alts}

    return run_with_alternatives(fn, case, "warp", trials=trials, seed=seed, atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# Exercise: the gradient of the data term with respect to the displacement


def _data_gradient(loss: Callable, moving: torch.Tensor, fixed: torch.Tensor, u: torch.Tensor,
                   reduce_sum: bool = False) -> torch.Tensor:
    v = u.detach().clone()[None].requires_grad_(True)
    diff_loss = loss(warp_tensor(moving[None, None], v), fixed[None, None])
    if reduce_sum:
        diff_loss = diff_loss * moving.numel()
    diff_loss.backward()
    return v.grad[0]


def check_ssd_gradient(fn: Callable, trials: int = 3, seed: int | None = None) -> bool:
    """Check ``fn(moving, fixed, u) -> grad``: d/du of mean((warp(moving, u) - fixed)**2).

    ``moving`` and ``fixed`` are (H, W) float64 tensors, ``u`` a (2, H, W) float64 tensor in pixels; the
    result is the gradient, shape (2, H, W).
    """
    def case(rng: np.random.Generator) -> dict:
        h, w = random_shape(rng, 8, 20)
        from scipy import ndimage

        moving = torch.from_numpy(ndimage.gaussian_filter(rng.random((h, w)), 1.0))
        fixed = torch.from_numpy(ndimage.gaussian_filter(rng.random((h, w)), 1.0))
        u = _random_displacement(rng, 1, h, w, 1.5)[0]
        ref = _data_gradient(mse, moving, fixed, u)
        alts = [
            ("this is the gradient of the *sum* of squared differences; the data term is the mean, so divide by the "
             "number of pixels", _data_gradient(mse, moving, fixed, u, reduce_sum=True)),
            ("this is the gradient of the mean absolute error; the exercise asks for the mean *squared* error",
             _data_gradient(mae, moving, fixed, u)),
            ("the gradient has the wrong sign: return d loss / d u (the direction of steepest *ascent*); the "
             "optimiser subtracts it", -ref),
            ("the gradient is taken with respect to u with its channels swapped: warp with u exactly as given "
             "(channel 0 rows, channel 1 columns)", _data_gradient(mse, moving, fixed, u.flip(0)).flip(0)),
        ]
        return {"args": (moving.clone(), fixed.clone(), u.clone()), "expected": ref, "alternatives": alts}

    fixes = [("drop the batch axis: return a (2, H, W) gradient", lambda a: a[0])]
    return run_with_alternatives(fn, case, "ssd_gradient", trials=trials, seed=seed, atol=1e-9, rtol=1e-5,
                                 fixes=fixes)
