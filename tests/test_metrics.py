"""Metrics: SSIM against scikit-image, Jacobian determinants, folding, Dice, EPE."""

import warnings

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


@pytest.mark.parametrize(("kw", "sk", "pad"), [({}, {}, 3), ({"win_size": 5}, {"win_size": 5}, 2),
                                              ({"gaussian": True}, {"gaussian_weights": True, "sigma": 1.5}, 5)])
def test_ssim_of_identical_images_is_one_and_mask_averages_the_skimage_map(kw, sk, pad):
    a, b = pair(1)
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    # independent: scikit-image's local SSIM map, averaged over the masked pixels inside the border
    _, smap = structural_similarity(a, b, data_range=1.0, full=True, **sk)
    mask = np.zeros(a.shape, bool)
    mask[1:30, 10:45] = True  # reaches into the border rows/columns, which must be left out
    inner = np.zeros(a.shape, bool)
    inner[pad:-pad, pad:-pad] = True
    expected = smap[mask & inner].mean()
    assert metrics.ssim(a, b, mask=mask, **kw) == pytest.approx(expected, abs=1e-6)
    assert metrics.ssim(a, b, **kw) == pytest.approx(smap[inner].mean(), abs=1e-6)
    assert abs(expected - smap[inner].mean()) > 1e-3  # the mask does change the value


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


# ---------------------------------------------------------------------------------------------------
# Argument checks and the SSIM data range of summarize


def test_ssim_argument_checks_name_the_argument():
    a, b = pair()
    for bad in (7.0, "7", None, True):
        with pytest.raises(TypeError, match="win_size"):
            metrics.ssim(a, b, win_size=bad)
    assert metrics.ssim(a, b, win_size=np.int64(7)) == pytest.approx(metrics.ssim(a, b))
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="data_range"):
            metrics.ssim(a, b, data_range=bad)
    with pytest.raises(TypeError, match="data_range"):
        metrics.ssim(a, b, data_range="1")
    for name in ("k1", "k2"):
        with pytest.raises(ValueError, match=name):
            metrics.ssim(a, b, **{name: -0.01})
        with pytest.raises(ValueError, match=name):
            metrics.ssim(a, b, **{name: float("nan")})
    with pytest.raises(TypeError, match="gaussian"):
        metrics.ssim(a, b, gaussian="yes")
    with pytest.raises(ValueError, match="mask"):
        metrics.ssim(a, b, mask=np.ones((3, 3)))
    edge = np.zeros(a.shape, bool)
    edge[0] = True
    with pytest.raises(ValueError, match="mask: no masked pixel"):
        metrics.ssim(a, b, mask=edge)


def test_ssim_gaussian_needs_an_11_pixel_image():
    rng = np.random.default_rng(0)
    a, b = rng.random((8, 8)), rng.random((8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="gaussian.*11"):
            metrics.ssim(a, b, gaussian=True)
    a, b = pair(2, (11, 11))
    ref = structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5)
    assert metrics.ssim(a, b, gaussian=True) == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize("data_range", [2.0, 255.0, 0.5])
def test_ssim_data_range_matches_scikit_image(data_range):
    a, b = pair(4)
    ref = structural_similarity(a, b, data_range=data_range)
    assert metrics.ssim(a, b, data_range=data_range) == pytest.approx(ref, abs=1e-6)


def test_summarize_keeps_data_range_one_for_unit_images():
    a, b = pair(5)
    u = np.zeros((2,) + a.shape)
    s = metrics.summarize(a, b, b, u)
    assert s["ssim_data_range"] == 1.0
    assert s["ssim_before"] == pytest.approx(structural_similarity(a, b, data_range=1.0), abs=1e-6)
    assert s["ssim_before"] == metrics.ssim(a, b)  # bit for bit: the stored book numbers use this
    assert s["ssim_after"] == 1.0


