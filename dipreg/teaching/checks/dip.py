"""Checks for the exercises of the chapter "Registration with a deep image prior"
(``book/07_dip_registration.ipynb``); those of "The deep image prior" are in :mod:`dipreg.teaching.checks.prior`.

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
import torch.nn.functional as F
from scipy import ndimage

from dipreg.teaching.checks import CheckFailed, compare, not_implemented
from dipreg.teaching.checks.cases import Variants, check_cases, close
from dipreg.transform import warp_tensor

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


# ---------------------------------------------------------------------------------------------------
# Chapter 7: the coarse control grid, resized to the image


def _grid_case(rng: np.random.Generator) -> tuple[tuple, torch.Tensor, Variants]:
    from dipreg.transform import resize_displacement

    h, w = int(rng.integers(5, 9)), int(rng.integers(9, 13))
    big = (int(rng.integers(30, 45)), int(rng.integers(60, 90)))  # different factors along the two axes
    u = torch.from_numpy(_smooth(rng, (2, h, w), 1.0) * rng.uniform(0.5, 1.5))[None]
    H, W = big

    def up(mode: str = "bilinear", align: bool | None = True) -> torch.Tensor:
        kw = {} if mode == "nearest" else {"align_corners": align}
        return F.interpolate(u, size=big, mode=mode, **kw)

    def scaled(t: torch.Tensor, rows: float, cols: float) -> torch.Tensor:
        return t * torch.tensor([rows, cols], dtype=t.dtype).view(1, 2, 1, 1)

    fr, fc = (H - 1) / (h - 1), (W - 1) / (w - 1)
    variants: Variants = {
        "the pixel units were not rescaled: a displacement of d coarse pixels is d (H - 1) / (h - 1) image pixels "
        "along the rows and d (W - 1) / (w - 1) along the columns": up(),
        "the row and column factors are swapped: channel 0 (rows) scales by (H - 1) / (h - 1), channel 1 (columns) "
        "by (W - 1) / (w - 1)": scaled(up(), fc, fr),
        "both channels were scaled by the row factor; the columns have their own, (W - 1) / (w - 1)":
            scaled(up(), fr, fr),
        "both channels were scaled by the column factor; the rows have their own, (H - 1) / (h - 1)":
            scaled(up(), fc, fc),
        "with align_corners=True the corner pixel centres coincide, so the factor is (H - 1) / (h - 1), not H / h":
            scaled(up(), H / h, W / w),
        "the factors are upside down: going to the finer grid multiplies by (H - 1) / (h - 1) > 1":
            scaled(up(), 1 / fr, 1 / fc),
        "interpolate with align_corners=True (dipreg's convention: corner pixel centres at -1 and +1 on both "
        "grids); align_corners=False shifts the field by a fraction of a pixel towards the centre":
            scaled(up(align=False), fr, fc),
        "align_corners=False with the factors H / h is a consistent convention, but not dipreg's: use "
        "align_corners=True and (H - 1) / (h - 1)": scaled(up(align=False), H / h, W / w),
        "that is nearest-neighbour interpolation; the control grid is interpolated bilinearly":
            scaled(up("nearest", None), fr, fc),
        "that is bicubic interpolation; the control grid is interpolated bilinearly": scaled(up("bicubic"), fr, fc),
        "channels 0 and 1 are swapped: dipreg puts rows in channel 0 and columns in channel 1":
            scaled(up(), fr, fc).flip(1),
    }
    return (u.clone(), big), resize_displacement(u, big), variants


def check_upsample_field(fn: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor], *,
                         seed: int | None = None) -> bool:
    """Check ``fn(u, shape)``: a (1, 2, h, w) displacement in pixels of a coarse control grid resized to
    ``shape`` = (H, W), in image pixels, as :func:`dipreg.transform.resize_displacement`."""
    return check_cases(fn, _grid_case, "upsample_field", trials=3, seed=seed, atol=1e-9, rtol=1e-7)


# ---------------------------------------------------------------------------------------------------
# Chapter 7: the optimisation loop of eq. 2, against dipreg.register


def _loop_config(iterations: int) -> Any:
    """A tiny configuration of the paper's parameterisation (generator at the image's size, output in pixels)."""
    from dipreg.presets import get_preset

    return get_preset("paper").replace(down=(4, 8), up=(4, 8), skip=2, in_channels=4, lr=0.01,
                                       iterations=iterations, readout_draws=1, normalize=False)


def _loop_images(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A blob image and a smoothly deformed copy, both in [0, 1], 24-32 px a side."""
    from dipreg.transform import warp

    shape = (int(rng.integers(24, 30)), int(rng.integers(26, 33)))
    fixed = ndimage.gaussian_filter(rng.random(shape), 2.0)
    fixed = (fixed - fixed.min()) / np.ptp(fixed)
    moving = warp(fixed, _smooth(rng, (2, *shape), 4.0) * 2.0)
    return moving, fixed


