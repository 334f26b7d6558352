"""Checks for the exercises of the chapters "The deep image prior" (``book/05_deep_image_prior.ipynb``)
and "Registration with a deep image prior" (``book/07_dip_registration.ipynb``).

Every check calls the student's function and dipreg's reference on fresh random input. When they
disagree it compares the student's answer with a list of *typical wrong answers* computed on the same
input (natural log instead of log10, MSE instead of MAE, the fixed image warped instead of the moving
one, ...) and names the mistake that fits all trials.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from dipreg.checks import CheckFailed, _to_numpy, compare
from dipreg.transform import warp_tensor

Variants = dict[str, Any]
"""Typical wrong answers for one input: ``{diagnosis: what a function with that mistake returns}``."""


def _close(got: Any, expected: Any, atol: float, rtol: float) -> bool:
    if got is None:
        return False
    try:
        a, b = _to_numpy(got).astype(float), _to_numpy(expected).astype(float)
    except (TypeError, ValueError):
        return False
    return a.shape == b.shape and bool(np.allclose(a, b, atol=atol, rtol=rtol, equal_nan=True))


def check_cases(student_fn: Callable, make_case: Callable[[np.random.Generator], tuple[tuple, Any, Variants]],
                what: str, *, trials: int = 3, seed: int | None = None, atol: float = 1e-5, rtol: float = 1e-4,
                diagnoses: Sequence = ()) -> bool:
    """Run ``student_fn`` on ``trials`` random cases and diagnose a wrong answer by its typical mistakes.

    ``make_case(rng)`` returns ``(args, reference_output, variants)``. The check passes when every output
    matches the reference. Otherwise the first variant that matches the student's output in *every*
    trial (then: in every failing trial) names the mistake; failing that, :func:`dipreg.checks.compare`
    describes the first failing trial (with the generic ``diagnoses``). Returns ``False`` with a hint
    while the function raises NotImplementedError, like :func:`dipreg.checks.run_check`.
    """
    rng = np.random.default_rng(seed)
    runs: list[tuple[Any, Any, Variants]] = []
    for trial in range(trials):
        args, expected, variants = make_case(rng)
        try:
            got = student_fn(*args)
        except NotImplementedError:
            print(f"{what}: not implemented yet - replace the `raise NotImplementedError` with your code.")
            return False
        except CheckFailed:
            raise
        except Exception as exc:
            raise CheckFailed(f"{what}: your function raised {type(exc).__name__}: {exc} (trial {trial + 1})") from exc
        runs.append((got, expected, variants))
    failing = [i for i, (got, expected, _) in enumerate(runs) if not _close(got, expected, atol, rtol)]
    if not failing:
        print(f"{what}: correct on {trials} random inputs.")
        return True
    for subset in (range(trials), failing):
        for hint in runs[failing[0]][2]:
            if all(_close(runs[i][0], runs[i][2][hint], atol, rtol) for i in subset):
                raise CheckFailed(f"{what}: {hint}")
    i = failing[0]
    got, expected = runs[i][0], runs[i][1]
    label = f"{what} (trial {i + 1}/{trials})"
    if got is not None and np.ndim(_to_numpy(expected)) == 0:
        try:
            arr = _to_numpy(got).astype(float)
        except (TypeError, ValueError):
            raise CheckFailed(f"{label}: expected a single number, got a {type(got).__name__}") from None
        if arr.shape != ():
            raise CheckFailed(f"{label}: return a scalar (a single number, shape ()), got shape {arr.shape}")
        value = float(arr)
        raise CheckFailed(f"{label}: you returned {value:.6g}, expected {float(_to_numpy(expected)):.6g}")
    compare(got, expected, label, atol=atol, rtol=rtol, diagnoses=diagnoses)
    raise CheckFailed(f"{label}: wrong answer")  # only reached when compare() accepts what _close() did not


def _not_implemented(what: str) -> bool:
    print(f"{what}: not implemented yet - replace the `raise NotImplementedError` with your code.")
    return False


# ---------------------------------------------------------------------------------------------------
# Chapter 5: PSNR


def reference_psnr(estimate: np.ndarray, reference: np.ndarray, data_range: float = 1.0) -> float:
    """``10 log10(data_range**2 / mean((estimate - reference)**2))`` in dB."""
    mse = np.mean((np.asarray(estimate, float) - np.asarray(reference, float)) ** 2)
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


def check_psnr(fn: Callable[[np.ndarray, np.ndarray, float], float], *, seed: int | None = None) -> bool:
    """Check ``fn(estimate, reference, data_range) -> PSNR in dB`` against the definition."""
    return check_cases(fn, _psnr_case, "psnr", trials=3, seed=seed, atol=1e-6, rtol=1e-6)


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


# ---------------------------------------------------------------------------------------------------
# Chapter 7: the registration objective (paper eq. 2) and the stopping rule


def reference_registration_loss(moving: torch.Tensor, fixed: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The data term of eq. 2: ``mean |moving(x + u(x)) - fixed(x)|`` with u in pixels, (1, 2, H, W)."""
    return (warp_tensor(moving, u) - fixed).abs().mean()


