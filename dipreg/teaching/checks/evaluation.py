"""Checks for the exercises of the chapter "Evaluating a registration" (``book/08_evaluation.ipynb``)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from dipreg.metrics import dice, endpoint_error, folded_fraction, jacobian_determinant
from dipreg.teaching.checks import CheckFailed, to_numpy
from dipreg.teaching.checks.cases import Variants, check_cases, guard_mask_errors, masked_variants, random_mask


def _field(rng: np.random.Generator, shape: tuple[int, int], amplitude: float, sigma: float) -> np.ndarray:
    u = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), sigma) for _ in range(2)])
    return u / np.abs(u).max() * amplitude


def _det(g00, g01, g10, g11, identity=1.0, plus=False):
    a, d = identity + g00, identity + g11
    return a * d + g01 * g10 if plus else a * d - g01 * g10


# ---------------------------------------------------------------------------------------------------
# Jacobian determinant


def _jacobian_case(rng: np.random.Generator) -> tuple[tuple, np.ndarray, Variants]:
    shape = (int(rng.integers(24, 32)), int(rng.integers(33, 40)))
    u = _field(rng, shape, rng.uniform(2.0, 4.0), 2.5)
    # an anisotropic part so that d/drow and d/dcol differ clearly
    u[0] += rng.uniform(0.2, 0.4) * np.arange(shape[0])[:, None] * np.ones(shape)
    (g00, g01), (g10, g11) = np.gradient(u[0]), np.gradient(u[1])
    forward = [np.diff(u[i], axis=j, append=u[i].take([-1], axis=j)) for i in range(2) for j in range(2)]
    variants = {
        "you forgot the identity: phi(x) = x + u(x), so J = I + grad u (add 1 to the diagonal, d u_0/d row and "
        "d u_1/d col) before taking the determinant": _det(g00, g01, g10, g11, identity=0.0),
        "the derivative axes (or the channels) are swapped: J[i, j] = d u_i / d x_j + delta_ij with channel 0 and "
        "array axis 0 both the rows; np.gradient(u[i]) returns (d/d rows, d/d columns) in that order":
            _det(g01, g00, g11, g10),
        "the off-diagonal product is subtracted in a 2 x 2 determinant: det = J00 J11 - J01 J10, not + J01 J10":
            _det(g00, g01, g10, g11, plus=True),
        "the off-diagonal terms are missing: det = J00 J11 - J01 J10": _det(g00, 0, 0, g11),
        "that is the linearisation 1 + div u; the determinant also has the products of the derivatives":
            1.0 + g00 + g11,
        "use central differences (np.gradient), as dipreg does, not forward differences": _det(*forward),
    }
    return (u,), jacobian_determinant(u), variants


def check_jacobian_determinant(fn: Callable[[np.ndarray], np.ndarray], *, seed: int | None = None) -> bool:
    """Check ``fn(u) -> det J`` of phi(x) = x + u(x) for a (2, H, W) pixel displacement (returns (H, W))."""
    return check_cases(fn, _jacobian_case, "jacobian_determinant", trials=3, seed=seed, atol=1e-8, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------
# Folding


def _folding_case(rng: np.random.Generator) -> tuple[tuple, float, Variants]:
    shape = (int(rng.integers(30, 40)), int(rng.integers(30, 40)))
    u = _field(rng, shape, rng.uniform(5.0, 8.0), 2.0)
    det = jacobian_determinant(u)
    frac = folded_fraction(u)
    variants = {
        "report a fraction in [0, 1], not a percentage": 100 * frac,
        "det J < 1 means compression, not folding: folding is det J <= 0": float(np.mean(det < 1)),
        "that is the fraction of pixels that are *not* folded": 1 - frac,
        "count the folded pixels *and divide* by the number of pixels": float(np.sum(det <= 0)),
    }
    return (u,), frac, variants


def _masked_folding_case(rng: np.random.Generator, kind: str) -> tuple[tuple, float, Variants]:
    shape = (int(rng.integers(30, 40)), int(rng.integers(30, 40)))
    u = _field(rng, shape, rng.uniform(5.0, 8.0), 2.0)
    mask = random_mask(rng, shape, kind)
    det = jacobian_determinant(u)
    frac = folded_fraction(u, np.asarray(mask, bool))
    variants = masked_variants((det <= 0).astype(float), mask, lambda v: float(np.mean(v)), "fraction")
    variants["report a fraction in [0, 1], not a percentage"] = 100 * frac
    return (u, mask), frac, variants


def _check_plain_then_masked(fn: Callable[..., float], plain: Callable, masked: Callable, name: str,
                             seed: int | None) -> bool:
    """The cases of ``plain`` (no mask), then three of ``masked`` with the mask as bool, 0/1 uint8 and 0/1 float."""
    if not check_cases(fn, plain, name, trials=3, seed=seed, atol=1e-9, rtol=1e-9):
        return False
    kinds = iter(["bool", "uint8", "float"])
    what = f"{name} with a mask"
    return check_cases(guard_mask_errors(fn, what), lambda rng: masked(rng, next(kinds)), what,
                       trials=3, seed=None if seed is None else seed + 1, atol=1e-9, rtol=1e-9)


def check_folded_fraction(fn: Callable[..., float], *, seed: int | None = None) -> bool:
    """Check ``fn(u, mask=None) -> fraction of pixels with det J <= 0`` for a (2, H, W) displacement: first over
    the whole image (one argument), then within masks given as booleans, 0/1 integers and 0/1 floats."""
    return _check_plain_then_masked(fn, _folding_case, _masked_folding_case, "folded_fraction", seed)


# ---------------------------------------------------------------------------------------------------
# Dice


def _blob(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 3.0)
    return field > np.quantile(field, rng.uniform(0.5, 0.8))


def _dice_case(rng: np.random.Generator) -> tuple[tuple, float, Variants]:
    shape = (int(rng.integers(30, 40)), int(rng.integers(30, 40)))
    a, b = _blob(rng, shape), _blob(rng, shape)
    inter, union = float(np.logical_and(a, b).sum()), float(np.logical_or(a, b).sum())
    total = float(a.sum() + b.sum())
    variants = {
        "that is the Jaccard index |A n B| / |A u B| (IoU); Dice is 2 |A n B| / (|A| + |B|)": inter / union,
        "the factor 2 is missing: Dice = 2 |A n B| / (|A| + |B|)": inter / total,
        "the denominator is |A| + |B|, not the union": 2 * inter / union,
        "the overlap is |A n B| (logical and), not |A u B|": 2 * union / total,
    }
    return (a, b), dice(a, b), variants


def check_dice(fn: Callable[[np.ndarray, np.ndarray], float], *, seed: int | None = None) -> bool:
    """Check ``fn(a, b) -> Dice overlap`` of two boolean masks, then the case of two empty masks."""
    ok = check_cases(fn, _dice_case, "dice", trials=3, seed=seed, atol=1e-9, rtol=1e-9)
    if not ok:
        return False
    empty = np.zeros((8, 8), dtype=bool)
    try:
        value = fn(empty, empty)
    except Exception as exc:
        raise CheckFailed(f"dice: two empty masks made your function raise {type(exc).__name__}: {exc}; guard the "
                          "division (dipreg returns NaN: the overlap of two empty sets is undefined)") from exc
    v = float(to_numpy(value))
    if not (np.isnan(v) or v == 1.0):
        raise CheckFailed(f"dice: two empty masks gave {v}; return NaN (undefined, as dipreg) or 1.0 (perfect "
                          "agreement), never a number that looks like a failure")
    print("dice: two empty masks handled.")
    return True


# ---------------------------------------------------------------------------------------------------
# Endpoint error


def _epe_case(rng: np.random.Generator) -> tuple[tuple, float, Variants]:
    shape = (int(rng.integers(20, 30)), int(rng.integers(20, 30)))
    ref = _field(rng, shape, 4.0, 3.0)
    est = ref + _field(rng, shape, rng.uniform(0.5, 1.5), 1.5) + rng.uniform(-0.3, 0.3, size=(2, 1, 1))
    d = est - ref
    sq = (d**2).sum(0)
    variants = {
        "the square root is missing: the endpoint error is the mean *length* |u - u_true|, not its square":
            float(sq.mean()),
        "that is the root-mean-square error; EPE averages the lengths: mean(sqrt(d_row**2 + d_col**2))":
            float(np.sqrt(sq.mean())),
        "the two components were averaged separately (mean |d| over 2 H W values); the error of a pixel is the "
        "Euclidean length of its 2-vector": float(np.abs(d).mean()),
        "that is the L1 length |d_row| + |d_col|; EPE uses the Euclidean length": float(np.abs(d).sum(0).mean()),
        "that is the largest error; EPE is the mean over pixels": float(np.sqrt(sq).max()),
    }
    return (est, ref), endpoint_error(est, ref), variants


def _masked_epe_case(rng: np.random.Generator, kind: str) -> tuple[tuple, float, Variants]:
    shape = (int(rng.integers(20, 30)), int(rng.integers(20, 30)))
    ref = _field(rng, shape, 4.0, 3.0)
    mask = random_mask(rng, shape, kind)
    inside = np.asarray(mask, bool)
    # small errors inside the object, large ones in the background, as on a registered image pair
    est = ref + _field(rng, shape, 1.0, 1.5) * np.where(inside, 0.5, 3.0)
    d = est - ref
    lengths = np.sqrt((d**2).sum(0))
    variants = masked_variants(lengths, mask, lambda v: float(np.mean(v)), "mean endpoint error")
    variants["the root-mean-square error over the mask; EPE averages the lengths: mean(sqrt(d_row**2 + "
             "d_col**2)) over the masked pixels"] = float(np.sqrt((lengths[inside] ** 2).mean()))
    variants["the two components were averaged separately over the mask; the error of a pixel is the Euclidean "
             "length of its 2-vector"] = float(np.abs(d[:, inside]).mean())
    variants["that is the largest error in the mask; EPE is the mean over the masked pixels"] = \
        float(lengths[inside].max())
    return (est, ref, mask), endpoint_error(est, ref, inside), variants


def check_endpoint_error(fn: Callable[..., float], *, seed: int | None = None) -> bool:
    """Check ``fn(estimate, reference, mask=None) -> mean endpoint error`` in pixels for (2, H, W) displacements:
    first over the whole image (two arguments), then within masks given as booleans, 0/1 integers and 0/1
    floats."""
    return _check_plain_then_masked(fn, _epe_case, _masked_epe_case, "endpoint_error", seed)
