"""How the optimisers see intensities: each image mapped to [0, 1] before a registration.

Book: chapter "Registration with a deep image prior" (``book/07_dip_registration.ipynb``), section on
intensities. Every method of dipreg (:func:`dipreg.register`, :func:`dipreg.register_many`,
:func:`dipreg.methods.classical.register_classical`) calls :func:`rescale` on both images; the warped image it
returns is always the *original* moving image warped.

With a data term that compares intensities directly (MAE, MSE), the two images must show the same tissue at
the same value. Min-max scaling (the paper's choice, ``clip=0``) lets one hot pixel, or a zero-padded band
in an image whose darkest tissue is not black, set the whole scale: the two images then disagree everywhere
and the optimum moves far from the true alignment. ``clip > 0`` winsorises instead, the way ANTs'
``antsRegistrationSyN.sh`` does (its default 0.005 / 0.995 quantiles), with one more rule: the quantiles are
taken over the *foreground* (:func:`foreground`: not the darkest intensities, nor a flat background that
fills much of the image), so that a black background or padding, however large, does not decide where the
tissue's range starts. ``background="border"`` (:func:`border_background`) also leaves out a flat region of any
grey level that touches the image border: some scanners' images have a grey, noisy background that neither of
the two rules above finds.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage


def check_clip(clip: float, what: str = "clip") -> float:
    """``clip`` as a float in [0, 0.5), or a ValueError naming ``what``."""
    if isinstance(clip, bool) or not isinstance(clip, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what}: expected a fraction in [0, 0.5), got {clip!r} ({type(clip).__name__})")
    if not math.isfinite(clip) or not 0.0 <= clip < 0.5:
        raise ValueError(f"{what}: expected a fraction in [0, 0.5), got {clip!r}")
    return float(clip)


BACKGROUNDS = ("darkest", "border")
"""What :func:`foreground` counts as background: the darkest intensities and a flat dominant level
(``"darkest"``), or these and a flat region touching the image border (``"border"``)."""


def check_background(background: str, what: str = "background") -> str:
    """``background`` if it is one of :data:`BACKGROUNDS`, else a ValueError naming ``what``."""
    if background not in BACKGROUNDS:
        raise ValueError(f"{what}: expected one of {list(BACKGROUNDS)}, got {background!r}")
    return background


def border_background(image: np.ndarray, *, frame: int = 4, smooth: float = 1.5, tolerance: float = 0.05,
                      share: float = 0.8) -> np.ndarray:
    """Boolean (H, W) mask of a flat background of any grey level that touches the image border.

    The level is the median of the image, smoothed by a Gaussian of ``smooth`` pixels, over a frame ``frame``
    pixels wide along the border. The mask holds the pixels whose smoothed value lies within ``tolerance`` x the
    image's 1st-99th percentile range of that level and that connect to the frame through such pixels: the scalp
    around a head stops it; in a skull-stripped brain, tissue at the background's grey level that touches it
    (a rim of CSF) joins it. All False when fewer than ``share`` of the frame's pixels lie at that level:
    a texture, or an object cut by the border, has no such background.
    """
    x = np.asarray(image, dtype=np.float64)
    out = np.zeros(x.shape, bool)
    if min(x.shape) <= 2 * frame:
        return out
    s = ndimage.gaussian_filter(x, smooth)
    ring = np.ones(x.shape, bool)
    ring[frame:-frame, frame:-frame] = False
    level = float(np.median(s[ring]))
    p_lo, p_hi = (float(v) for v in np.quantile(x, [0.01, 0.99]))
    near = np.abs(s - level) <= tolerance * (p_hi - p_lo)
    if p_hi <= p_lo or near[ring].mean() < share:
        return out
    labels, _ = ndimage.label(near)
    return np.isin(labels, np.unique(labels[ring & near]))


def foreground(image: np.ndarray, *, bins: int = 1024, background_share: float = 0.1,
               background: str = "darkest") -> np.ndarray:
    """Boolean (H, W) mask of the pixels that carry the image's content, for intensity statistics.

    Left out: the pixels in the lowest of ``bins`` equal intensity bins over [min, 99.9th percentile] (black background,
    zero padding) and, when one bin holds more than ``background_share`` of all pixels, that bin too (a flat
    background that is not black, e.g. 0.1 around an object, while the padding added by a warp is 0);
    with ``background="border"`` also :func:`border_background`. A constant image has no foreground.
    """
    check_background(background)
    x = np.asarray(image, dtype=np.float64)
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros(x.shape, bool)
    top_value = float(np.quantile(x, 0.999))  # the bins span [min, 99.9th percentile]: a hot pixel cannot widen them
    hi = top_value if top_value > lo else hi
    idx = np.clip(((x - lo) / (hi - lo) * bins).astype(np.int64), 0, bins - 1)
    counts = np.bincount(idx.ravel(), minlength=bins)
    out = idx > 0
    top = int(counts.argmax())
    if top > 0 and counts[top] > background_share * x.size:
        out &= idx != top
    if background == "border":
        out &= ~border_background(x)
    return out if out.any() else idx > 0


def intensity_window(image: np.ndarray, clip: float = 0.0, background: str = "darkest") -> tuple[float, float]:
    """The intensities ``(lo, hi)`` that :func:`rescale` sends to 0 and 1, in the image's units.

    ``clip == 0``: the image's minimum and maximum. ``clip > 0``: the ``clip`` and ``1 - clip`` quantiles of
    the :func:`foreground` (with ``background``); when those coincide, the foreground's minimum and maximum,
    and when that range is empty too (a two-valued image), the image's minimum and maximum.
    """
    clip = check_clip(clip)
    x = np.asarray(image, dtype=np.float64)
    lo, hi = float(x.min()), float(x.max())
    if clip == 0.0 or hi <= lo:
        return lo, hi
    fg = x[foreground(x, background=background)]
    q_lo, q_hi = (float(v) for v in np.quantile(fg, [clip, 1.0 - clip]))
    if q_hi > q_lo:
        return q_lo, q_hi
    return (float(fg.min()), hi) if fg.min() < hi else (lo, hi)


def rescale(image: np.ndarray, clip: float = 0.0, background: str = "darkest") -> np.ndarray:
    """``image`` (H, W) mapped linearly so that :func:`intensity_window` becomes [0, 1], then clipped to [0, 1].

    A constant image maps to zeros. ``clip=0`` is plain min-max scaling (no value is clipped).
    """
    lo, hi = intensity_window(image, clip, background)
    x = np.asarray(image, dtype=np.float64)
    if hi <= lo:
        return np.zeros_like(x)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def match_histogram(image: np.ndarray, reference: np.ndarray, *, points: int = 1024) -> np.ndarray:
    """``image``'s foreground intensities mapped monotonically onto ``reference``'s foreground distribution.

    Foreground: pixels above each image's minimum. Each foreground pixel goes to the reference's intensity at
    the same quantile (``points`` quantiles, linear in between); the image's background (its minimum) goes to
    the reference's minimum. A hot pixel, another intensity range or a gamma change of ``image`` disappears;
    what remains are differences of anatomy. Same-modality registration only (ANTs' ``--use-histogram-matching``
    is the same idea): between contrasts it invents intensities. A constant image or reference is returned as
    the reference's minimum everywhere.
    """
    x = np.asarray(image, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    out = np.full_like(x, float(ref.min()))
    fg_x, fg_r = x > x.min(), ref > ref.min()
    if not fg_x.any() or not fg_r.any():
        return out
    q = np.linspace(0.0, 1.0, points)
    src, dst = np.quantile(x[fg_x], q), np.quantile(ref[fg_r], q)
    src, tie = np.unique(src, return_inverse=True)  # np.interp needs increasing sample points: a run of equal
    dst = np.bincount(tie, weights=dst) / np.bincount(tie)  # quantiles (e.g. uint8 data) gets its mean target
    out[fg_x] = np.interp(x[fg_x], src, dst)
    return out


def match_linear(image: np.ndarray, reference: np.ndarray, *, low: float = 0.05, high: float = 0.95,
                 background: str = "darkest") -> np.ndarray:
    """``image`` in ``reference``'s intensity units: its :func:`foreground` mapped by the linear function
    ``a * image + b`` (``a > 0``) that best matches its quantiles ``low`` .. ``high`` to the reference
    foreground's (least squares over 19 quantiles), its background set to the reference's background level (the
    median of the reference's pixels outside its foreground). Both foregrounds: :func:`foreground` with
    ``background``.

    Corrects a different intensity scale and offset between two images of one modality without reshaping their
    histograms; the middle quantiles ignore hot pixels, padding and partial-volume edges, and a black background
    stays black. A constant image or reference is returned as the reference's minimum everywhere.
    """
    x = np.asarray(image, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    fg_x, fg_r = foreground(x, background=background), foreground(ref, background=background)
    if not fg_x.any() or not fg_r.any():
        return np.full_like(x, float(ref.min()))
    q = np.linspace(low, high, 19)
    src, dst = np.quantile(x[fg_x], q), np.quantile(ref[fg_r], q)
    if np.ptp(src) == 0:
        a, b = 0.0, float(np.median(dst))
    else:
        a, b = np.polyfit(src, dst, 1)
        if a <= 0:  # no increasing fit (unrelated histograms): keep the quantile range instead
            a = np.ptp(dst) / np.ptp(src)
            b = dst.mean() - a * src.mean()
    background = float(np.median(ref[~fg_r])) if (~fg_r).any() else float(ref.min())
    return np.where(fg_x, a * x + b, background)


MATCHES = ("none", "linear", "histogram")
"""How :func:`prepare_pair` brings the moving image's intensities to the fixed image's."""


def prepare_pair(moving: np.ndarray, fixed: np.ndarray, clip: float = 0.0, match: str = "none",
                 background: str = "darkest") -> tuple[np.ndarray, np.ndarray]:
    """The two (H, W) images as every dipreg optimiser sees them, both in [0, 1].

    The fixed image is :func:`rescale` d with ``clip``. The moving image: ``match="none"`` rescaled on its own
    (min-max when ``clip == 0``: the paper); ``"linear"`` brought into the fixed image's units by
    :func:`match_linear`, then mapped with the fixed image's window; ``"histogram"`` mapped onto the rescaled
    fixed image's distribution by :func:`match_histogram`. ``background``: what the intensity statistics leave
    out (:func:`foreground`).
    """
    if match not in MATCHES:
        raise ValueError(f"intensity_match: expected one of {list(MATCHES)}, got {match!r}")
    check_background(background, "intensity_background")
    f = rescale(fixed, clip, background)
    if match == "histogram":
        return match_histogram(moving, f), f
    if match == "linear":
        lo, hi = intensity_window(fixed, clip, background)
        scale = hi - lo if hi > lo else 1.0
        return np.clip((match_linear(moving, fixed, background=background) - lo) / scale, 0.0, 1.0), f
    return rescale(moving, clip, background), f