def _smooth(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    out = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape[1:]), sigma) for _ in range(shape[0])])
    return out / np.abs(out).max()


def _loss_case(rng: np.random.Generator) -> tuple[tuple, torch.Tensor, Variants]:
    h, w = int(rng.integers(20, 28)), int(rng.integers(29, 36))
    moving = _smooth(rng, (1, h, w), 1.5) * 0.5 + 0.5
    fixed = _smooth(rng, (1, h, w), 1.5) * 0.5 + 0.5
    u = _smooth(rng, (2, h, w), 3.0) * rng.uniform(1.5, 3.0)
    m, f = (torch.tensor(a[None], dtype=torch.float32) for a in (moving, fixed))
    u_t = torch.tensor(u[None], dtype=torch.float32, requires_grad=True)

    def loss(mov, fix, disp, kind="mae"):
        d = warp_tensor(mov, disp) - fix
        return (d.abs().mean() if kind == "mae" else d.pow(2).mean()).detach()

    scale = torch.tensor([(h - 1) / 2.0, (w - 1) / 2.0]).view(1, 2, 1, 1)
    ud = u_t.detach()
    variants = {
        "that is the mean *squared* error; the paper's data term is the mean *absolute* error": loss(m, f, ud, "mse"),
        "you warped the fixed image onto the moving one; eq. 2 warps the moving image I and compares it with T":
            loss(f, m, ud),
        "the displacement has the wrong sign: the warp samples the moving image at x + u(x)": loss(m, f, -ud),
        "channels 0 and 1 of u are swapped: channel 0 moves along rows, channel 1 along columns":
            loss(m, f, ud.flip(1)),
        "u was treated as normalised [-1, 1] coordinates; it is in pixels (use dipreg.transform.warp_tensor, or "
        "scale by 2 / (n - 1))": loss(m, f, ud * scale),
        "nothing was warped: the loss must compare the *warped* moving image with the fixed one":
            (m - f).abs().mean(),
    }
    return (m, f, u_t), reference_registration_loss(m, f, u_t).detach(), variants


def check_registration_loss(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], *,
                            seed: int | None = None) -> bool:
    """Check ``fn(moving, fixed, u) -> scalar tensor``: the eq. 2 data term, differentiable in ``u``.

    ``moving`` and ``fixed`` are (1, 1, H, W) tensors, ``u`` a (1, 2, H, W) displacement in pixels that
    requires grad. Beyond the value, the check makes sure the gradient reaches ``u``: a loss computed
    in numpy, or on a detached tensor, could not train the generator.
    """
    what = "registration loss"
    calls: list[tuple[tuple, Any]] = []

    def recording(m, f, u):
        out = fn(m, f, u)
        calls.append(((m, f, u), out))
        return out.detach() if isinstance(out, torch.Tensor) else out

    ok = check_cases(recording, _loss_case, what, trials=3, seed=seed, atol=1e-5, rtol=1e-4)
    if not ok:
        return False
    (m, f, u), out = calls[-1]
    if not isinstance(out, torch.Tensor):
        raise CheckFailed(f"{what}: the value is right but you returned a {type(out).__name__}; return the torch "
                          "tensor, so that loss.backward() can reach the generator's weights")
    if out.ndim != 0:
        raise CheckFailed(f"{what}: return a scalar (0-d) tensor, got shape {tuple(out.shape)}")
    if not out.requires_grad:
        raise CheckFailed(f"{what}: the value is right but it does not depend on u in autograd (a .detach(), "
                          ".item(), .numpy() or torch.no_grad() on the way?): no gradient could reach theta")
    (grad,) = torch.autograd.grad(out, u)
    u2 = u.detach().clone().requires_grad_(True)
    (ref_grad,) = torch.autograd.grad(reference_registration_loss(m, f, u2), u2)
    compare(grad, ref_grad, f"{what}: the gradient with respect to u", atol=1e-6, rtol=1e-3, diagnoses=())
    return True