def test_summarize_ssim_does_not_depend_on_the_intensity_scale():
    rng = np.random.default_rng(6)
    a = rng.random((40, 40))
    b = np.clip(a + 0.2 * rng.standard_normal(a.shape), 0, 1)
    a[0, 0], b[0, 0] = 0.0, 1.0  # joint range exactly [0, 1]
    u = np.zeros((2,) + a.shape)
    ref = metrics.summarize(a, b, a, u)
    for scale in (1000.0, 3.0, 4000.0):  # (SSIM's luminance term is not invariant to an offset)
        s = metrics.summarize(scale * a, scale * b, scale * a, u)
        assert s["ssim_data_range"] == pytest.approx(scale)
        assert s["ssim_before"] == pytest.approx(ref["ssim_before"], abs=1e-9)
        assert s["ssim_after"] == pytest.approx(ref["ssim_after"], abs=1e-9)
    ints = (a * 3000).astype(np.int16), (b * 3000).astype(np.int16)
    s = metrics.summarize(*ints, ints[0], u)
    expected = structural_similarity(ints[0].astype(float), ints[1].astype(float),
                                     data_range=float(max(ints[0].max(), ints[1].max()) - min(ints[0].min(),
                                                                                               ints[1].min())))
    assert s["ssim_before"] == pytest.approx(expected, abs=1e-6)
    # an explicit data range overrides the choice
    s = metrics.summarize(1000 * a, 1000 * b, 1000 * a, u, data_range=255.0)
    assert s["ssim_data_range"] == 255.0
    assert s["ssim_before"] == pytest.approx(structural_similarity(1000 * a, 1000 * b, data_range=255.0), abs=1e-6)
    with pytest.raises(ValueError, match="data_range"):
        metrics.summarize(a, b, a, u, data_range=0.0)
    # two identical constants outside [0, 1]: range 0, falls back to 1.0
    c = np.full((10, 10), 5.0)
    s = metrics.summarize(c, c, c, np.zeros((2, 10, 10)))
    assert s["ssim_data_range"] == 1.0 and s["ssim_before"] == 1.0


def test_result_metrics_passes_the_data_range():
    from dipreg.result import RegistrationResult

    a, b = pair(7)
    u = np.zeros((2,) + a.shape)
    r = RegistrationResult(warped=1000 * a, displacement=u, history=[], config={}, seconds=0.0,
                           moving=1000 * a, fixed=1000 * b)
    assert r.metrics()["ssim_data_range"] == pytest.approx(1000 * (max(a.max(), b.max()) - min(a.min(), b.min())))
    assert r.metrics(data_range=1000.0)["ssim_data_range"] == 1000.0


def test_summarize_rows_of_results_csv_do_not_gain_a_column():
    from dipreg.experiments.results import COLUMNS

    assert "ssim_data_range" not in COLUMNS


def test_summarize_checks_shapes_up_front():
    a, b = pair(0, (32, 32))
    with pytest.raises(ValueError, match="displacement.*16, 16.*32, 32"):
        metrics.summarize(a, b, a, np.zeros((2, 16, 16)))
    with pytest.raises(ValueError, match="moving_mask.*shape"):
        metrics.summarize(a, b, a, np.zeros((2, 32, 32)), moving_mask=np.ones((3, 3)), fixed_mask=np.ones((32, 32)))
    with pytest.raises(ValueError, match="fixed_mask.*shape"):
        metrics.summarize(a, b, a, np.zeros((2, 32, 32)), moving_mask=np.ones((32, 32)), fixed_mask=np.ones((3, 3)))
    with pytest.raises(ValueError, match="fixed_mask"):
        metrics.summarize(a, b, a, np.zeros((2, 32, 32)), moving_mask=np.ones((32, 32)))
    with pytest.raises(ValueError, match="reference.*16, 16"):
        metrics.summarize(a, b, a, np.zeros((2, 32, 32)), reference=np.zeros((2, 16, 16)))
    with pytest.raises(ValueError, match="warped"):
        metrics.summarize(a, b, a[:-1], np.zeros((2, 32, 32)))
    with pytest.raises(ValueError, match="moving"):
        metrics.summarize(a[:-1], b, a, np.zeros((2, 32, 32)))
    nan_mask = np.full((32, 32), np.nan)
    with pytest.raises(ValueError, match="moving_mask"):
        metrics.summarize(a, b, a, np.zeros((2, 32, 32)), moving_mask=nan_mask, fixed_mask=np.ones((32, 32)))


