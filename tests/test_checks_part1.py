"""The exercise checks of chapters 2-4 (``dipreg.teaching.checks.problem``, ``.warping``, ``.classical``).

Every check must (1) pass dipreg's own reference, (2) report "not implemented" and return False for
the notebook stub, and (3) raise CheckFailed naming the right mistake for the typical wrong answers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dipreg.losses import lncc, mae, mse
from dipreg.methods.classical import bending, diffusion
from dipreg.metrics import jacobian_determinant
from dipreg.teaching.checks import CheckFailed
from dipreg.teaching.checks import classical as cc
from dipreg.teaching.checks import problem as pc
from dipreg.teaching.checks import warping as wc
from dipreg.teaching.checks.cases import compare_with_alternatives
from dipreg.transform import identity_grid, pixel_to_normalized, sampling_grid, warp_tensor


def stub(*args):
    raise NotImplementedError


# --- reference implementations a student could write -------------------------------------------


def bilinear(image, rows, cols):
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    a, b = rows - r0, cols - c0
    return ((1 - a) * (1 - b) * image[r0, c0] + (1 - a) * b * image[r0, c0 + 1]
            + a * (1 - b) * image[r0 + 1, c0] + a * b * image[r0 + 1, c0 + 1])


def p2n(points, shape, *, align=True, order="xy"):
    h, w = shape
    if align:
        rows, cols = 2 * points[0] / (h - 1) - 1, 2 * points[1] / (w - 1) - 1
    else:
        rows, cols = (2 * points[0] + 1) / h - 1, (2 * points[1] + 1) / w - 1
    return torch.stack((cols, rows) if order == "xy" else (rows, cols), dim=-1)


def warp_manual(image, u, *, align=True, sign=1.0, scale=True):
    n, _, h, w = u.shape
    base = identity_grid((h, w), dtype=u.dtype)
    if scale:
        grid = pixel_to_normalized(base[:, None] + sign * u.transpose(0, 1), (h, w))
    else:
        grid = pixel_to_normalized(base, (h, w))[None] + sign * u.flip(1).permute(0, 2, 3, 1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=align)


def ssd_grad(moving, fixed, u, loss=mse):
    v = u.detach().clone().requires_grad_(True)
    loss(warp_tensor(moving[None, None], v[None]), fixed[None, None]).backward()
    return v.grad


def jac_det(u, *, identity=True, swap_axes=False):
    (a, b), (c, d) = np.gradient(u[0]), np.gradient(u[1])
    if swap_axes:
        a, b, c, d = b, a, d, c
    one = 1.0 if identity else 0.0
    return (one + a) * (one + d) - b * c


def lncc_manual(warped, fixed, window=9, *, squared=True):
    kernel = torch.ones(1, 1, window, window, dtype=warped.dtype) / window**2

    def box(x):
        return F.conv2d(x, kernel, padding=window // 2)

    mw, mf = box(warped), box(fixed)
    vw, vf = box(warped * warped) - mw**2, box(fixed * fixed) - mf**2
    cov = box(warped * fixed) - mw * mf
    if squared:
        return 1 - (cov**2 / (vw.clamp_min(0) * vf.clamp_min(0) + 1e-5)).mean()
    return 1 - (cov / torch.sqrt(vw.clamp_min(0) * vf.clamp_min(0) + 1e-5)).mean()


def fwd_diffusion(u, *, mean_channels=False, central=False):
    if central:
        dr, dc = torch.gradient(u, dim=2)[0], torch.gradient(u, dim=3)[0]
    else:
        dr, dc = u[:, :, 1:] - u[:, :, :-1], u[..., 1:] - u[..., :-1]
    if mean_channels:
        return dr.pow(2).mean() + dc.pow(2).mean()
    return dr.pow(2).sum(1).mean() + dc.pow(2).sum(1).mean()


def bend(u, *, two=2.0, laplacian=False):
    rr = u[:, :, 2:, :] - 2 * u[:, :, 1:-1, :] + u[:, :, :-2, :]
    cc_ = u[:, :, :, 2:] - 2 * u[:, :, :, 1:-1] + u[:, :, :, :-2]
    rc = u[:, :, 1:, 1:] - u[:, :, 1:, :-1] - u[:, :, :-1, 1:] + u[:, :, :-1, :-1]
    if laplacian:
        return (rr[:, :, :, 1:-1] + cc_[:, :, 1:-1, :]).pow(2).sum(1).mean()
    return rr.pow(2).sum(1).mean() + two * rc.pow(2).sum(1).mean() + cc_.pow(2).sum(1).mean()


# --- (1) and (2): references pass, stubs are "not implemented" ---------------------------------

CHECKS = [
    (wc.check_bilinear_sample, bilinear),
    (wc.check_pixel_to_normalized, pixel_to_normalized),
    (wc.check_warp, warp_tensor),
    (wc.check_ssd_gradient, ssd_grad),
    (pc.check_lncc, lncc),
    (pc.check_jacobian_determinant, jacobian_determinant),
    (cc.check_diffusion, diffusion),
    (cc.check_bending, bending),
]


@pytest.mark.parametrize("check, reference", CHECKS, ids=[c.__name__ for c, _ in CHECKS])
def test_reference_passes(check, reference, capsys):
    for seed in (0, 1, 2):
        assert check(reference, seed=seed) is True
    assert "correct" in capsys.readouterr().out


@pytest.mark.parametrize("check, reference", CHECKS, ids=[c.__name__ for c, _ in CHECKS])
def test_stub_is_not_implemented(check, reference, capsys):
    assert check(stub) is False
    assert "not implemented yet" in capsys.readouterr().out


def test_students_own_correct_versions_pass():
    assert wc.check_pixel_to_normalized(p2n, seed=3)
    assert wc.check_warp(warp_manual, seed=3)
    assert pc.check_lncc(lncc_manual, seed=3)
    assert pc.check_jacobian_determinant(jac_det, seed=3)
    assert cc.check_diffusion(fwd_diffusion, seed=3)
    assert cc.check_bending(bend, seed=3)


# --- (3) typical mistakes get the right diagnosis ------------------------------------------------


def fails_with(check, fn, pattern, seed=0):
    with pytest.raises(CheckFailed, match=pattern):
        check(fn, seed=seed)


def test_bilinear_mistakes():
    fails_with(wc.check_bilinear_sample, lambda im, r, c: im[np.round(r).astype(int), np.round(c).astype(int)],
               "nearest-neighbour")
    fails_with(wc.check_bilinear_sample, lambda im, r, c: im[np.floor(r).astype(int), np.floor(c).astype(int)],
               "without interpolating")

    def swapped_weights(im, r, c):
        return bilinear(im, r, c) * 0 + (
            lambda r0, c0, a, b: a * b * im[r0, c0] + a * (1 - b) * im[r0, c0 + 1]
            + (1 - a) * b * im[r0 + 1, c0] + (1 - a) * (1 - b) * im[r0 + 1, c0 + 1]
        )(np.floor(r).astype(int), np.floor(c).astype(int), r - np.floor(r), c - np.floor(c))

    fails_with(wc.check_bilinear_sample, swapped_weights, "weights are swapped")
    fails_with(wc.check_bilinear_sample, lambda im, r, c: 1 / 0, "raised ZeroDivisionError")


def test_pixel_to_normalized_mistakes():
    fails_with(wc.check_pixel_to_normalized, lambda p, s: p2n(p, s, align=False), r"align_corners=False convention")
    fails_with(wc.check_pixel_to_normalized, lambda p, s: p2n(p, s, align=False, order="rc"),
               r"align_corners=False convention.*\(x, y\)")
    fails_with(wc.check_pixel_to_normalized, lambda p, s: p2n(p, s, order="rc"), r"\(x, y\) = \(column, row\)")
    fails_with(wc.check_pixel_to_normalized, lambda p, s: p2n(p, s).movedim(-1, 0), "coordinate axis must be last")
    fails_with(wc.check_pixel_to_normalized,
               lambda p, s: torch.stack((2 * p[1] / s[1] - 1, 2 * p[0] / s[0] - 1), -1), "divided by n")
    fails_with(wc.check_pixel_to_normalized,
               lambda p, s: torch.stack((2 * p[1] / (s[1] - 1), 2 * p[0] / (s[0] - 1)), -1), "'- 1' is missing")
    fails_with(wc.check_pixel_to_normalized, lambda p, s: None, "returned None")


def test_warp_mistakes():
    fails_with(wc.check_warp, lambda im, u: warp_manual(im, u, sign=-1.0), "pull-back")
    fails_with(wc.check_warp, lambda im, u: warp_tensor(im, u.flip(1)), "channels 0 and 1 of u are swapped")
    fails_with(wc.check_warp, lambda im, u: warp_manual(im, u, align=False), "align_corners mismatch")
    fails_with(wc.check_warp, lambda im, u: F.grid_sample(im, sampling_grid(u).flip(-1), align_corners=True),
               r"\(row, col\)")
    fails_with(wc.check_warp, lambda im, u: warp_manual(im, u, scale=False), "added in pixels")
    fails_with(wc.check_warp, lambda im, u: warp_tensor(im, u, mode="nearest"), "mode='nearest'")
    fails_with(wc.check_warp, lambda im, u: warp_tensor(im, u, padding_mode="border"), "padding_mode='border'")


def test_ssd_gradient_mistakes():
    fails_with(wc.check_ssd_gradient, lambda m, f, u: -ssd_grad(m, f, u), "wrong sign")
    fails_with(wc.check_ssd_gradient, lambda m, f, u: ssd_grad(m, f, u) * m.numel(), r"\*sum\*")
    fails_with(wc.check_ssd_gradient, lambda m, f, u: ssd_grad(m, f, u, loss=mae), "mean absolute error")
    fails_with(wc.check_ssd_gradient, lambda m, f, u: ssd_grad(m, f, u)[None], "drop the batch axis")


def test_lncc_mistakes():
    fails_with(pc.check_lncc, lambda a, b, w: 1 - lncc(a, b, w), "lower-is-better")
    fails_with(pc.check_lncc, lambda a, b, w: lncc_manual(a, b, w, squared=False), "not squared")
    fails_with(pc.check_lncc, lambda a, b, w: torch.tensor(0.5, dtype=torch.float64), "yours 0.5, expected")


def test_jacobian_determinant_mistakes():
    fails_with(pc.check_jacobian_determinant, lambda u: jac_det(u, identity=False), r"J_phi = I \+ grad u")
    fails_with(pc.check_jacobian_determinant, lambda u: jac_det(u, swap_axes=True), "rows and columns are mixed up")
    fails_with(pc.check_jacobian_determinant, lambda u: jac_det(u[::-1]), "channels 0 and 1 of u are swapped")
    fails_with(pc.check_jacobian_determinant, lambda u: jac_det(u).T, r"shape .* expected")

    def forward(u):
        (a, b), (c, d) = [[np.diff(x, axis=k, append=np.take(x, [-1], axis=k)) for k in (0, 1)] for x in u]
        return (1 + a) * (1 + d) - b * c

    fails_with(pc.check_jacobian_determinant, forward, "forward differences")


@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
def test_diffusion_mistakes():
    fails_with(cc.check_diffusion, lambda u: fwd_diffusion(u, mean_channels=True), "averaged over the two channels")
    fails_with(cc.check_diffusion, lambda u: fwd_diffusion(u, central=True), "central differences")
    fails_with(cc.check_diffusion, lambda u: (u[:, :, 1:] - u[:, :, :-1]).pow(2).sum(1).mean(),
               "only the differences along rows")
    fails_with(cc.check_diffusion, lambda u: float(diffusion(u)), "not differentiable")
    fails_with(cc.check_diffusion, lambda u: diffusion(u).detach(), "not differentiable")


def test_bending_mistakes():
    fails_with(cc.check_bending, lambda u: bend(u, two=1.0), "needs the factor 2")
    fails_with(cc.check_bending, lambda u: bend(u, two=0.0), "mixed derivative u_rc is missing")
    fails_with(cc.check_bending, lambda u: bend(u, laplacian=True), "squared Laplacian")
    fails_with(cc.check_bending, lambda u: bend(u).detach().numpy(), "not differentiable")


def test_compare_with_alternatives_prefers_the_specific_hint():
    ref = np.arange(6.0).reshape(2, 3)
    with pytest.raises(CheckFailed, match="special"):
        compare_with_alternatives(-ref, ref, "x", [("special", -ref)])
    with pytest.raises(CheckFailed, match="sign is flipped"):  # falls back to the generic diagnoses
        compare_with_alternatives(-ref, ref, "x")
    compare_with_alternatives(torch.tensor([2.0]), np.float64(2.0), "scalar")  # a 1-element result is a scalar