def reference_stopping_iteration(losses: Sequence[float], patience: int, min_delta: float) -> int:
    """How many iterations :func:`dipreg.register` runs on this loss sequence (its ``patience`` rule).

    After each iteration the loss counts as an improvement when it is below the best loss *so far* by more
    than ``min_delta``; after ``patience`` iterations in a row without improvement the run stops (that
    iteration included). ``patience=0`` never stops early.
    """
    best, since = np.inf, 0
    for it, value in enumerate(losses):
        if value < best - min_delta:
            best, since = value, 0
        else:
            since += 1
            if patience and since >= patience:
                return it + 1
    return len(losses)


def _stopping_case(rng: np.random.Generator) -> tuple[tuple, int, Variants]:
    n = 80
    t = np.arange(n)
    losses = 0.1 + 0.3 * np.exp(-t / rng.uniform(8, 20)) + rng.uniform(0.001, 0.004) * rng.standard_normal(n)
    losses = [float(v) for v in losses]
    patience = int(rng.integers(3, 8))
    min_delta = float(rng.choice([1e-3, 2e-3]))

    def variant(compare_to_previous=False, delta=min_delta, extra=0, reset_on_any=False):
        best, prev, since = np.inf, np.inf, 0
        for it, value in enumerate(losses):
            anchor = prev if compare_to_previous else best
            if value < anchor - delta:
                best, since = min(best, value), 0
            else:
                since += 1
                if since >= patience + extra:
                    return it + 1
            prev = value
        return n

    variants = {
        "you compare each loss with the previous one; compare it with the best loss so far":
            variant(compare_to_previous=True),
        "min_delta is ignored: an improvement must beat the best loss by more than min_delta": variant(delta=0.0),
        "off by one: the run stops once `patience` iterations in a row brought no improvement (`>=`, not `>`)":
            variant(extra=1),
        "off by one: it stops one iteration early; count `patience` non-improving iterations, then stop":
            variant(extra=-1),
    }
    expected = reference_stopping_iteration(losses, patience, min_delta)
    variants["return the number of iterations run (the 0-based index of the last one + 1), not the index"] = \
        expected - 1
    return (losses, patience, min_delta), expected, variants


def check_stopping_iteration(fn: Callable[[Sequence[float], int, float], int], *, seed: int | None = None) -> bool:
    """Check ``fn(losses, patience, min_delta) -> iterations run`` against the rule of :func:`dipreg.register`."""
    return check_cases(fn, _stopping_case, "stopping iteration", trials=6, seed=seed, atol=0, rtol=0)


# ---------------------------------------------------------------------------------------------------
# Chapter 7: scaling and squaring

def _velocity_case(rng: np.random.Generator) -> tuple[tuple, torch.Tensor, Variants]:
    from dipreg.transform import integrate_velocity

    h, w = int(rng.integers(18, 30)), int(rng.integers(18, 30))
    amp = rng.uniform(2.0, 5.0)
    v = torch.from_numpy(np.stack([_smooth(rng, (h, w), 4.0), _smooth(rng, (h, w), 4.0)])[None] * amp)
    steps = int(rng.integers(3, 7))

    def squarings(u: torch.Tensor, k: int, *, padding: str = "border", add: bool = True) -> torch.Tensor:
        for _ in range(k):
            u = (u if add else 0) + warp_tensor(u, u, padding_mode=padding)
        return u

    variants: Variants = {
        "v was not scaled down first: start from u_0 = v / 2**steps, then compose `steps` times":
            squarings(v, steps),
        "scale by 2**steps, not by steps: u_0 = v / 2**steps": squarings(v / steps, steps),
        "one squaring too few: after u_0 = v / 2**steps compose exactly `steps` times":
            squarings(v / 2**steps, steps - 1),
        "one squaring too many: after u_0 = v / 2**steps compose exactly `steps` times":
            squarings(v / 2**steps, steps + 1),
        "the composition lost its first term: u_(k+1)(x) = u_k(x) + u_k(x + u_k(x)), not u_k(x + u_k(x)) alone":
            squarings(v / 2**steps, steps, add=False),
        "each squaring only doubled u (2 u_k): that is v again; sample u_k at x + u_k(x) to compose":
            v.clone(),
        "sample u_k with padding_mode='border' (dipreg.transform.compose does): with zeros padding the field "
        "collapses to zero where x + u_k(x) leaves the grid": squarings(v / 2**steps, steps, padding="zeros"),
    }
    return (v.clone(), steps), integrate_velocity(v, steps), variants


def check_integrate_velocity(fn: Callable[[torch.Tensor, int], torch.Tensor], *, seed: int | None = None) -> bool:
    """Check ``fn(v, steps)``: scaling and squaring of a (1, 2, H, W) velocity in pixels, as
    :func:`dipreg.transform.integrate_velocity`."""
    return check_cases(fn, _velocity_case, "integrate_velocity", trials=3, seed=seed, atol=1e-8, rtol=1e-6)
