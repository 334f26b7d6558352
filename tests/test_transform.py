"""The spatial transformer: conventions, coordinate conversions, composition."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from skimage.transform import warp as sk_warp

from dipreg import warp
from dipreg.transform import (
    ALIGN_CORNERS,
    compose,
    displacement_to_normalized,
    identity_grid,
    integrate_velocity,
    normalized_to_pixel,
    pixel_to_normalized,
    resize_displacement,
    sampling_grid,
    warp_tensor,
)


def smooth_image(shape=(40, 52), seed=0):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(shape), 3)


def smooth_field(shape=(40, 52), amp=3.0, seed=1):
    rng = np.random.default_rng(seed)
    u = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), 6) for _ in range(2)])
    return amp * u / np.abs(u).max()


def test_align_corners_is_true():
    assert ALIGN_CORNERS is True


def test_identity_displacement_returns_image():
    img = smooth_image()
    np.testing.assert_allclose(warp(img, np.zeros((2,) + img.shape)), img, atol=1e-12)


def test_shift_moves_content_by_pull_back():
    img = np.zeros((20, 30))
    img[8, 12] = 1.0
    u = np.zeros((2, 20, 30))
    u[0] = 2.0  # warped(x) = img(x + (2, 0)): the bright pixel appears 2 rows higher
    u[1] = -3.0  # and 3 columns to the right
    out = warp(img, u)
    assert out[6, 15] == pytest.approx(1.0)
    assert out.sum() == pytest.approx(1.0)


def test_warp_matches_scikit_image_reference():
    img, u = smooth_image(), smooth_field()
    coords = np.mgrid[: img.shape[0], : img.shape[1]].astype(float) + u
    ref = sk_warp(img, coords, order=1, mode="constant", cval=0.0)
    np.testing.assert_allclose(warp(img, u), ref, atol=1e-6)


def test_nearest_order_keeps_labels():
    labels = np.repeat(np.arange(5), 8).reshape(5, 8).T.astype(float)
    out = warp(labels, smooth_field(labels.shape, amp=1.3), order=0)
    assert set(np.unique(out)) <= set(np.unique(labels)) | {0.0}


@settings(max_examples=50, deadline=None)
@given(h=st.integers(2, 300), w=st.integers(2, 300), r=st.floats(-5, 305), c=st.floats(-5, 305))
def test_pixel_normalized_round_trip(h, w, r, c):
    p = torch.tensor([[r], [c]], dtype=torch.float64)
    back = normalized_to_pixel(pixel_to_normalized(p, (h, w)), (h, w))
    torch.testing.assert_close(back, p, atol=1e-9, rtol=1e-9)


@settings(max_examples=30, deadline=None)
@given(h=st.integers(2, 100), w=st.integers(2, 100))
def test_corner_pixel_centres_map_to_plus_minus_one(h, w):
    corners = torch.tensor([[0.0, h - 1.0], [0.0, w - 1.0]], dtype=torch.float64)
    g = pixel_to_normalized(corners, (h, w))
    torch.testing.assert_close(g, torch.tensor([[-1.0, -1.0], [1.0, 1.0]], dtype=torch.float64))


def test_displacement_units_and_axis_order():
    u = torch.zeros(1, 2, 11, 21)
    u[:, 0] = 5.0  # 5 pixels along rows = y = 2*5/10 normalised
    u[:, 1] = 10.0  # 10 pixels along columns = x = 2*10/20 normalised
    n = displacement_to_normalized(u)
    assert n.shape == (1, 11, 21, 2)
    torch.testing.assert_close(n[0, 0, 0], torch.tensor([1.0, 1.0]))


def test_sampling_grid_identity_matches_affine_grid():
    u = torch.zeros(1, 2, 7, 9)
    ref = torch.nn.functional.affine_grid(torch.eye(2, 3)[None], (1, 1, 7, 9), align_corners=True)
    torch.testing.assert_close(sampling_grid(u), ref, atol=1e-6, rtol=0)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 3), h=st.integers(1, 40), w=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_sampling_grid_is_the_pixel_position_x_plus_u_normalised(n, h, w, seed):
    """sampling_grid(u)[k, i, j] == pixel_to_normalized((i, j) + u[k, :, i, j]): the fast path agrees with the
    explicit conversion, for any batch, size (1-pixel sides included) and displacement."""
    u = torch.randn(n, 2, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 4
    pos = identity_grid((h, w), dtype=torch.float64)[:, None] + u.transpose(0, 1)  # (2, N, H, W) pixels
    torch.testing.assert_close(sampling_grid(u), pixel_to_normalized(pos, (h, w)), atol=1e-12, rtol=0)


def test_identity_grid():
    g = identity_grid((3, 4))
    assert g.shape == (2, 3, 4)
    assert g[0, 2, 1] == 2 and g[1, 2, 1] == 1


def test_compose_matches_sequential_warps():
    img = smooth_image()
    u1, u2 = smooth_field(seed=2, amp=2.0), smooth_field(seed=3, amp=2.0)
    t = lambda a: torch.from_numpy(a)[None]  # noqa: E731
    both = compose(t(u1), t(u2))[0].numpy()
    seq = warp(warp(img, u1), u2)
    inner = (slice(6, -6), slice(6, -6))
    np.testing.assert_allclose(warp(img, both)[inner], seq[inner], atol=2e-3)


def test_integrate_velocity_of_constant_is_translation():
    v = torch.full((1, 2, 16, 16), 1.5, dtype=torch.float64)
    torch.testing.assert_close(integrate_velocity(v), v)


def test_integrate_velocity_refine_runs_the_last_squarings_on_the_finer_grid():
    """refine=k: n - k compositions on v's grid, then the displacement resized to refine_shape, then k there."""
    gen = torch.Generator().manual_seed(0)
    v = torch.nn.functional.interpolate(torch.randn(1, 2, 4, 5, generator=gen, dtype=torch.float64) * 3,
                                        size=(12, 15), mode="bicubic", align_corners=True)
    by_hand = v / 2.0 ** 5
    for _ in range(3):
        by_hand = compose(by_hand, by_hand)
    by_hand = resize_displacement(by_hand, (23, 29))
    for _ in range(2):
        by_hand = compose(by_hand, by_hand)
    refined = integrate_velocity(v, 5, refine=2, refine_shape=(23, 29))
    torch.testing.assert_close(refined, by_hand, rtol=0, atol=0)
    coarse = integrate_velocity(v, 5)
    assert refined.shape[-2:] == (23, 29) and coarse.shape[-2:] == (12, 15)
    assert (resize_displacement(coarse, (23, 29)) - refined).abs().max() > 1e-3  # the finer grid changes the field
    torch.testing.assert_close(integrate_velocity(v, 5, refine=2, refine_shape=(12, 15)), coarse, rtol=0, atol=0)
    const = torch.full((1, 2, 8, 8), 1.5, dtype=torch.float64)  # a translation stays one, in the finer grid's pixels
    torch.testing.assert_close(integrate_velocity(const, 7, refine=7, refine_shape=(15, 15)),
                               torch.full((1, 2, 15, 15), 3.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="refine <= steps"):
        integrate_velocity(v, 2, refine=3, refine_shape=(23, 29))
    for shape in (None, (6, 30)):
        with pytest.raises(ValueError, match="needs refine_shape"):
            integrate_velocity(v, 5, refine=1, refine_shape=shape)


def test_resize_displacement_rescales_pixels():
    u = torch.ones(1, 2, 5, 9)
    big = resize_displacement(u, (9, 17))
    torch.testing.assert_close(big[0, 0], torch.full((9, 17), 2.0))
    torch.testing.assert_close(big[0, 1], torch.full((9, 17), 2.0))


def test_warp_tensor_gradients_flow():
    img = torch.from_numpy(smooth_image())[None, None]
    u = torch.zeros(1, 2, *img.shape[-2:], dtype=img.dtype, requires_grad=True)
    warp_tensor(img, u).sum().backward()
    assert u.grad is not None and u.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("image", "disp", "match"),
    [
        (np.zeros((4, 5, 6)), np.zeros((2, 4, 5)), "2D image"),
        (np.ones((8, 8)), np.zeros((3, 8, 8)), r"shape \(2, H, W\)"),
        (np.ones((8, 8)), np.zeros((2, 8, 9)), "does not match"),
        (np.full((8, 8), np.nan), np.zeros((2, 8, 8)), "NaN"),
        (np.ones((8, 8, 3)), np.zeros((2, 8, 8)), "RGB"),
    ],
)
def test_warp_rejects_bad_input(image, disp, match):
    with pytest.raises(ValueError, match=match):
        warp(image, disp)


def test_warp_tensor_rejects_bad_shapes():
    with pytest.raises(ValueError, match="N, 2, H, W"):
        warp_tensor(torch.zeros(1, 1, 4, 4), torch.zeros(1, 3, 4, 4))