def loop_setup(moving: np.ndarray, fixed: np.ndarray, cfg: Any, seed: int) -> tuple:
    """What :func:`dipreg.register` starts from for ``cfg`` (paper parameterisation) and ``seed``: its generator
    (weights as register draws them), the images as (1, 1, H, W) tensors, and a ``draw_noise()`` that returns the
    same sequence of noise draws as register's loop."""
    from dipreg.methods.dip import make_field

    dev = torch.device("cpu")
    model = make_field(cfg, moving.shape, seed, dev)
    gen = torch.Generator().manual_seed(seed)
    m, f = (torch.as_tensor(a, dtype=torch.float32)[None, None] for a in (moving, fixed))
    return model.net, m, f, lambda: model.noise(gen, dev)


def reference_dip_loop(net: torch.nn.Module, moving: torch.Tensor, fixed: torch.Tensor,
                       draw_noise: Callable[[], torch.Tensor], iterations: int, lr: float, *,
                       zero_grad: bool = True, fresh: bool = True, warp_fixed: bool = False, sign: float = 1.0,
                       squared: bool = False, optimise_field: bool = False) -> list[float]:
    """Paper eq. 2 as a loop: Adam on ``net``'s weights, a fresh ``z = draw_noise()`` every iteration, the moving
    image warped by ``u = net(z)`` (pixels) and compared with the fixed image by the mean absolute error.
    Returns the loss of every iteration. The keywords make the typical mistakes."""
    if optimise_field:
        u = net(draw_noise()).detach().requires_grad_(True)
        params: list[torch.Tensor] = [u]
    else:
        params = list(net.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    z = None if fresh else draw_noise()
    history = []
    for _ in range(iterations):
        if not optimise_field:
            u = net(draw_noise() if fresh else z)
        source, target = (fixed, moving) if warp_fixed else (moving, fixed)
        diff = warp_tensor(source, sign * u) - target
        loss = diff.pow(2).mean() if squared else diff.abs().mean()
        if zero_grad:
            opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    return history


def _matches_reference(losses: list[float], moving: np.ndarray, fixed: np.ndarray, cfg: Any, run_seed: int,
                       **mistake: Any) -> bool:
    """Whether ``losses`` match :func:`reference_dip_loop` (with ``mistake``, one of its keywords) on the problem of
    :func:`check_dip_loop`, set up afresh by :func:`loop_setup`."""
    net, m, f, draw = loop_setup(moving, fixed, cfg, run_seed)
    reference = reference_dip_loop(net, m, f, draw, cfg.iterations, cfg.lr, **mistake)
    return close(np.array(losses), np.array(reference), 1e-6, 1e-4)


def check_dip_loop(fn: Callable[..., Sequence[float]], *, seed: int | None = None) -> bool:
    """Check ``fn(net, moving, fixed, draw_noise, iterations, lr) -> losses``: the optimisation loop of eq. 2.

    The check runs :func:`dipreg.register` on a tiny problem (the ``paper`` preset with 2 scales of 4 and 8
    channels), gives the student's loop the same generator, images and noise sequence, and compares the losses
    of every iteration with register's (or with the same loop on PyTorch's unfused Adam, which rounds differently
    from register's fused one). Before the values it checks that the loop drew one fresh noise per
    iteration and changed the network's weights; a wrong history is matched against loops with the typical
    mistakes (no zero_grad, one noise reused, the fixed image warped, x - u, MSE, the field optimised).
    """
    import warnings

    import dipreg

    what = "dip loop"
    rng = np.random.default_rng(seed)
    trials = 2
    for trial in range(trials):
        label = f"{what} (trial {trial + 1}/{trials})"
        iterations = int(rng.integers(6, 10))
        cfg = _loop_config(iterations)
        moving, fixed = _loop_images(rng)
        run_seed = int(rng.integers(0, 2**31))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = dipreg.register(moving, fixed, config=cfg, seed=run_seed, device="cpu", progress=False).history
        net, m, f, draw = loop_setup(moving, fixed, cfg, run_seed)
        before = [p.detach().clone() for p in net.parameters()]
        draws = [0]

        def counting_draw(draw: Callable[[], torch.Tensor] = draw, draws: list[int] = draws) -> torch.Tensor:
            draws[0] += 1
            return draw()

        try:
            got = fn(net, m, f, counting_draw, iterations, cfg.lr)
        except NotImplementedError:
            return not_implemented(what)
        except Exception as exc:
            raise CheckFailed(f"{label}: your function raised {type(exc).__name__}: {exc}") from exc
        if got is None:
            raise CheckFailed(f"{label}: your function returned None; return the list of the losses, one per iteration")
        try:
            losses = [float(v) for v in got]
        except (TypeError, ValueError) as exc:
            raise CheckFailed(f"{label}: return a list of numbers (loss.item() of every iteration), got "
                              f"{type(got).__name__}") from exc
        if len(losses) != iterations:
            raise CheckFailed(f"{label}: {len(losses)} losses for {iterations} iterations: record loss.item() once "
                              "per iteration")
        if all(torch.equal(p, p0) for p, p0 in zip(net.parameters(), before, strict=True)):
            raise CheckFailed(f"{label}: the network's weights never changed. Optimise the generator's weights "
                              "(torch.optim.Adam(net.parameters(), lr=lr)), not a displacement tensor, and call "
                              "zero_grad(), backward() and step() in that order")
        if draws[0] == 1:
            raise CheckFailed(f"{label}: draw_noise() was called once and the same z reused; eq. 2 draws a *fresh* "
                              "z ~ N(0, 0.1) in every iteration: call draw_noise() inside the loop")
        if draws[0] != iterations:
            raise CheckFailed(f"{label}: draw_noise() was called {draws[0]} times in {iterations} iterations; draw "
                              "exactly one fresh z per iteration and use it for that iteration's field")
        if close(np.array(losses), np.array(expected), 1e-6, 1e-4):
            continue
        # register's Adam is fused, a student's usually not: the two round differently and a few steps can amplify
        # that past the tolerance, so a match with the same loop on the unfused Adam counts as well
        if _matches_reference(losses, moving, fixed, cfg, run_seed):
            continue
        variants = {
            "the gradients accumulate over the iterations: call optimizer.zero_grad() in every iteration, before "
            "loss.backward()": dict(zero_grad=False),
            "you warped the fixed image and compared it with the moving one; eq. 2 warps the moving image I by u "
            "and compares it with the fixed image T": dict(warp_fixed=True),
            "the displacement has the wrong sign: the warp reads the moving image at x + u(x) (warp_tensor(moving, "
            "u))": dict(sign=-1.0),
            "that is the mean *squared* error; the paper's data term is the mean *absolute* error": dict(squared=True),
        }
        for hint, kw in variants.items():
            if _matches_reference(losses, moving, fixed, cfg, run_seed, **kw):
                raise CheckFailed(f"{what}: {hint}")
        if abs(losses[0] - expected[0]) <= 1e-6 + 1e-4 * abs(expected[0]):
            i = next(i for i, (a, b) in enumerate(zip(losses, expected, strict=True))
                     if abs(a - b) > 1e-6 + 1e-4 * abs(b))
            raise CheckFailed(f"{label}: the first loss is right ({losses[0]:.6f}) but iteration {i + 1} differs "
                              f"(yours {losses[i]:.6f}, dipreg.register {expected[i]:.6f}): check the update "
                              "(Adam on net.parameters() with lr, zero_grad -> backward -> step, once per iteration)")
        raise CheckFailed(f"{label}: the first loss is {losses[0]:.6f}, dipreg.register's {expected[0]:.6f}: check "
                          "the loss, mean |warp_tensor(moving, u) - fixed| with u = net(z) in pixels")
    print(f"{what}: the losses agree with dipreg.register on {trials} tiny problems.")
    return True
