"""Checks for chapter "Classical registration" (``book/04_classical.ipynb``).

``check_diffusion`` and ``check_bending`` compare a student's regulariser with
:func:`dipreg.methods.classical.diffusion` and :func:`dipreg.methods.classical.bending` on random (N, 2, H, W)
fields, insist that the result stays differentiable (a PyTorch tensor with a gradient), and name
the usual slips: averaging over the channels too, central instead of forward differences, a
missing mixed term or factor 2, the squared Laplacian instead of the bending energy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from dipreg.methods.classical import bending, diffusion
from dipreg.teaching.checks import CheckFailed
from dipreg.teaching.checks.cases import random_shape, run_with_alternatives

__all__ = ["check_bending", "check_diffusion"]


def _field(rng: np.random.Generator) -> torch.Tensor:
    h, w = random_shape(rng, 6, 16)
    n = int(rng.integers(1, 3))
    return torch.from_numpy(rng.normal(0, 1.5, (n, 2, h, w)))


def _differentiable(fn: Callable, what: str) -> Callable:
    """Wrap ``fn`` so that a result that autograd cannot differentiate fails with a clear message."""
    def wrapped(u: torch.Tensor):
        v = u.clone().requires_grad_(True)
        out = fn(v)
        if out is not None and not (isinstance(out, torch.Tensor) and out.requires_grad):
            raise CheckFailed(f"{what}: your result is not differentiable (got {type(out).__name__}"
                              f"{'' if not isinstance(out, torch.Tensor) else ' without a gradient'}); compute "
                              "it with PyTorch operations on u, no .numpy(), .item() or .detach(), so that the "
                              "optimiser can follow its gradient")
        return out.detach() if isinstance(out, torch.Tensor) else out
    return wrapped


def _check(fn: Callable, what: str, case: Callable[[np.random.Generator], dict], trials: int,
           seed: int | None) -> bool:
    wrapped = _differentiable(fn, what)
    try:
        return run_with_alternatives(wrapped, case, what, trials=trials, seed=seed, atol=1e-9, rtol=1e-7)
    except CheckFailed as exc:
        cause = exc.__cause__
        if isinstance(cause, CheckFailed):  # our own "not differentiable" message, re-raised by run_with_alternatives
            raise CheckFailed(str(cause)) from None
        raise


# --------------------------------------------------------------------------------------------------
# Exercise: the diffusion regulariser


def check_diffusion(fn: Callable, trials: int = 3, seed: int | None = None) -> bool:
    """Check ``fn(u) -> energy`` for a (N, 2, H, W) tensor: the diffusion energy of
    :func:`dipreg.methods.classical.diffusion`.

    ``mean over pixels of sum over channels of (forward difference along rows)**2`` plus the same
    along columns; the result is a scalar tensor that autograd can differentiate.
    """
    def case(rng: np.random.Generator) -> dict:
        u = _field(rng)
        dr = u[:, :, 1:, :] - u[:, :, :-1, :]
        dc = u[:, :, :, 1:] - u[:, :, :, :-1]
        gr = torch.gradient(u, dim=2)[0]
        gc = torch.gradient(u, dim=3)[0]
        pad_r = torch.nn.functional.pad(dr, (0, 0, 0, 1))
        pad_c = torch.nn.functional.pad(dc, (0, 1, 0, 0))
        alts = [
            ("you averaged over the two channels as well, which halves the energy: sum the squared differences over "
             "the channels, then take the mean over pixels", dr.pow(2).mean() + dc.pow(2).mean()),
            ("only the differences along rows are included; add the differences along columns",
             dr.pow(2).sum(1).mean()),
            ("only the differences along columns are included; add the differences along rows",
             dc.pow(2).sum(1).mean()),
            ("the differences are not squared: the diffusion energy is a sum of *squared* differences",
             dr.abs().sum(1).mean() + dc.abs().sum(1).mean()),
            ("this is the total sum, not the mean over pixels", dr.pow(2).sum() + dc.pow(2).sum()),
            ("there is an extra factor 1/2: dipreg's diffusion energy has none",
             0.5 * (dr.pow(2).sum(1).mean() + dc.pow(2).sum(1).mean())),
            ("you used central differences (torch.gradient / np.gradient); use forward differences "
             "u[..., 1:, :] - u[..., :-1, :] (and the same along columns)",
             gr.pow(2).sum(1).mean() + gc.pow(2).sum(1).mean()),
            ("the forward differences were padded to the full image size before the mean; average over the "
             "(H - 1) x W and H x (W - 1) differences that exist",
             pad_r.pow(2).sum(1).mean() + pad_c.pow(2).sum(1).mean()),
        ]
        return {"args": (u.clone(),), "expected": diffusion(u), "alternatives": alts}

    return _check(fn, "diffusion", case, trials, seed)


# --------------------------------------------------------------------------------------------------
# Exercise: the bending energy


def check_bending(fn: Callable, trials: int = 3, seed: int | None = None) -> bool:
    """Check ``fn(u) -> energy`` for a (N, 2, H, W) tensor: the bending energy of
    :func:`dipreg.methods.classical.bending`.

    ``mean(sum_c u_rr**2) + 2 mean(sum_c u_rc**2) + mean(sum_c u_cc**2)`` with central second
    differences ``u[r+1] - 2 u[r] + u[r-1]`` along each axis and the forward mixed difference
    ``u[r+1, c+1] - u[r+1, c] - u[r, c+1] + u[r, c]``; each mean over the positions where the
    difference exists. The result is a scalar tensor that autograd can differentiate.
    """
    def case(rng: np.random.Generator) -> dict:
        u = _field(rng)
        rr = u[:, :, 2:, :] - 2 * u[:, :, 1:-1, :] + u[:, :, :-2, :]
        cc = u[:, :, :, 2:] - 2 * u[:, :, :, 1:-1] + u[:, :, :, :-2]
        rc = u[:, :, 1:, 1:] - u[:, :, 1:, :-1] - u[:, :, :-1, 1:] + u[:, :, :-1, :-1]
        lap = rr[:, :, :, 1:-1] + cc[:, :, 1:-1, :]
        gr = torch.gradient(u, dim=2)[0]
        rc_central = torch.gradient(gr, dim=3)[0]

        def energy(a, b, c, *, two=2.0, mean_c=False):
            red = (lambda t: t.pow(2).mean()) if mean_c else (lambda t: t.pow(2).sum(1).mean())
            return red(a) + two * red(b) + red(c)

        alts = [
            ("the mixed term needs the factor 2: u_rc and u_cr are equal and both count, "
             "R = u_rr**2 + 2 u_rc**2 + u_cc**2", energy(rr, rc, cc, two=1.0)),
            ("the mixed derivative u_rc is missing; without it, shears cost nothing",
             energy(rr, rc, cc, two=0.0)),
            ("you averaged over the two channels as well, which halves the energy: sum over the channels, then take "
             "the mean over positions", energy(rr, rc, cc, mean_c=True)),
            ("this is the squared Laplacian (u_rr + u_cc)**2, a different energy that does not penalise a saddle "
             "u_rr = -u_cc; dipreg's bending energy is u_rr**2 + 2 u_rc**2 + u_cc**2", lap.pow(2).sum(1).mean()),
            ("you used a central mixed difference (differentiating a central first difference); use the forward "
             "mixed difference u[r+1, c+1] - u[r+1, c] - u[r, c+1] + u[r, c]", energy(rr, rc_central, cc)),
            ("the second differences are not squared: the bending energy is a sum of *squared* second derivatives",
             rr.abs().sum(1).mean() + 2 * rc.abs().sum(1).mean() + cc.abs().sum(1).mean()),
        ]
        return {"args": (u.clone(),), "expected": bending(u), "alternatives": alts}

    return _check(fn, "bending", case, trials, seed)
