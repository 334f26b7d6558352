"""Evaluation metrics: image similarity and the regularity of a displacement field.

Book: chapter "Evaluating a registration" (``book/08_evaluation.ipynb``).

Every function takes numpy arrays in the package conventions: images (H, W) of intensities (any unit;
"intensity units" below means the unit of the images), displacements (2, H, W) in pixels (channel 0 rows,
channel 1 columns) describing phi(x) = x + u(x). Masks are (H, W) boolean arrays, or numeric arrays holding
only 0 and 1, of the image shape.

Masks that select pixels to average over (``ssim``, ``folded_fraction``, ``std_log_jacobian``,
``endpoint_error``, ``noise_sd``) must select at least one pixel: an empty selection raises a ValueError, as an average
over no pixel is undefined. :func:`dice` is different: there the masks are the data, and two empty masks
give NaN.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np
from scipy import ndimage

from dipreg.transform import warp
from dipreg.validate import ArrayLike, as_displacement, as_image, as_labels, as_mask, same_shape


def _positive_real(value: Any, name: str, what: str) -> float:
    """``value`` as a finite float > 0, or a TypeError/ValueError naming ``name``."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, Real):
        raise TypeError(f"{name}: expected a positive number ({what}), got {value!r} ({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name}: expected a finite number > 0 ({what}), got {value!r}")
    return v


