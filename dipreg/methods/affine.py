"""A global affine pre-alignment, the stage that ANTs runs before SyN and the paper's method lacks.

Between two subjects the brains differ in size, position and tilt. A deformable field can absorb that only
through large, uniform volume changes, and a field held at the image border (``boundary="fixed"``) cannot
change the total volume at all. :func:`fit_affine` estimates one affine map first, coarse to fine, with the
same data term as the registration; :func:`affine_displacement` turns it into a pixel displacement and
:func:`compose_affine` puts a deformable field after it, exactly (an affine map composes without resampling).

Units: ``theta`` is (N, 2, 3) in the normalised coordinates of :func:`torch.nn.functional.affine_grid` with
``align_corners=True`` (x = columns, y = rows, -1 and +1 the centres of the first and last pixel), the
identity is ``[[1, 0, 0], [0, 1, 0]]``; displacements are (N, 2, H, W) in pixels, channel 0 rows, channel 1
columns, pull-back (``warped(x) = moving(x + u(x))``).

Book: chapter "Registration with a deep image prior" (``book/07_dip_registration.ipynb``), section
"Affine pre-alignment".
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from dipreg.transform import ALIGN_CORNERS, identity_grid, normalized_to_pixel, warp_tensor

LEVELS: tuple[tuple[int, int], ...] = ((4, 200), (2, 100), (1, 50))
"""(downsampling factor, at most this many Adam steps) per level, coarse to fine."""


def levels_to(finest: int) -> tuple[tuple[int, int], ...]:
    """The levels of :data:`LEVELS` down to the downsampling factor ``finest`` (1 = all, full resolution last)."""
    return tuple(level for level in LEVELS if level[0] >= finest)


def identity_theta(n: int = 1, *, device: torch.device | str | None = None) -> torch.Tensor:
    """The identity affine map, (n, 2, 3) in normalised coordinates."""
    return torch.eye(2, 3, device=device).expand(n, 2, 3).clone()


def affine_displacement(theta: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The pull-back pixel displacement (N, 2, H, W) of the affine maps ``theta`` (N, 2, 3), normalised units,
    on images of ``shape`` (H, W) pixels."""
    grid = F.affine_grid(theta, [theta.shape[0], 1, *shape], align_corners=ALIGN_CORNERS)  # (N, H, W, 2), [x, y]
    return normalized_to_pixel(grid, shape).movedim(0, 1) - identity_grid(shape, device=theta.device,
                                                                           dtype=theta.dtype)


def linear_part(theta: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The linear part of ``theta`` (N, 2, 3) in pixel coordinates, (N, 2, 2) ordered (row, column)."""
    h, w = shape
    ry, rx = max(h - 1, 1), max(w - 1, 1)
    return torch.stack((torch.stack((theta[:, 1, 1], theta[:, 1, 0] * ry / rx), -1),
                        torch.stack((theta[:, 0, 1] * rx / ry, theta[:, 0, 0]), -1)), 1)


def compose_affine(a: torch.Tensor, linear: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The displacement of the affine map first, then the field ``v``: ``u(x) = v(x) + a(x + v(x))``.

    ``a``: the affine displacement (N, 2, H, W), pixels; ``linear``: its linear part (N, 2, 2) in pixel
    coordinates (:func:`linear_part`); ``v``: (N, 2, H, W), pixels. Exact: an affine ``a`` gives
    ``a(x + v) = a(x) + (linear - I) v``, so no resampling of ``a`` is needed.
    """
    return a + torch.einsum("nij,njhw->nihw", linear, v)


def _downsample(image: torch.Tensor, factor: int) -> torch.Tensor:
    return image if factor == 1 else F.avg_pool2d(image, factor, ceil_mode=True)


AREA_WARNING = 2.0
"""An affine map that changes area by more than this factor, or less than its inverse, gets a warning
(:func:`area_warning`): past it the stored LGG runs show the affine stage following a mismatch of background or
contrast rather than anatomy about as often as a real difference in size (BENCHMARKS.md, session 9)."""


def area_change(theta: torch.Tensor, shape: tuple[int, int]) -> float:
    """The factor by which the affine map ``theta`` (1, 2, 3), normalised units, changes area on images of
    ``shape`` (H, W): the determinant of its linear part in pixels, i.e. its det J. With the pull-back
    convention a factor above 1 shrinks the moving image's content in the result."""
    return float(torch.linalg.det(linear_part(theta, shape)[0].double()))


def area_warning(theta: torch.Tensor, shape: tuple[int, int]) -> str | None:
    """``None``, or a warning when :func:`area_change` is outside [1 / AREA_WARNING, AREA_WARNING]."""
    factor = area_change(theta, shape)
    if 1 / AREA_WARNING <= factor <= AREA_WARNING:
        return None
    return (f"the affine pre-alignment changed the area by a factor of {factor:.2f} (det J of the affine map). "
            "Between subjects whose slices differ much in size that can be right; between images of one subject, "
            "or when one image has a background the other lacks (grey rather than black, padding), the affine "
            "stage has followed the intensities, not the anatomy: compare the images; between two contrasts use "
            "loss='lncc', for a grey background intensity_background='border', or run without the stage "
            "(prealign='none')")


def fit_affine(moving: torch.Tensor, fixed: torch.Tensor,
               loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *,
               levels: tuple[tuple[int, int], ...] = LEVELS, lr: float = 1e-2, patience: int = 20,
               min_delta: float = 1e-5) -> torch.Tensor:
    """The affine map (1, 2, 3), normalised units, that minimises ``loss_fn(warped moving, fixed)``.

    ``moving``, ``fixed``: (1, 1, H, W) images as the optimiser sees them (e.g. in [0, 1]). Coarse to fine
    over ``levels`` (factor, steps), each level averaging ``factor`` x ``factor`` pixel blocks; Adam at ``lr``
    on the six entries of ``theta`` (translation in half-image units, the linear part unitless); a level ends
    early when its loss has not improved by ``min_delta`` for ``patience`` steps. The map of the level with
    the lowest full-resolution loss is returned, and the identity if no level beats it.
    """
    theta = identity_theta(1, device=moving.device).to(moving.dtype).requires_grad_(True)
    with torch.no_grad():
        best_loss, best = float(loss_fn(moving, fixed)), identity_theta(1, device=moving.device).to(moving.dtype)
    opt = torch.optim.Adam([theta], lr=lr)
    for factor, steps in levels:
        m, f = _downsample(moving, factor), _downsample(fixed, factor)
        level_best, since = float("inf"), 0
        for _ in range(steps):
            loss = loss_fn(warp_tensor(m, affine_displacement(theta, m.shape[-2:])), f)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            value = float(loss.detach())
            if value < level_best - min_delta:
                level_best, since = value, 0
            elif (since := since + 1) >= patience:
                break
        with torch.no_grad():
            full = float(loss_fn(warp_tensor(moving, affine_displacement(theta, moving.shape[-2:])), fixed))
            if full < best_loss:
                best_loss, best = full, theta.detach().clone()
    return best
