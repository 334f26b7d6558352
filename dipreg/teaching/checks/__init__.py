"""Checks for the book's exercises: run a student's function against dipreg's reference on fresh
random input and say *what* is wrong (shape, convention, sign, tolerance), not just pass/fail.

Book: every chapter with a code exercise calls its check (``dipreg.teaching.checks.warping`` for chapter
"Warping images", ...; the shared machinery is in :mod:`dipreg.teaching.checks.cases`).

Each chapter's checks live in a module here (``dipreg.teaching.checks.warping``, ...). A check returns ``True``
when the student's function agrees with the reference, prints a hint and returns ``False`` while the
function still raises ``NotImplementedError`` (so an unfinished notebook still runs), and raises
:class:`CheckFailed` with a diagnosis otherwise. That is the form the chapters use.

For grading, :func:`result` runs any check and returns a :class:`CheckResult` (passed, points,
diagnosis) instead of printing and raising; ``python -m dipreg grade`` (:mod:`dipreg.teaching.grade`) builds on it.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch


class CheckFailed(AssertionError):
    """The student's function disagrees with the reference; the message says how."""


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check, for grading: ``points`` of ``max_points`` and what the check said.

    ``status`` is ``"passed"``, ``"failed"`` (a wrong answer, ``diagnosis`` says how), ``"not implemented"``
    (the stub still raises NotImplementedError) or ``"missing"`` (no function of that name to check).
    Truthy when passed, so ``assert result(...)`` reads naturally.
    """

    name: str
    passed: bool
    points: float
    max_points: float
    diagnosis: str
    status: str

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return asdict(self)


def result(check: Callable[..., bool], *args: Any, points: float = 1.0, name: str | None = None,
           **kwargs: Any) -> CheckResult:
    """Run ``check(*args, **kwargs)`` (any ``check_*`` of this package) and return a :class:`CheckResult`
    instead of printing or raising: full ``points`` when it passes, none otherwise, with the check's
    diagnosis. Nothing is printed."""
    name = name or getattr(check, "__name__", "check").removeprefix("check_")
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            ok = check(*args, **kwargs)
    except CheckFailed as exc:
        return CheckResult(name, False, 0.0, float(points), str(exc), "failed")
    except Exception as exc:  # a check that cannot even run the function (e.g. it is not callable)
        return CheckResult(name, False, 0.0, float(points), f"the check could not run: {type(exc).__name__}: {exc}",
                           "failed")
    said = out.getvalue().strip()
    if ok:
        return CheckResult(name, True, float(points), float(points), said, "passed")
    return CheckResult(name, False, 0.0, float(points), said or "not implemented yet", "not implemented")


def to_numpy(x: Any) -> np.ndarray:
    """A tensor (detached, on the CPU) or anything array-like as a numpy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def not_implemented(what: str) -> bool:
    """What every check does while the student's function still raises NotImplementedError: say so, return
    ``False``."""
    print(f"{what}: not implemented yet - replace the `raise NotImplementedError` with your code.")
    return False


# Common mistakes: (name, transform of the student's output, what to tell the student).
DIAGNOSES: list[tuple[str, Callable[[np.ndarray], np.ndarray], str]] = [
    ("sign", lambda a: -a, "the sign is flipped: check whether you add or subtract (pull-back is x + u)"),
    ("channels", lambda a: a[..., ::-1, :, :] if a.ndim >= 3 and a.shape[-3] == 2 else a,
     "channels 0 and 1 are swapped: dipreg puts rows in channel 0 and columns in channel 1"),
    ("xy-last-axis", lambda a: a[..., ::-1] if a.shape[-1] == 2 else a,
     "the last axis is in the wrong order: grid_sample expects (x, y) = (column, row)"),
    ("transpose", lambda a: np.swapaxes(a, -1, -2) if a.ndim >= 2 and a.shape[-1] == a.shape[-2] else a,
     "the result is transposed: rows and columns are swapped"),
]


def compare(student: Any, reference: Any, what: str, *, atol: float = 1e-5, rtol: float = 1e-4,
            diagnoses: Iterable[tuple[str, Callable[[np.ndarray], np.ndarray], str]] = DIAGNOSES) -> None:
    """Raise :class:`CheckFailed` with a diagnosis unless ``student`` matches ``reference``."""
    ref = to_numpy(reference)
    if student is None:
        raise CheckFailed(f"{what}: your function returned None; did you forget `return`?")
    got = to_numpy(student)
    if got.shape != ref.shape:
        if got.size == ref.size:
            raise CheckFailed(f"{what}: shape {got.shape}, expected {ref.shape} (same number of values: "
                              "a reshape, transpose or permute is missing or wrong)")
        raise CheckFailed(f"{what}: shape {got.shape}, expected {ref.shape}")
    if not np.all(np.isfinite(got)):
        raise CheckFailed(f"{what}: your result contains NaN or inf")
    if np.allclose(got, ref, atol=atol, rtol=rtol):
        return
    for _, fix, hint in diagnoses:
        fixed = fix(got)
        if fixed.shape == ref.shape and np.allclose(fixed, ref, atol=atol, rtol=rtol) \
                and not np.allclose(fixed, got, atol=atol, rtol=rtol):
            raise CheckFailed(f"{what}: {hint}")
    err = np.abs(got - ref)
    where = np.unravel_index(int(np.argmax(err)), err.shape)
    scale = np.abs(ref).max() or 1.0
    if np.allclose(got / (np.abs(got).max() or 1.0) * scale, ref, atol=10 * atol, rtol=10 * rtol):
        raise CheckFailed(f"{what}: right pattern, wrong scale (max |yours| {np.abs(got).max():.4g}, expected "
                          f"{scale:.4g}): check units (pixels vs normalised) and factors such as 2/(n-1)")
    raise CheckFailed(f"{what}: largest difference {err.max():.3g} at index {tuple(int(i) for i in where)} "
                      f"(yours {got[where]:.5g}, expected {ref[where]:.5g}); tolerance atol={atol}, rtol={rtol}")
