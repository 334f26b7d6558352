"""dipreg.losses against independent implementations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from dipreg.losses import (
    field_penalty,
    fold_penalty,
    get_loss,
    jacobian_determinant_tensor,
    lncc,
    log_jacobian_variance,
    mae,
    mse,
)
from dipreg.metrics import jacobian_determinant


def lncc_reference(warped: np.ndarray, fixed: np.ndarray, window: int, eps: float = 1e-5) -> float:
    """1 - mean NCC^2 with scipy's box filter, zeros outside the image, channel by channel."""
    def box(x):
        return ndimage.uniform_filter(x, size=(1, 1, window, window), mode="constant", cval=0.0)

    mw, mf = box(warped), box(fixed)
    vw, vf = box(warped * warped) - mw**2, box(fixed * fixed) - mf**2
    cov = box(warped * fixed) - mw * mf
    return float(1 - (cov**2 / (np.clip(vw, 0, None) * np.clip(vf, 0, None) + eps)).mean())


@pytest.mark.parametrize(("shape", "window"), [((1, 1, 64, 48), 9), ((2, 3, 20, 31), 5), ((1, 1, 7, 7), 9)])
def test_lncc_matches_a_direct_box_filter(shape, window):
    rng = np.random.default_rng(sum(shape) + window)
    warped, fixed = rng.random(shape), rng.random(shape)
    fixed[..., : shape[-2] // 2, :] += warped[..., : shape[-2] // 2, :]  # correlated in half the image
    got = lncc(torch.from_numpy(warped), torch.from_numpy(fixed), window)
    assert float(got) == pytest.approx(lncc_reference(warped, fixed, window), abs=1e-10)


def test_lncc_ignores_a_change_of_contrast():
    """Rescaling one image's intensities does not make it match worse (the zeros outside the image rescale
    too; eps only matters in flat windows, less so at higher contrast), while a mirrored image matches badly."""
    rng = np.random.default_rng(0)
    img = ndimage.gaussian_filter(rng.random((1, 1, 64, 64)), (0, 0, 2, 2))
    img = torch.from_numpy((img - img.min()) / (img.max() - img.min()))
    same, rescaled, mirrored = (float(lncc(img, other)) for other in (img, 3.0 * img, torch.flip(img, (-1,))))
    assert rescaled <= same < 0.5 * mirrored


def test_mae_and_mse_against_numpy():
    rng = np.random.default_rng(0)
    warped, fixed = rng.normal(size=(2, 1, 9, 13)), rng.normal(size=(2, 1, 9, 13))
    w, f = torch.from_numpy(warped), torch.from_numpy(fixed)
    assert float(mae(w, f)) == pytest.approx(np.abs(warped - fixed).mean(), rel=1e-12)
    assert float(mse(w, f)) == pytest.approx(((warped - fixed) ** 2).mean(), rel=1e-12)
    assert float(mae(w, w)) == 0.0 and float(mse(w, w)) == 0.0
    # a constant offset c: MAE |c|, MSE c**2
    assert float(mae(w + 0.5, w)) == pytest.approx(0.5) and float(mse(w - 0.5, w)) == pytest.approx(0.25)
    assert get_loss("mae") is mae and get_loss("mse") is mse
    with pytest.raises(ValueError, match="loss"):
        get_loss("l1")


def smooth_field(rng: np.random.Generator, n: int, h: int, w: int, amp: float) -> np.ndarray:
    return amp * ndimage.gaussian_filter(rng.normal(size=(n, 2, h, w)), (0, 0, 2, 2))


@pytest.mark.parametrize(("h", "w", "amp"), [(16, 16, 5.0), (11, 23, 30.0), (2, 5, 1.0)])
def test_jacobian_determinant_tensor_equals_the_metric(h, w, amp):
    rng = np.random.default_rng(h * w)
    u = smooth_field(rng, 3, h, w, amp)  # amp 30 folds some pixels: the formula must agree there too
    got = jacobian_determinant_tensor(torch.from_numpy(u)).numpy()
    assert got.shape == (3, h, w)
    for k in range(3):
        np.testing.assert_allclose(got[k], jacobian_determinant(u[k]), rtol=0, atol=1e-12)


def test_jacobian_determinant_tensor_of_known_maps():
    rows, cols = np.mgrid[:8, :10].astype(float)
    scale = torch.from_numpy(np.stack([0.5 * rows, -0.25 * cols])[None])  # phi = (1.5 r, 0.75 c): det 1.125
    np.testing.assert_allclose(jacobian_determinant_tensor(scale).numpy(), 1.125, atol=1e-12)
    shear = torch.from_numpy(np.stack([2.0 * cols, 0 * cols])[None])  # phi = (r + 2c, c): det 1
    np.testing.assert_allclose(jacobian_determinant_tensor(shear).numpy(), 1.0, atol=1e-12)


def test_fold_penalty_is_zero_without_compression_and_grows_with_folding():
    rows, cols = np.mgrid[:12, :12].astype(float)
    identity = torch.zeros(1, 2, 12, 12, dtype=torch.float64)
    assert float(fold_penalty(identity)) == 0.0  # det J = 1 > margin everywhere
    squeeze = torch.from_numpy(np.stack([-0.95 * rows, 0 * cols])[None])  # det J = 0.05 everywhere
    assert float(fold_penalty(squeeze)) == pytest.approx(0.1 - 0.05)
    assert float(fold_penalty(squeeze, margin=0.01)) == 0.0
    flip = torch.from_numpy(np.stack([-2.0 * rows, 0 * cols])[None])  # det J = -1: folded
    assert float(fold_penalty(flip)) == pytest.approx(0.1 + 1.0)
    u = torch.from_numpy(smooth_field(np.random.default_rng(3), 1, 12, 12, 20.0)).requires_grad_(True)
    det = jacobian_determinant_tensor(u.detach())
    expected = torch.relu(0.1 - det).mean()
    value = fold_penalty(u)
    assert float(value.detach()) == pytest.approx(float(expected))
    value.backward()  # differentiable: the gradient pushes folded pixels apart
    assert float(value.detach()) > 0 and u.grad is not None and u.grad.abs().sum() > 0


def test_log_jacobian_variance_is_blind_to_affine_maps_and_sees_local_volume_change():
    rows, cols = np.mgrid[:16, :16].astype(float)
    affine = torch.from_numpy(np.stack([0.3 * rows + 0.2 * cols + 1.5, -0.1 * rows + 0.2 * cols])[None])
    assert float(log_jacobian_variance(affine)) == pytest.approx(0.0, abs=1e-20)  # det J constant
    u = torch.from_numpy(smooth_field(np.random.default_rng(4), 2, 16, 16, 2.0)).requires_grad_(True)
    det = jacobian_determinant_tensor(u.detach())
    value = log_jacobian_variance(u)
    expected = [torch.log(torch.clamp(d, min=0.05)).var() for d in det]
    assert float(value.detach()) == pytest.approx(float(sum(expected) / 2))  # per item, then the mean
    assert float(value.detach()) > 0
    value.backward()
    assert torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0
    flip = torch.from_numpy(np.stack([-2.0 * rows * (rows > 8), 0 * cols])[None])  # folds on half the image
    assert torch.isfinite(log_jacobian_variance(flip))  # floored: a fold does not give log(-1)


def test_field_penalty_is_the_weighted_sum_of_its_two_terms_in_value_and_gradient():
    u = torch.from_numpy(smooth_field(np.random.default_rng(5), 2, 16, 16, 8.0))
    a, b = u.clone().requires_grad_(True), u.clone().requires_grad_(True)
    joint = field_penalty(a, 10.0, 0.1)
    separate = 10.0 * fold_penalty(b) + 0.1 * log_jacobian_variance(b)
    assert float(fold_penalty(u)) > 0  # both terms act on this field
    assert float(joint.detach()) == pytest.approx(float(separate.detach()), rel=1e-12)
    joint.backward()
    separate.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    assert float(field_penalty(u)) == 0.0  # no weights, no penalty

