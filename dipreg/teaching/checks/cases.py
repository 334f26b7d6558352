"""What the exercise checks share: running a student's function on random cases and naming the mistake.

Book: every chapter with a code exercise (its checks live beside this module).

:func:`check_cases` compares with the reference and with the answers of typical mistakes (``Variants``);
:func:`run_with_alternatives` does the same with a list of alternatives and shape fixes;
:func:`masked_variants` and :func:`guard_mask_errors` diagnose the usual errors with masks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from dipreg.teaching.checks import CheckFailed, compare, not_implemented, to_numpy

Variants = dict[str, Any]
"""Typical wrong answers for one input: ``{diagnosis: what a function with that mistake returns}``."""


def close(got: Any, expected: Any, atol: float, rtol: float) -> bool:
    if got is None:
        return False
    try:
        a, b = to_numpy(got).astype(float), to_numpy(expected).astype(float)
    except (TypeError, ValueError):
        return False
    return a.shape == b.shape and bool(np.allclose(a, b, atol=atol, rtol=rtol, equal_nan=True))


def check_cases(student_fn: Callable, make_case: Callable[[np.random.Generator], tuple[tuple, Any, Variants]],
                what: str, *, trials: int = 3, seed: int | None = None, atol: float = 1e-5, rtol: float = 1e-4,
                diagnoses: Sequence = ()) -> bool:
    """Run ``student_fn`` on ``trials`` random cases and diagnose a wrong answer by its typical mistakes.

    ``make_case(rng)`` returns ``(args, reference_output, variants)``. The check passes when every output
    matches the reference. Otherwise the first variant that matches the student's output in *every*
    trial (then: in every failing trial) names the mistake; failing that, :func:`dipreg.teaching.checks.compare`
    describes the first failing trial (with the generic ``diagnoses``). Returns ``False`` with a hint
    while the function raises NotImplementedError (:func:`dipreg.teaching.checks.not_implemented`).
    """
    rng = np.random.default_rng(seed)
    runs: list[tuple[Any, Any, Variants]] = []
    for trial in range(trials):
        args, expected, variants = make_case(rng)
        try:
            got = student_fn(*args)
        except NotImplementedError:
            return not_implemented(what)
        except CheckFailed:
            raise
        except Exception as exc:
            raise CheckFailed(f"{what}: your function raised {type(exc).__name__}: {exc} (trial {trial + 1})") from exc
        runs.append((got, expected, variants))
    failing = [i for i, (got, expected, _) in enumerate(runs) if not close(got, expected, atol, rtol)]
    if not failing:
        print(f"{what}: correct on {trials} random inputs.")
        return True
    for subset in (range(trials), failing):
        for hint in runs[failing[0]][2]:
            if all(close(runs[i][0], runs[i][2][hint], atol, rtol) for i in subset):
                raise CheckFailed(f"{what}: {hint}")
    i = failing[0]
    got, expected = runs[i][0], runs[i][1]
    label = f"{what} (trial {i + 1}/{trials})"
    if got is not None and np.ndim(to_numpy(expected)) == 0:
        try:
            arr = to_numpy(got).astype(float)
        except (TypeError, ValueError):
            raise CheckFailed(f"{label}: expected a single number, got a {type(got).__name__}") from None
        if arr.shape != ():
            raise CheckFailed(f"{label}: return a scalar (a single number, shape ()), got shape {arr.shape}")
        value = float(arr)
        raise CheckFailed(f"{label}: you returned {value:.6g}, expected {float(to_numpy(expected)):.6g}")
    compare(got, expected, label, atol=atol, rtol=rtol, diagnoses=diagnoses)
    raise CheckFailed(f"{label}: wrong answer")  # only reached when compare() accepts what close() did not


def random_mask(rng: np.random.Generator, shape: tuple[int, int], kind: str) -> np.ndarray:
    """A blob-shaped mask covering 30-60 % of the pixels, as booleans, 0/1 uint8 or 0/1 floats (``kind``)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 3.0)
    mask = field > np.quantile(field, rng.uniform(0.4, 0.7))
    return {"bool": mask, "uint8": mask.astype(np.uint8), "float": mask.astype(float)}[kind]


def masked_variants(errors: np.ndarray, mask: np.ndarray, summary: Callable[[np.ndarray], Any],
                    what: str) -> Variants:
    """Typical wrong answers of a per-pixel ``errors`` map (H, W) summarised by ``summary`` over ``mask``
    (the right answer is ``summary(errors[mask.astype(bool)])``): the mask ignored, multiplied in but averaged
    over every pixel, inverted, or used as integer indices (numpy's fancy indexing of a 0/1 integer array)."""
    m = np.asarray(mask, bool)
    variants: Variants = {
        f"the mask was ignored: the {what} runs over the masked pixels only": summary(errors.ravel()),
        f"the mask is inverted: the {what} runs over the pixels where the mask is True (or 1)": summary(errors[~m]),
    }
    variants["multiplying by the mask zeroes the other pixels but still counts them: average over the masked "
             "pixels only (values[mask].mean(), or divide the sum by mask.sum())"] = summary((errors * m).ravel())
    # every trial has the same keys (check_cases looks a hint up in each); None where it does not apply
    variants["a 0/1 *integer* mask used as an index picks rows 0 and 1, not the masked pixels: convert it to "
             "booleans first, np.asarray(mask, bool)"] = \
        None if np.asarray(mask).dtype == bool else summary(errors[np.asarray(mask).astype(int)].ravel())
    return variants