def test_std_log_jacobian_clip_range():
    u = np.random.default_rng(0).standard_normal((2, 12, 12))
    for bad in (0, 0.0, 1, 2, -1e-9, float("nan")):
        with pytest.raises(ValueError, match="clip"):
            metrics.std_log_jacobian(u, clip=bad)
    with pytest.raises(TypeError, match="clip"):
        metrics.std_log_jacobian(u, clip="1e-9")
    assert metrics.std_log_jacobian(u, clip=0.5) > 0


@pytest.mark.parametrize("shape", [(2, 1, 5), (2, 5, 1), (2, 1, 1)])
def test_jacobian_needs_two_pixels_per_axis(shape):
    with pytest.raises(ValueError, match="displacement.*2 x 2"):
        metrics.jacobian_determinant(np.zeros(shape))
    with pytest.raises(ValueError, match="displacement"):
        metrics.folded_fraction(np.zeros(shape))
    assert metrics.jacobian_determinant(np.zeros((2, 2, 2))).shape == (2, 2)


def test_empty_masks_raise_for_averages_and_give_nan_for_dice():
    u = np.zeros((2, 10, 10))
    empty = np.zeros((10, 10), bool)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="mask.*empty"):
            metrics.folded_fraction(u, mask=empty)
        with pytest.raises(ValueError, match="mask.*empty"):
            metrics.std_log_jacobian(u, mask=empty)
        with pytest.raises(ValueError, match="mask.*empty"):
            metrics.endpoint_error(u, u, mask=empty)
        with pytest.raises(ValueError, match="mask"):
            metrics.ssim(np.ones((10, 10)), np.ones((10, 10)), mask=empty)
        assert np.isnan(metrics.dice(empty, empty))
    one = empty.copy()
    one[4, 4] = True
    assert metrics.folded_fraction(u, mask=one) == 0.0
    assert metrics.endpoint_error(u, u + 1.0, mask=one) == pytest.approx(np.sqrt(2))


def test_masks_refuse_nan_and_non_binary_values():
    ones = np.ones((6, 6))
    nan_mask = np.full((6, 6), np.nan)
    with pytest.raises(ValueError, match="a:.*0/1"):
        metrics.dice(nan_mask, ones)
    with pytest.raises(ValueError, match="b:.*0/1"):
        metrics.dice(ones, 0.3 * ones)
    with pytest.raises(TypeError, match="a:"):
        metrics.dice(np.full((6, 6), "x"), ones)
    with pytest.raises(ValueError, match="must match"):
        metrics.dice(ones, np.ones((5, 5)))
    assert metrics.dice(ones, ones.astype(np.uint8)) == 1.0
    u = np.zeros((2, 6, 6))
    for fn in (lambda m: metrics.folded_fraction(u, mask=m), lambda m: metrics.std_log_jacobian(u, mask=m),
               lambda m: metrics.endpoint_error(u, u, mask=m)):
        with pytest.raises(ValueError, match="mask"):
            fn(nan_mask)
        with pytest.raises(ValueError, match="mask.*shape"):
            fn(np.ones((5, 6), bool))


@pytest.mark.parametrize("sd", [0.01, 0.05, 0.2])
def test_noise_sd_finds_added_white_noise(sd):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:128, :160]
    smooth = 0.3 + 0.002 * yy + 0.001 * xx  # a linear ramp: the kernel cancels it
    noisy = smooth + rng.normal(0, sd, smooth.shape)
    assert metrics.noise_sd(noisy) == pytest.approx(sd, rel=0.05)
    inner = np.zeros(smooth.shape, bool)
    inner[20:60, 30:90] = True
    assert metrics.noise_sd(noisy, inner) == pytest.approx(sd, rel=0.1)
    assert metrics.noise_sd(smooth) == pytest.approx(0, abs=1e-12)


def test_noise_sd_refuses_what_it_cannot_measure():
    with pytest.raises(ValueError, match="3 x 3"):
        metrics.noise_sd(np.zeros((2, 5)))
    border = np.zeros((8, 8), bool)
    border[0] = True
    with pytest.raises(ValueError, match="border"):
        metrics.noise_sd(np.zeros((8, 8)), border)
