"""Metrics: SSIM against scikit-image, Jacobian determinants, folding, Dice, EPE."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.metrics import structural_similarity

from dipreg import metrics


def pair(seed=0, shape=(48, 40)):
    rng = np.random.default_rng(seed)
    a = rng.random(shape)
    return a, np.clip(a + 0.2 * rng.standard_normal(shape), 0, 1)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), win=st.sampled_from([3, 5, 7, 9]))
def test_ssim_matches_scikit_image(seed, win):
    a, b = pair(seed)
    ref = structural_similarity(a, b, data_range=1.0, win_size=win)
    assert metrics.ssim(a, b, win_size=win) == pytest.approx(ref, abs=1e-6)


def test_ssim_gaussian_matches_scikit_image():
    a, b = pair(3)
    ref = structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5)
    assert metrics.ssim(a, b, gaussian=True) == pytest.approx(ref, abs=1e-6)


def test_ssim_of_identical_images_is_one_and_mask_restricts():
    a, b = pair(1)
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    mask = np.zeros(a.shape, bool)
    mask[10:30, 10:30] = True
    assert metrics.ssim(a, b, mask=mask) != pytest.approx(metrics.ssim(a, b), abs=1e-9)


def test_ssim_rejects_bad_window_and_shapes():
    a, b = pair()
    with pytest.raises(ValueError, match="win_size"):
        metrics.ssim(a, b, win_size=4)
    with pytest.raises(ValueError, match="must match"):
        metrics.ssim(a, b[:-1])


@pytest.mark.parametrize("matrix", [[[1.2, 0.3], [-0.1, 0.9]], [[0.5, 0.0], [0.0, 2.0]], [[-1.0, 0.0], [0.0, 1.0]]])
def test_det_j_of_affine_field_is_matrix_determinant(matrix):
    a = np.array(matrix)
    grid = np.mgrid[:20, :30].astype(float)
    phi = np.einsum("ij,jhw->ihw", a, grid) + np.array([3.0, -2.0])[:, None, None]
    det = metrics.jacobian_determinant(phi - grid)
    np.testing.assert_allclose(det, np.linalg.det(a), atol=1e-10)
    assert metrics.folded_fraction(phi - grid) == (1.0 if np.linalg.det(a) <= 0 else 0.0)


def test_std_log_jacobian_zero_for_identity():
    assert metrics.std_log_jacobian(np.zeros((2, 10, 10))) == 0.0


def test_dice():
    a = np.zeros((10, 10), bool)
    a[:5] = True
    b = np.zeros((10, 10), bool)
    b[2:7] = True
    assert metrics.dice(a, b) == pytest.approx(0.6)
    assert np.isnan(metrics.dice(np.zeros((3, 3)), np.zeros((3, 3))))


def test_endpoint_error():
    u = np.zeros((2, 5, 5))
    r = np.zeros((2, 5, 5))
    r[0] = 3.0
    r[1] = 4.0
    assert metrics.endpoint_error(u, r) == pytest.approx(5.0)


def test_summarize_keys():
    a, b = pair()
    mask = a > 0.5
    s = metrics.summarize(a, b, a, np.zeros((2,) + a.shape), moving_mask=mask, fixed_mask=mask,
                          reference=np.zeros((2,) + a.shape))
    assert s["jac_mean"] == 1.0 and s["folded_fraction"] == 0.0 and s["dice_after"] == 1.0 and s["epe"] == 0.0