def guard_mask_errors(fn: Callable, what: str) -> Callable:
    """``fn`` with an IndexError from indexing with a float mask, and a TypeError from a missing ``mask``
    argument, turned into diagnoses."""
    def guarded(*args: Any) -> Any:
        try:
            return fn(*args)
        except TypeError as exc:
            if "positional argument" in str(exc):
                raise CheckFailed(f"{what}: your function raised TypeError ({exc}): give it the optional last "
                                  "argument `mask=None`, as the stub has") from exc
            raise
        except IndexError as exc:
            if "integer" in str(exc) and "boolean" in str(exc):
                raise CheckFailed(f"{what}: your function raised IndexError ({exc}): the mask may come as 0/1 "
                                  "numbers; convert it to booleans before indexing, np.asarray(mask, bool)") from exc
            raise
    return guarded


# An alternative: (hint, the answer a particular mistake would give). A "fix": (hint, a function that
# turns the student's output into the reference's shape, e.g. moving an axis).
Alternative = tuple[str, Any]
Fix = tuple[str, Callable[[np.ndarray], np.ndarray]]


def matches(got: np.ndarray, alt: Any, atol: float, rtol: float) -> bool:
    a = to_numpy(alt)
    return got.shape == a.shape and bool(np.all(np.isfinite(got))) and np.allclose(got, a, atol=atol, rtol=rtol)


def compare_with_alternatives(student: Any, reference: Any, what: str, alternatives: Sequence[Alternative] = (),
                              fixes: Sequence[Fix] = (), *, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Like :func:`dipreg.teaching.checks.compare`, but first names the specific mistake the output matches.

    ``alternatives`` are tried (in order) only when ``student`` does not match ``reference``; a match
    raises :class:`CheckFailed` with that alternative's hint. ``fixes`` are tried when the shapes
    differ (e.g. the coordinate axis first instead of last).
    """
    ref = to_numpy(reference)
    if student is None:
        raise CheckFailed(f"{what}: your function returned None; did you forget `return`?")
    got = to_numpy(student)
    if ref.ndim == 0 and got.size == 1:  # a scalar returned as a 1-element array or tensor is fine
        got = got.reshape(())
    if got.shape == ref.shape and np.all(np.isfinite(got)) and np.allclose(got, ref, atol=atol, rtol=rtol):
        return
    if got.shape != ref.shape:
        for hint, fix in fixes:
            try:
                fixed = fix(got)
            except Exception:  # a fix that does not apply to this shape
                continue
            if fixed.shape == ref.shape:
                raise CheckFailed(f"{what}: shape {got.shape}, expected {ref.shape}: {hint}")
    for hint, alt in alternatives:
        if matches(got, alt, atol, rtol):
            raise CheckFailed(f"{what}: {hint}")
    if ref.size == 1 and got.size == 1:  # a scalar: the generic diagnoses (sign, scale, ...) would only guess
        raise CheckFailed(f"{what}: yours {got.item():.6g}, expected {ref.item():.6g} (atol={atol}, rtol={rtol})")
    compare(got, ref, what, atol=atol, rtol=rtol)


def run_with_alternatives(student_fn: Callable, make_case: Callable[[np.random.Generator], dict], what: str, *,
                          trials: int = 3, seed: int | None = None, atol: float = 1e-5, rtol: float = 1e-4,
                          fixes: Sequence[Fix] = ()) -> bool:
    """Run ``student_fn`` on ``trials`` random cases and compare; the protocol of every check.

    ``make_case(rng)`` returns a dict with ``args`` (a tuple for the student's function), ``expected``
    and optionally ``alternatives`` (a list of (hint, wrong answer)). Returns ``True`` on success and
    ``False`` (with a hint) while the function raises ``NotImplementedError``; raises
    :class:`CheckFailed` with a diagnosis otherwise.
    """
    rng = np.random.default_rng(seed)
    for trial in range(trials):
        case = make_case(rng)
        try:
            got = student_fn(*case["args"])
        except NotImplementedError:
            return not_implemented(what)
        except Exception as exc:
            raise CheckFailed(f"{what}: your function raised {type(exc).__name__}: {exc} (trial {trial + 1})") from exc
        compare_with_alternatives(got, case["expected"], f"{what} (trial {trial + 1}/{trials})",
                                  case.get("alternatives", ()), fixes, atol=atol, rtol=rtol)
    print(f"{what}: correct on {trials} random inputs.")
    return True


def random_shape(rng: np.random.Generator, lo: int = 6, hi: int = 24) -> tuple[int, int]:
    """A random non-square (H, W), so that swapped rows and columns cannot go unnoticed."""
    h = int(rng.integers(lo, hi))
    w = int(rng.integers(lo, hi))
    if w == h:
        w += 3
    return h, w
