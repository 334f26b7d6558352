"""How the optimisers see intensities: each image mapped to [0, 1] before a registration.

Book: chapter "Registration with a deep image prior" (``book/07_dip_registration.ipynb``), section on
intensities. Every method of dipreg (:func:`dipreg.register`, :func:`dipreg.register_many`,
:func:`dipreg.classical.register_classical`) calls :func:`rescale` on both images; the warped image it
returns is always the *original* moving image warped.

With a data term that compares intensities directly (MAE, MSE), the two images must show the same tissue at
the same value. Min-max scaling (the paper's choice, ``clip=0``) lets one hot pixel, or a zero-padded band
in an image whose darkest tissue is not black, set the whole scale: the two images then disagree everywhere
and the optimum moves far from the true alignment. ``clip > 0`` winsorises instead, the way ANTs'
``antsRegistrationSyN.sh`` does (its default 0.005 / 0.995 quantiles), with one more rule: the quantiles are
taken over the *foreground*, the pixels above the image's minimum, so that a black background or padding,
however large, does not decide where the tissue's range starts.
"""

from __future__ import annotations

import math

import numpy as np


def check_clip(clip: float, what: str = "clip") -> float:
    """``clip`` as a float in [0, 0.5), or a ValueError naming ``what``."""
    if isinstance(clip, bool) or not isinstance(clip, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what}: expected a fraction in [0, 0.5), got {clip!r} ({type(clip).__name__})")
    if not math.isfinite(clip) or not 0.0 <= clip < 0.5:
        raise ValueError(f"{what}: expected a fraction in [0, 0.5), got {clip!r}")
    return float(clip)


def intensity_window(image: np.ndarray, clip: float = 0.0) -> tuple[float, float]:
    """The intensities ``(lo, hi)`` that :func:`rescale` sends to 0 and 1, in the image's units.

    ``clip == 0``: the image's minimum and maximum. ``clip > 0``: the ``clip`` and ``1 - clip`` quantiles of
    the foreground (pixels above the minimum); when those coincide, the foreground's minimum and maximum, and
    when that range is empty too (a two-valued image), the image's minimum and maximum.
    """
    clip = check_clip(clip)
    x = np.asarray(image, dtype=np.float64)
    lo, hi = float(x.min()), float(x.max())
    if clip == 0.0 or hi <= lo:
        return lo, hi
    fg = x[x > lo]
    q_lo, q_hi = (float(v) for v in np.quantile(fg, [clip, 1.0 - clip]))
    if q_hi > q_lo:
        return q_lo, q_hi
    return (float(fg.min()), hi) if fg.min() < hi else (lo, hi)


def rescale(image: np.ndarray, clip: float = 0.0) -> np.ndarray:
    """``image`` (H, W) mapped linearly so that :func:`intensity_window` becomes [0, 1], then clipped to [0, 1].

    A constant image maps to zeros. ``clip=0`` is plain min-max scaling (no value is clipped).
    """
    lo, hi = intensity_window(image, clip)
    x = np.asarray(image, dtype=np.float64)
    if hi <= lo:
        return np.zeros_like(x)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)
