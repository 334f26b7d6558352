"""Checks for the exercises of the chapter "The deep image prior" (``book/05_deep_image_prior.ipynb``):
PSNR (with an optional mask) and the discrepancy principle for stopping.

Every check calls the student's function and dipreg's reference on fresh random input and, when they
disagree, names the typical mistake (natural log instead of log10, a mask ignored or inverted, ...) that
fits all trials (:func:`dipreg.teaching.checks.cases.check_cases`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from dipreg.teaching.checks.cases import Variants, check_cases, guard_mask_errors, masked_variants, random_mask


def reference_psnr(estimate: np.ndarray, reference: np.ndarray, data_range: float = 1.0,
                   mask: np.ndarray | None = None) -> float:
    """``10 log10(data_range**2 / mean((estimate - reference)**2))`` in dB; with a ``mask`` (booleans or 0/1
    numbers) the mean runs over the masked pixels only."""
    squared = (np.asarray(estimate, float) - np.asarray(reference, float)) ** 2
    mse = np.mean(squared if mask is None else squared[np.asarray(mask, bool)])
    return float(10.0 * np.log10(data_range**2 / mse))


def _psnr_case(rng: np.random.Generator) -> tuple[tuple, float, Variants]:
    data_range = float(rng.choice([2.0, 100.0, 4.0]))  # never 1 or 255, so neither can be hard-coded
    clean = ndimage.gaussian_filter(rng.random((24, 32)), 2.0)
    clean = (clean - clean.min()) / np.ptp(clean) * 0.8 * data_range
    noisy = clean + rng.uniform(0.02, 0.2) * data_range * rng.standard_normal(clean.shape)
    mse = np.mean((noisy - clean) ** 2)
    peak = data_range**2
    variants = {
        "you ignored the data_range argument (that is the PSNR for a peak of 1): the peak power is "
        "data_range**2": 10 * np.log10(1.0 / mse),
        "the peak is the data_range argument, not a fixed 255: 255 is the range of 8-bit images only, and "
        "these test images have other ranges": 10 * np.log10(255.0**2 / mse),
        "you returned the mean squared error; PSNR turns it into decibels, 10 log10(data_range**2 / MSE)": mse,
        "you returned the root-mean-square error; PSNR is 10 log10(data_range**2 / MSE) in dB": np.sqrt(mse),
        "you used the natural logarithm; PSNR is defined with log10": 10 * np.log(peak / mse),
        "20 log10 goes with the *amplitude* ratio data_range / RMSE; with the power ratio data_range**2 / MSE "
        "the factor is 10": 20 * np.log10(peak / mse),
        "the peak is squared: PSNR = 10 log10(data_range**2 / MSE), not 10 log10(data_range / MSE)":
            10 * np.log10(data_range / mse),
        "you used the RMSE where the MSE belongs (or dropped the square of the error)":
            10 * np.log10(peak / np.sqrt(mse)),
        "the ratio is upside down: signal power over noise power, data_range**2 / MSE":
            10 * np.log10(mse / peak),
        "use the data_range argument as the peak, not the largest value in the image (an image need not reach "
        "the top of its range)": 10 * np.log10(clean.max() ** 2 / mse),
        "use the data_range argument as the peak, not the largest value in the noisy estimate":
            10 * np.log10(noisy.max() ** 2 / mse),
        "use the data_range argument as the peak, not the range of values (max - min) in the noisy estimate":
            10 * np.log10(np.ptp(noisy) ** 2 / mse),
        "the error must be averaged (the *mean* squared error), not summed": 10 * np.log10(peak / (mse * clean.size)),
    }
    return (noisy, clean, data_range), reference_psnr(noisy, clean, data_range), variants


def _masked_psnr_case(rng: np.random.Generator, kind: str) -> tuple[tuple, float, Variants]:
    data_range = float(rng.choice([2.0, 4.0, 100.0]))
    shape = (int(rng.integers(24, 32)), int(rng.integers(28, 36)))
    clean = ndimage.gaussian_filter(rng.random(shape), 2.0)
    clean = (clean - clean.min()) / np.ptp(clean) * 0.8 * data_range
    mask = random_mask(rng, shape, kind)
    inside = np.asarray(mask, bool)
    # small errors inside the object, large ones in the background: a wrong region shows at once
    sigma = np.where(inside, rng.uniform(0.02, 0.05), rng.uniform(0.15, 0.3)) * data_range
    noisy = clean + sigma * rng.standard_normal(shape)
    squared = (noisy - clean) ** 2

    def to_db(values: np.ndarray) -> float:
        return float(10 * np.log10(data_range**2 / np.mean(values)))

    variants = masked_variants(squared, mask, to_db, "mean squared error")
    variants["you ignored the data_range argument (that is the PSNR for a peak of 1): the peak power is "
             "data_range**2"] = float(10 * np.log10(1.0 / np.mean(squared[inside])))
    return (noisy, clean, data_range, mask), reference_psnr(noisy, clean, data_range, mask), variants


def check_psnr(fn: Callable[..., float], *, seed: int | None = None) -> bool:
    """Check ``fn(estimate, reference, data_range, mask=None) -> PSNR in dB`` against the definition: first
    without a mask (three arguments), then with masks given as booleans, 0/1 integers and 0/1 floats."""
    if not check_cases(fn, _psnr_case, "psnr", trials=3, seed=seed, atol=1e-6, rtol=1e-6):
        return False
    kinds = iter(["bool", "uint8", "float"])
    return check_cases(guard_mask_errors(fn, "psnr with a mask"), lambda rng: _masked_psnr_case(rng, next(kinds)),
                       "psnr with a mask", trials=3, seed=None if seed is None else seed + 1, atol=1e-6, rtol=1e-6)


def reference_discrepancy_stop(losses: Sequence[float], sigma: float) -> int:
    """The discrepancy principle: the first iteration (1-based) whose loss MSE(output, noisy) <= sigma**2.

    Fitting the noisy image more closely than the noise level means fitting the noise. When the loss
    never gets there, the answer is the last iteration, ``len(losses)``.
    """
    for it, value in enumerate(losses, start=1):
        if value <= sigma**2:
            return it
    return len(losses)


def _discrepancy_case(rng: np.random.Generator) -> tuple[tuple, int, Variants]:
    n = int(rng.integers(150, 250))
    sigma = float(rng.uniform(0.05, 0.15))
    t = np.arange(n)
    # an MSE curve that falls through sigma**2 on its way to 0 (the network ends up fitting the noise)
    losses = sigma**2 * (0.3 + 3.0 * np.exp(-t / rng.uniform(10, 30)) - 0.25 * t / n)
    losses = losses * (1 + 0.01 * rng.standard_normal(n))
    first = int(np.argmax(losses <= sigma**2))
    losses[first + 3:first + 6] = 1.5 * sigma**2  # a loss spike, as Adam makes now and then
    losses = [float(v) for v in losses]
    expected = reference_discrepancy_stop(losses, sigma)
    below = [i + 1 for i, v in enumerate(losses) if v <= sigma**2]
    above = [i + 1 for i, v in enumerate(losses) if v > sigma**2]
    variants = {
        "compare the MSE with the noise *variance* sigma**2, not with sigma: the loss is a squared error":
            reference_discrepancy_stop(losses, float(np.sqrt(sigma))),
        "that is a 0-based index; report the iteration number (1-based): the first loss is iteration 1":
            expected - 1,
        "that is the last iteration below sigma**2; the rule stops at the *first* one": below[-1] if below else n,
        "that is the last iteration *above* sigma**2; the rule stops at the first one below": above[-1] if above else 1,
        "compare with the noise standard deviation squared, sigma**2, not 2 sigma**2":
            reference_discrepancy_stop(losses, float(np.sqrt(2) * sigma)),
    }
    return (losses, sigma), expected, variants


def check_discrepancy_stop(fn: Callable[[Sequence[float], float], int], *, seed: int | None = None) -> bool:
    """Check ``fn(losses, sigma) -> iteration`` (1-based): the first loss at or below ``sigma**2``."""
    return check_cases(fn, _discrepancy_case, "discrepancy stop", trials=4, seed=seed, atol=0, rtol=0)
