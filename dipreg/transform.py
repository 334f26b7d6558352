"""The spatial transformer: sampling grids, coordinate conversions, warping and composition.

Book: chapter "Warping images" (``book/03_warping.ipynb``) builds every function here step by step.

Conventions (see the package docstring): a displacement ``u`` is (2, H, W) in **pixels**, channel 0
along rows and channel 1 along columns, and ``warped(x) = moving(x + u(x))`` (pull-back).
PyTorch's :func:`torch.nn.functional.grid_sample` wants the sampling positions in *normalised*
coordinates in [-1, 1], ordered (x, y) = (column, row), last axis. We use ``align_corners=True``:
-1 and +1 are the *centres* of the first and last pixel, so pixel index ``p`` along an axis of
length ``n`` maps to ``2 p / (n - 1) - 1`` and a displacement of ``d`` pixels is ``2 d / (n - 1)``
normalised units. The reason for the choice: the corner pixel centres sit at -1 and +1 at every
resolution, so resizing a field (:func:`resize_displacement`, the coarse control grids) keeps its
corners and scales its pixel units by ``(n_new - 1) / (n - 1)``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dipreg.validate import ArrayLike, as_displacement, as_image

ALIGN_CORNERS = True
"""The ``align_corners`` value used with every ``grid_sample`` call in dipreg."""


def identity_grid(shape: tuple[int, int], *, device: str | torch.device | None = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Pixel coordinates of every pixel centre, shape (2, H, W): ``grid[0]`` rows, ``grid[1]`` columns.

    ``shape`` is (H, W) in pixels; the result is in pixels, on ``device`` (``None``: the CPU), of ``dtype``.
    """
    h, w = shape
    rows = torch.arange(h, device=device, dtype=dtype)
    cols = torch.arange(w, device=device, dtype=dtype)
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"))


def pixel_to_normalized(points: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Convert pixel positions (2, ...) [row, col] to normalised positions (..., 2) [x, y] for grid_sample.

    Uses ``align_corners=True``: pixel 0 -> -1, pixel n-1 -> +1.
    """
    h, w = shape
    rows = 2.0 * points[0] / max(h - 1, 1) - 1.0
    cols = 2.0 * points[1] / max(w - 1, 1) - 1.0
    return torch.stack((cols, rows), dim=-1)


def normalized_to_pixel(grid: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`pixel_to_normalized`: (..., 2) [x, y] in [-1, 1] to (2, ...) [row, col] in pixels."""
    h, w = shape
    rows = (grid[..., 1] + 1.0) * (h - 1) / 2.0
    cols = (grid[..., 0] + 1.0) * (w - 1) / 2.0
    return torch.stack((rows, cols))


def displacement_to_normalized(u: torch.Tensor) -> torch.Tensor:
    """Scale a displacement (N, 2, H, W) in pixels to normalised units (N, H, W, 2) ordered [x, y]."""
    h, w = u.shape[-2:]
    scale = u.new_tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)])
    return u.flip(1).permute(0, 2, 3, 1) * scale


def sampling_grid(u: torch.Tensor) -> torch.Tensor:
    """The grid_sample grid (N, H, W, 2) for a pixel displacement ``u`` of shape (N, 2, H, W).

    Equal to ``pixel_to_normalized(identity_grid + u)`` up to float rounding, written with as few
    operators as possible (it runs 8 times per step of the presets: the warp and 7 compositions).
    """
    h, w = u.shape[-2:]
    cols = torch.linspace(-1.0, 1.0, w, device=u.device, dtype=u.dtype)
    rows = torch.linspace(-1.0, 1.0, h, device=u.device, dtype=u.dtype)
    x = cols.view(1, 1, w) + u[:, 1] * (2.0 / max(w - 1, 1))
    y = rows.view(1, h, 1) + u[:, 0] * (2.0 / max(h - 1, 1))
    return torch.stack((x, y), dim=-1)