def ssim(a: ArrayLike, b: ArrayLike, *, data_range: float = 1.0, win_size: int = 7, gaussian: bool = False,
         mask: ArrayLike | None = None, k1: float = 0.01, k2: float = 0.03) -> float:
    """Structural similarity (Wang et al. 2004) of two (H, W) images; dimensionless, at most 1.

    Matches ``skimage.metrics.structural_similarity(a, b, data_range=data_range, win_size=win_size)``
    (sample covariance, a uniform window; with ``gaussian`` it matches ``gaussian_weights=True, sigma=1.5``
    and the window is 11 x 11 whatever ``win_size`` says),
    averaged over the pixels at least ``win_size // 2`` from the border, as scikit-image does. With
    ``mask`` the local SSIM map (scikit-image's ``full=True`` map) is averaged over the masked pixels inside
    that border instead. dipreg's reported SSIM uses the defaults on intensities in [0, 1], on the whole image.

    Args:
        a, b: (H, W) images, in the same intensity units.
        data_range: the dynamic range of the intensities, in intensity units (1.0 for images in [0, 1], 255
            for 8-bit images); a finite number > 0. It sets the stabilising constants
            ``C1 = (k1 * data_range)**2`` and ``C2 = (k2 * data_range)**2``, so the value depends on it.
            :func:`summarize` picks it from the images.
        win_size: side of the square uniform window in pixels; an odd integer, 3 <= win_size <= min(H, W).
            Only its type is checked with ``gaussian``.
        gaussian: use scikit-image's Gaussian window (sigma 1.5 pixels, 11 x 11 pixels; the images must be
            at least 11 x 11).
        mask: optional (H, W) boolean (or 0/1) mask; it must select a pixel inside the border.
        k1, k2: the dimensionless constants of Wang et al. (fractions of ``data_range``); finite, > 0.

    Raises:
        TypeError, ValueError: naming the argument that is wrong.
    """
    x = as_image(a, "a", allow_constant=True)
    y = as_image(b, "b", allow_constant=True)
    same_shape(x, y, "a", "b")
    data_range = _positive_real(data_range, "data_range", "the intensity range, in intensity units")
    k1 = _positive_real(k1, "k1", "dimensionless, default 0.01")
    k2 = _positive_real(k2, "k2", "dimensionless, default 0.03")
    if isinstance(win_size, bool | np.bool_) or not isinstance(win_size, Integral):
        raise TypeError(f"win_size: expected an odd integer number of pixels, got {win_size!r} "
                        f"({type(win_size).__name__})")
    if not isinstance(gaussian, bool | np.bool_):
        raise TypeError(f"gaussian: expected True or False, got {gaussian!r} ({type(gaussian).__name__})")
    win_size = int(win_size)
    if gaussian:  # sigma 1.5 truncated at 3.5 sigma: an 11 x 11 window, as scikit-image
        win_size = 11
        if win_size > min(x.shape):
            raise ValueError(f"gaussian: the 11 x 11 Gaussian window needs images at least 11 x 11 pixels, got "
                             f"shape {x.shape}; use gaussian=False with a smaller win_size")

        def filt(v: np.ndarray) -> np.ndarray:
            return ndimage.gaussian_filter(v, sigma=1.5, truncate=3.5)
    else:
        if win_size % 2 != 1 or win_size < 3 or win_size > min(x.shape):
            raise ValueError(f"win_size: expected an odd number between 3 and {min(x.shape)}, got {win_size}")

        def filt(v: np.ndarray) -> np.ndarray:
            return ndimage.uniform_filter(v, size=win_size)
    inner = np.zeros(x.shape, dtype=bool)
    pad = (win_size - 1) // 2
    inner[pad:x.shape[0] - pad, pad:x.shape[1] - pad] = True
    if mask is not None:
        inner &= as_mask(mask, "mask", x.shape)
        if not inner.any():
            raise ValueError(f"mask: no masked pixel lies inside the SSIM border ({pad} pixels wide)")
    # Rescale by a power of two near the largest magnitude: exact in floating point (so the same value to the
    # last bit for ordinary images), and SSIM is invariant to a common scale of a, b and data_range; without
    # it, intensities around 1e154 overflow x * x.
    exponent = np.frexp(max(float(np.abs(x).max()), float(np.abs(y).max()), data_range))[1]
    x, y, data_range = np.ldexp(x, -exponent), np.ldexp(y, -exponent), float(np.ldexp(data_range, -exponent))
    cov_norm = win_size**2 / (win_size**2 - 1.0)
    ux, uy = filt(x), filt(y)
    vx = cov_norm * (filt(x * x) - ux * ux)
    vy = cov_norm * (filt(y * y) - uy * uy)
    vxy = cov_norm * (filt(x * y) - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return float(s[inner].mean())


def _selection(mask: ArrayLike | None, shape: tuple[int, ...], name: str = "mask") -> np.ndarray | None:
    """The boolean mask of an average over pixels, or None for all pixels; an empty mask is refused."""
    if mask is None:
        return None
    m = as_mask(mask, name, shape)
    if not m.any():
        raise ValueError(f"{name}: the mask is empty (no pixel selected); there is nothing to average over")
    return m


def jacobian(displacement: ArrayLike) -> np.ndarray:
    """The Jacobian of phi(x) = x + u(x), shape (2, 2, H, W), by central differences (one-sided at borders).

    ``J[i, j] = d phi_i / d x_j`` with axis 0 rows and axis 1 columns; dimensionless (pixels per pixel).
    ``displacement`` is (2, H, W) in pixels with H, W >= 2.
    """
    u = as_displacement(displacement)  # refuses H or W < 2: no differences to take
    jac = np.empty((2, 2) + u.shape[1:])
    for i in range(2):
        grads = np.gradient(u[i])
        for j in range(2):
            jac[i, j] = grads[j] + (1.0 if i == j else 0.0)
    return jac


def jacobian_determinant(displacement: ArrayLike) -> np.ndarray:
    """det J_phi at every pixel, shape (H, W), dimensionless (local area ratio).

    ``displacement`` is (2, H, W) in pixels, H, W >= 2. Values <= 0 mark folding (phi is not invertible there).
    """
    j = jacobian(displacement)
    return j[0, 0] * j[1, 1] - j[0, 1] * j[1, 0]


def folded_fraction(displacement: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Fraction (in [0, 1], not a percentage) of pixels (within ``mask``, if given) where det J_phi <= 0.

    ``displacement`` is (2, H, W) in pixels; ``mask`` an (H, W) boolean mask that selects at least one pixel
    (an empty mask raises a ValueError).
    """
    det = jacobian_determinant(displacement)
    sel = _selection(mask, det.shape)
    return float(np.mean((det if sel is None else det[sel]) <= 0))


def std_log_jacobian(displacement: ArrayLike, mask: ArrayLike | None = None, clip: float = 1e-9) -> float:
    """Standard deviation of log det J_phi over the pixels (within ``mask``, if given); dimensionless.

    det J is clipped to ``[clip, 1/clip]`` before the logarithm, so every folded pixel (det J <= 0)
    contributes ``log(clip)`` (-20.7 for the default 1e-9). With folds present the result is therefore
    dominated by the fraction of folded pixels rather than by the roughness of the unfolded part: a few
    folded pixels can raise it substantially. Report :func:`folded_fraction` alongside it. This is not the
    Learn2Reg variant, which takes the SD of ``log(clip(det J + 3, 1e-9, 1e9))``.

    Args:
        displacement: (2, H, W) in pixels.
        mask: optional (H, W) boolean mask; it must select at least one pixel (an empty mask raises).
        clip: the smallest det J kept (dimensionless); ``0 < clip < 1``, as the interval ``[clip, 1/clip]``
            is empty or a single point otherwise.
    """
    if isinstance(clip, bool | np.bool_) or not isinstance(clip, Real):
        raise TypeError(f"clip: expected a number in (0, 1), got {clip!r} ({type(clip).__name__})")
    if not 0 < float(clip) < 1:  # also refuses NaN
        raise ValueError(f"clip: expected 0 < clip < 1 (det J is clipped to [clip, 1/clip]), got {clip!r}")
    det = jacobian_determinant(displacement)
    sel = _selection(mask, det.shape)
    return _std_log(det if sel is None else det[sel], float(clip))


def _std_log(det: np.ndarray, clip: float = 1e-9) -> float:
    return float(np.std(np.log(np.clip(det, clip, 1.0 / clip))))


def dice(a: ArrayLike, b: ArrayLike) -> float:
    """Dice overlap 2|A n B| / (|A| + |B|) of two boolean masks, in [0, 1]; NaN when both are empty.

    ``a`` and ``b`` are boolean arrays (or numeric arrays holding only 0 and 1) of the same shape; NaN and
    other values are refused (threshold soft masks first).
    """
    x0, y0 = np.asarray(a), np.asarray(b)
    if x0.shape != y0.shape:
        raise ValueError(f"dice: masks have shapes {x0.shape} and {y0.shape}; they must match")
    x, y = as_mask(x0, "a", x0.shape), as_mask(y0, "b", y0.shape)
    total = x.sum() + y.sum()
    return float("nan") if total == 0 else float(2.0 * np.logical_and(x, y).sum() / total)


def label_dice(a: ArrayLike, b: ArrayLike, *, per_label: bool = False) -> float | dict[int, float]:
    """Mean Dice over the structures of two label maps: how well anatomy overlaps after a registration.

    ``a``, ``b``: (H, W) integer label maps (0 = background, ignored). The mean runs over the labels present in
    both maps (as Learn2Reg scores brain labels); NaN when they share none. ``per_label=True`` returns
    ``{label: Dice}`` for every label > 0 present in either map instead (0.0 for a label missing from one).
    Book: chapter "Evaluating a registration".
    """
    x = as_labels(a, "a", tuple(np.shape(a)))
    y = as_labels(b, "b", x.shape)
    present_x, present_y = set(np.unique(x)) - {0}, set(np.unique(y)) - {0}
    if per_label:
        return {int(k): dice(x == k, y == k) for k in sorted(present_x | present_y)}
    shared = sorted(present_x & present_y)
    return float("nan") if not shared else float(np.mean([dice(x == k, y == k) for k in shared]))


def endpoint_error(displacement: ArrayLike, reference: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Mean Euclidean distance in pixels between an estimated and a reference displacement.

    Both are (2, H, W) in pixels; ``mask`` an optional (H, W) boolean mask that selects at least one pixel
    (an empty mask raises a ValueError).
    """
    u = as_displacement(displacement)
    r = as_displacement(reference, "reference", u.shape[1:])
    err = np.sqrt(((u - r) ** 2).sum(0))
    sel = _selection(mask, err.shape)
    return float(err.mean() if sel is None else err[sel].mean())


_NOISE_KERNEL = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


def noise_sd(image: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Standard deviation of the image's white noise, in intensity units, by Immerkaer's estimator (1996): the
    mean absolute response to a 3 x 3 kernel that cancels locally linear intensities, times sqrt(pi / 2) / 6.

    ``mask``: an optional (H, W) mask of the pixels to use (e.g. the head, so a black background does not pull
    the estimate down); pixels on the image border are left out. Edges and texture respond too, so on real
    images this is an upper bound of the noise rather than an exact value.
    """
    img = as_image(image, "image", allow_constant=True)
    if min(img.shape) < 3:
        raise ValueError(f"image: expected at least 3 x 3 pixels for the 3 x 3 kernel, got {img.shape}")
    response = np.abs(ndimage.correlate(img, _NOISE_KERNEL, mode="nearest"))[1:-1, 1:-1]
    sel = _selection(mask, img.shape)
    if sel is not None:
        sel = sel[1:-1, 1:-1]
        if not sel.any():
            raise ValueError("mask: it selects only border pixels, which the estimate leaves out")
    return float(math.sqrt(math.pi / 2) / 6 * (response.mean() if sel is None else response[sel].mean()))


def ssim_data_range(moving: ArrayLike, fixed: ArrayLike) -> float:
    """The ``data_range`` (intensity units) :func:`summarize` uses by default for two (H, W) images.

    ``moving`` and ``fixed`` are (H, W) images in the same intensity units.

    1.0 when both images lie within [0, 1] (dipreg's protocol, skimage-equivalent with ``data_range=1``);
    otherwise the joint range ``max - min`` over both images (1.0 if that is 0, i.e. both are the same
    constant). So the reported SSIM does not change when both images are scaled by the same factor > 0,
    unless the scaled images fall within [0, 1].
    """
    m = as_image(moving, "moving", allow_constant=True)
    f = as_image(fixed, "fixed", allow_constant=True)
    lo, hi = min(m.min(), f.min()), max(m.max(), f.max())
    if lo >= 0.0 and hi <= 1.0:
        return 1.0
    return float(hi - lo) if hi > lo else 1.0


def summarize(moving: ArrayLike, fixed: ArrayLike, warped: ArrayLike, displacement: ArrayLike, *,
              moving_mask: ArrayLike | None = None, fixed_mask: ArrayLike | None = None,
              reference: ArrayLike | None = None, data_range: float | None = None,
              moving_labels: ArrayLike | None = None, fixed_labels: ArrayLike | None = None) -> dict[str, float]:
    """All metrics of one registration as a flat dict (the columns of the reproduction tables).

    Keys: ``ssim_before`` (moving vs fixed), ``ssim_after`` (warped vs fixed), ``ssim_data_range`` (the
    ``data_range`` used for both, intensity units), ``mae_before``, ``mae_after`` (mean absolute intensity
    difference, intensity units), ``jac_mean``, ``jac_std``, ``jac_min`` (det J, dimensionless),
    ``folded_fraction`` (in [0, 1]), ``std_log_jac``; ``dice_before``/``dice_after`` when both masks are given
    (NaN when both masks are empty), ``label_dice_before``/``label_dice_after`` (mean Dice over the shared
    labels, :func:`label_dice`) when both label maps are given, ``epe`` (pixels) when a ``reference``
    displacement is given.

    Args:
        moving, fixed, warped: (H, W) images in the same intensity units.
        displacement: (2, H, W) in pixels, the field that made ``warped`` (pull-back).
        moving_mask, fixed_mask: optional (H, W) boolean (or 0/1) masks for Dice; give both or neither.
        reference: optional (2, H, W) reference displacement in pixels, for the endpoint error.
        moving_labels, fixed_labels: optional (H, W) integer label maps (0 = background) for label Dice; the
            moving labels are warped with nearest-neighbour interpolation. Give both or neither.
        data_range: the SSIM ``data_range`` in intensity units. None (default) picks it from the images with
            :func:`ssim_data_range`: 1.0 when ``moving`` and ``fixed`` both lie within [0, 1] (the book's
            protocol, unchanged numbers), else their joint ``max - min``, so that the SSIM of intensities in
            any unit (int16 .npy, MRI in 0-4000) is meaningful and scale-invariant. A number overrides it.

    Raises:
        TypeError, ValueError: naming the argument with the wrong type, shape or value.
    """
    m, f, w = (as_image(v, n, allow_constant=True) for v, n in ((moving, "moving"), (fixed, "fixed"),
                                                                 (warped, "warped")))
    same_shape(m, f, "moving", "fixed")
    same_shape(w, f, "warped", "fixed")
    u = as_displacement(displacement, "displacement", f.shape)
    if (moving_mask is None) != (fixed_mask is None):
        given = "moving_mask" if fixed_mask is None else "fixed_mask"
        raise ValueError(f"{given}: Dice needs both moving_mask and fixed_mask; got only {given}")
    mm = None if moving_mask is None else as_mask(moving_mask, "moving_mask", f.shape)
    fm = None if fixed_mask is None else as_mask(fixed_mask, "fixed_mask", f.shape)
    if (moving_labels is None) != (fixed_labels is None):
        given = "moving_labels" if fixed_labels is None else "fixed_labels"
        raise ValueError(f"{given}: label Dice needs both moving_labels and fixed_labels; got only {given}")
    ml = None if moving_labels is None else as_labels(moving_labels, "moving_labels", f.shape)
    fl = None if fixed_labels is None else as_labels(fixed_labels, "fixed_labels", f.shape)
    if reference is not None:
        as_displacement(reference, "reference", f.shape)
    if data_range is None:
        data_range = ssim_data_range(m, f)
    else:
        data_range = _positive_real(data_range, "data_range", "the intensity range, in intensity units")
    det = jacobian_determinant(u)
    out = {
        "ssim_before": ssim(m, f, data_range=data_range), "ssim_after": ssim(w, f, data_range=data_range),
        "ssim_data_range": data_range,
        "mae_before": float(np.abs(m - f).mean()), "mae_after": float(np.abs(w - f).mean()),
        "jac_mean": float(det.mean()), "jac_std": float(det.std()), "jac_min": float(det.min()),
        "folded_fraction": float(np.mean(det <= 0)), "std_log_jac": _std_log(det),
    }
    if mm is not None and fm is not None:
        warped_mask = warp(mm.astype(float), u, order=0) > 0.5
        out["dice_before"] = dice(mm, fm)
        out["dice_after"] = dice(warped_mask, fm)
    if ml is not None and fl is not None:
        out["label_dice_before"] = label_dice(ml, fl)
        out["label_dice_after"] = label_dice(np.rint(warp(ml.astype(float), u, order=0)).astype(np.int64), fl)
    if reference is not None:
        out["epe"] = endpoint_error(u, reference)
    return out
