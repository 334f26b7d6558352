"""Evaluation metrics: image similarity and the regularity of a displacement field.

Book: chapter "Evaluating a registration" (``book/08_evaluation.ipynb``).

Every function takes numpy arrays in the package conventions: images (H, W), displacements
(2, H, W) in pixels (channel 0 rows, channel 1 columns) describing phi(x) = x + u(x).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from dipreg._validate import as_displacement, as_image, same_shape


def ssim(a, b, *, data_range: float = 1.0, win_size: int = 7, gaussian: bool = False,
         mask=None, k1: float = 0.01, k2: float = 0.03) -> float:
    """Structural similarity (Wang et al. 2004) of two (H, W) images.

    Matches ``skimage.metrics.structural_similarity(a, b, data_range=data_range, win_size=win_size)``
    (sample covariance, a uniform window; with ``gaussian`` it matches ``gaussian_weights=True, sigma=1.5``
    and the window is 11 x 11 whatever ``win_size`` says),
    averaged over the pixels at least ``win_size // 2`` from the border, as scikit-image does. With
    ``mask`` the local SSIM map is averaged over the masked pixels inside that border instead.
    dipreg's reported SSIM uses the defaults on intensities in [0, 1], on the whole image.
    """
    x = as_image(a, "a", allow_constant=True)
    y = as_image(b, "b", allow_constant=True)
    same_shape(x, y, "a", "b")
    if win_size % 2 != 1 or win_size < 3 or win_size > min(x.shape):
        raise ValueError(f"win_size: expected an odd number between 3 and {min(x.shape)}, got {win_size}")
    if gaussian:  # sigma 1.5 truncated at 3.5 sigma: an 11 x 11 window, as scikit-image
        win_size = 11

        def filt(v: np.ndarray) -> np.ndarray:
            return ndimage.gaussian_filter(v, sigma=1.5, truncate=3.5)
    else:
        def filt(v: np.ndarray) -> np.ndarray:
            return ndimage.uniform_filter(v, size=win_size)
    cov_norm = win_size**2 / (win_size**2 - 1.0)
    ux, uy = filt(x), filt(y)
    vx = cov_norm * (filt(x * x) - ux * ux)
    vy = cov_norm * (filt(y * y) - uy * uy)
    vxy = cov_norm * (filt(x * y) - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (win_size - 1) // 2
    inner = np.zeros_like(s, dtype=bool)
    inner[pad:s.shape[0] - pad, pad:s.shape[1] - pad] = True
    if mask is not None:
        inner &= _mask(mask, x.shape, "mask")
        if not inner.any():
            raise ValueError("mask: no masked pixel lies inside the SSIM border")
    return float(s[inner].mean())


def _mask(mask, shape: tuple[int, ...], name: str) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != shape:
        raise ValueError(f"{name}: expected a boolean array of shape {shape}, got {m.shape}")
    return m.astype(bool)


def jacobian(displacement) -> np.ndarray:
    """The Jacobian of phi(x) = x + u(x), shape (2, 2, H, W), by central differences (one-sided at borders).

    ``J[i, j] = d phi_i / d x_j`` with axis 0 rows and axis 1 columns.
    """
    u = as_displacement(displacement)
    jac = np.empty((2, 2) + u.shape[1:])
    for i in range(2):
        grads = np.gradient(u[i])
        for j in range(2):
            jac[i, j] = grads[j] + (1.0 if i == j else 0.0)
    return jac


def jacobian_determinant(displacement) -> np.ndarray:
    """det J_phi at every pixel, shape (H, W). Values <= 0 mark folding (phi is not invertible there)."""
    j = jacobian(displacement)
    return j[0, 0] * j[1, 1] - j[0, 1] * j[1, 0]


def folded_fraction(displacement, mask=None) -> float:
    """Fraction of pixels (within ``mask``, if given) where det J_phi <= 0."""
    det = jacobian_determinant(displacement)
    sel = det if mask is None else det[_mask(mask, det.shape, "mask")]
    return float(np.mean(sel <= 0))


def std_log_jacobian(displacement, mask=None, clip: float = 1e-9) -> float:
    """Standard deviation of log det J_phi over the pixels (within ``mask``, if given).

    det J is clipped to ``[clip, 1/clip]`` before the logarithm, so every folded pixel (det J <= 0)
    contributes ``log(clip)`` (-20.7 for the default 1e-9). With folds present the result is therefore
    dominated by the fraction of folded pixels rather than by the roughness of the unfolded part: a few
    folded pixels can raise it substantially. Report :func:`folded_fraction` alongside it. This is not the
    Learn2Reg variant, which takes the SD of ``log(clip(det J + 3, 1e-9, 1e9))``.
    """
    det = jacobian_determinant(displacement)
    sel = det if mask is None else det[_mask(mask, det.shape, "mask")]
    return float(np.std(np.log(np.clip(sel, clip, 1.0 / clip))))


def dice(a, b) -> float:
    """Dice overlap 2|A n B| / (|A| + |B|) of two boolean masks; NaN when both are empty."""
    x, y = np.asarray(a).astype(bool), np.asarray(b).astype(bool)
    if x.shape != y.shape:
        raise ValueError(f"dice: masks have shapes {x.shape} and {y.shape}; they must match")
    total = x.sum() + y.sum()
    return float("nan") if total == 0 else float(2.0 * np.logical_and(x, y).sum() / total)


def endpoint_error(displacement, reference, mask=None) -> float:
    """Mean Euclidean distance in pixels between an estimated and a reference displacement."""
    u = as_displacement(displacement)
    r = as_displacement(reference, "reference", u.shape[1:])
    err = np.sqrt(((u - r) ** 2).sum(0))
    return float(err.mean() if mask is None else err[_mask(mask, err.shape, "mask")].mean())


def summarize(moving, fixed, warped, displacement, *, moving_mask=None, fixed_mask=None,
              reference=None) -> dict[str, float]:
    """All metrics of one registration as a flat dict (the columns of the reproduction tables).

    Keys: ``ssim_before``, ``ssim_after``, ``mae_before``, ``mae_after``, ``jac_mean``, ``jac_std``,
    ``jac_min``, ``folded_fraction``, ``std_log_jac``; ``dice_before``/``dice_after`` when both masks
    are given (NaN when both masks are empty), ``epe`` when a ``reference`` displacement is given.
    """
    m, f, w = (as_image(v, n, allow_constant=True) for v, n in ((moving, "moving"), (fixed, "fixed"),
                                                                 (warped, "warped")))
    det = jacobian_determinant(displacement)
    out = {
        "ssim_before": ssim(m, f), "ssim_after": ssim(w, f),
        "mae_before": float(np.abs(m - f).mean()), "mae_after": float(np.abs(w - f).mean()),
        "jac_mean": float(det.mean()), "jac_std": float(det.std()), "jac_min": float(det.min()),
        "folded_fraction": float(np.mean(det <= 0)), "std_log_jac": std_log_jacobian(displacement),
    }
    if moving_mask is not None and fixed_mask is not None:
        from dipreg.transform import warp

        warped_mask = warp(np.asarray(moving_mask, dtype=float), displacement, order=0) > 0.5
        out["dice_before"] = dice(moving_mask, fixed_mask)
        out["dice_after"] = dice(warped_mask, fixed_mask)
    if reference is not None:
        out["epe"] = endpoint_error(displacement, reference)
    return out