def warp_tensor(image: torch.Tensor, u: torch.Tensor, *, mode: str = "bilinear",
                padding_mode: str = "zeros") -> torch.Tensor:
    """Differentiable pull-back warp: ``out[n, c, x] = image[n, c, x + u[n, :, x]]``.

    Args:
        image: (N, C, H, W) tensor.
        u: (N, 2, H, W) displacement in pixels, channel 0 rows, channel 1 columns.
        mode: ``"bilinear"`` or ``"nearest"`` (for label maps).
        padding_mode: value outside the image, as in ``grid_sample`` (``"zeros"`` or ``"border"``).
    """
    if image.ndim != 4 or u.ndim != 4 or u.shape[1] != 2:
        raise ValueError(f"warp_tensor: expected image (N, C, H, W) and u (N, 2, H, W), got {tuple(image.shape)} "
                         f"and {tuple(u.shape)}")
    if image.shape[-2:] != u.shape[-2:] or image.shape[0] != u.shape[0]:
        raise ValueError(f"warp_tensor: image {tuple(image.shape)} and u {tuple(u.shape)} disagree in N, H or W")
    return F.grid_sample(image, sampling_grid(u), mode=mode, padding_mode=padding_mode, align_corners=ALIGN_CORNERS)


def compose(u_first: torch.Tensor, u_second: torch.Tensor) -> torch.Tensor:
    """Displacement of warping by ``u_first`` and then by ``u_second``.

    ``warp(warp(I, u_first), u_second) == warp(I, compose(u_first, u_second))`` up to interpolation:
    the point x samples ``x + u_second(x)`` of the first result, i.e.
    ``u(x) = u_second(x) + u_first(x + u_second(x))``. Shapes (N, 2, H, W), pixels.
    """
    return u_second + warp_tensor(u_first, u_second, padding_mode="border")


def integrate_velocity(v: torch.Tensor, steps: int = 7, *, refine: int = 0,
                       refine_shape: tuple[int, int] | None = None) -> torch.Tensor:
    """Scaling and squaring: the displacement of exp(v) for a stationary velocity ``v`` (N, 2, H, W), pixels.

    ``u = v / 2**steps`` is composed with itself ``steps`` times. The result is a diffeomorphism up to
    discretisation, so det J stays positive for smooth ``v``.

    ``refine`` > 0: the last ``refine`` of the ``steps`` compositions run on the finer grid ``refine_shape``
    (h, w) pixels, ``u`` resampled there by :func:`resize_displacement`; the result then has that shape, in its
    pixels. Composing creates detail finer than the velocity's grid, which a coarse grid blurs.
    """
    if not 0 <= refine <= steps:
        raise ValueError(f"integrate_velocity: expected 0 <= refine <= steps, got refine={refine}, steps={steps}")
    if refine and (refine_shape is None or len(refine_shape) != 2
                   or any(f < n for f, n in zip(refine_shape, v.shape[-2:], strict=True))):
        raise ValueError(f"integrate_velocity: refine > 0 needs refine_shape, a grid (h, w) at least as fine as v's "
                         f"{tuple(v.shape[-2:])}, got {refine_shape}")
    u = v / (2.0 ** steps)
    for i in range(steps):
        if refine and i == steps - refine and tuple(u.shape[-2:]) != tuple(refine_shape):
            u = resize_displacement(u, refine_shape)
        u = compose(u, u)
    return u


def resize_displacement(u: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resample a pixel displacement (N, 2, h, w) to (N, 2, H, W), rescaling the pixel units.

    The corner pixel centres of both grids coincide (``align_corners=True``), so a displacement of
    ``d`` pixels on the small grid becomes ``d * (H - 1) / (h - 1)`` pixels on the large one.
    """
    h, w = u.shape[-2:]
    big = F.interpolate(u, size=shape, mode="bilinear", align_corners=ALIGN_CORNERS)
    scale = u.new_tensor([(shape[0] - 1) / max(h - 1, 1), (shape[1] - 1) / max(w - 1, 1)]).view(1, 2, 1, 1)
    return big * scale


def warp(image: ArrayLike, displacement: ArrayLike, *, order: int = 1) -> np.ndarray:
    """Warp a (H, W) image by a (2, H, W) pixel displacement: ``out(x) = image(x + u(x))``.

    numpy in (torch tensors are accepted and copied to the CPU), numpy out: ``image`` is (H, W) in any
    intensity units (the output has the same units), ``displacement`` (2, H, W) in pixels, channel 0 rows,
    channel 1 columns. ``order`` 1 is bilinear, 0 nearest (for masks and labels). Outside the image
    the value is 0, as ``skimage.transform.warp(..., mode="constant")``.
    """
    img = as_image(image, "image", allow_constant=True)
    u = as_displacement(displacement, "displacement", img.shape)
    if order not in (0, 1):
        raise ValueError(f"order: expected 0 (nearest) or 1 (bilinear), got {order}")
    t = torch.from_numpy(img)[None, None]
    out = warp_tensor(t, torch.from_numpy(u)[None], mode="bilinear" if order == 1 else "nearest")
    return out[0, 0].numpy()
