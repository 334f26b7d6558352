"""Synthetic deformations: smooth, invertible, seeded, and with the right warp semantics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dipreg.data import Pair, random_displacement, sample_pair, synthetic_pair


def det_jacobian(u: np.ndarray) -> np.ndarray:
    """det J of x + u(x), computed independently of the library."""
    du0_dr, du0_dc = np.gradient(u[0])
    du1_dr, du1_dc = np.gradient(u[1])
    return (1 + du0_dr) * (1 + du1_dc) - du0_dc * du1_dr


def library_warp(image, u, order=1):
    try:
        from dipreg.transform import warp
    except ImportError:  # pragma: no cover
        from skimage.transform import warp as skwarp

        grid = np.mgrid[: image.shape[0], : image.shape[1]].astype(float)
        return skwarp(image, grid + u, order=order, mode="constant", cval=0, preserve_range=True)
    return warp(image, u, order=order)


def test_shape_amplitude_and_invertibility():
    u = random_displacement((96, 80), max_displacement=4.0, seed=0)
    assert u.shape == (2, 96, 80) and u.dtype == np.float64
    assert np.sqrt((u**2).sum(0)).max() == pytest.approx(4.0, rel=1e-9)
    assert det_jacobian(u).min() > 0.2


def test_smooth():
    u = random_displacement((128, 128), max_displacement=4.0, seed=1)
    grads = np.abs(np.stack(np.gradient(u[0]) + np.gradient(u[1])))
    assert grads.max() < 0.5  # 4 px over a sigma of 16 px: gentle slopes
    second = np.abs(np.diff(u, n=2, axis=1)).max() + np.abs(np.diff(u, n=2, axis=2)).max()
    assert second < 0.05
    rough = random_displacement((128, 128), max_displacement=4.0, smoothness=4.0, seed=1)
    assert np.abs(np.diff(rough, axis=2)).max() > np.abs(np.diff(u, axis=2)).max()


def test_seeded():
    a = random_displacement((64, 64), seed=3)
    b = random_displacement((64, 64), seed=3)
    c = random_displacement((64, 64), seed=4)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    g1 = random_displacement((64, 64), seed=np.random.default_rng(7))
    g2 = random_displacement((64, 64), seed=np.random.default_rng(7))
    assert np.array_equal(g1, g2)


def test_large_request_is_reduced_with_a_warning():
    with pytest.warns(UserWarning, match="reduced"):
        u = random_displacement((64, 64), max_displacement=30.0, smoothness=2.0, seed=0)
    assert det_jacobian(u).min() > 0.2


def test_zero_amplitude_is_identity():
    assert not np.any(random_displacement((16, 16), max_displacement=0.0, seed=0))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"shape": (64,), "seed": 0}, ValueError, "shape"),
        ({"shape": (64, 64), "seed": 0, "max_displacement": -1}, ValueError, "max_displacement"),
        ({"shape": (64, 64), "seed": 0, "smoothness": 0}, ValueError, "smoothness"),
        ({"shape": (64, 64), "seed": "x"}, TypeError, "seed"),
        ({"shape": (64, 64), "seed": 0, "min_jacobian": 2}, ValueError, "min_jacobian"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        random_displacement(**kwargs)


def test_seed_is_required():
    with pytest.raises(TypeError):
        random_displacement((32, 32))  # type: ignore[call-arg]


@settings(max_examples=15, deadline=None)
@given(
    h=st.integers(16, 64),
    w=st.integers(16, 64),
    amp=st.floats(0.1, 6.0),
    seed=st.integers(0, 2**31),
)
def test_property_invertible(h, w, amp, seed):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = random_displacement((h, w), max_displacement=amp, seed=seed)
    assert np.all(np.isfinite(u))
    assert det_jacobian(u).min() > 0.2
    assert np.sqrt((u**2).sum(0)).max() <= amp * (1 + 1e-9)


def test_synthetic_pair_semantics():
    src = sample_pair(size=96)
    p = synthetic_pair(src.fixed, seed=5, mask=src.fixed_mask, labels=src.fixed_labels, image_id="mni")
    assert isinstance(p, Pair)
    assert p.moving is not src.fixed and np.array_equal(p.moving, src.fixed)  # moving = the image
    # a perfect registration of moving onto fixed is the ground truth
    assert np.allclose(library_warp(p.moving, p.displacement), p.fixed, atol=1e-9)
    # same convention as skimage.transform.warp with the map x + u
    from skimage.transform import warp as skwarp

    grid = np.mgrid[:96, :96].astype(float)
    ref = skwarp(p.moving, grid + p.displacement, order=1, mode="constant", cval=0, preserve_range=True)
    assert np.abs(ref - p.fixed)[2:-2, 2:-2].max() < 1e-5
    assert not np.allclose(p.moving, p.fixed)
    assert p.id == "mni->mni~warp(seed=5)"
    assert p.meta["source"] == "synthetic" and p.meta["min_det_jacobian"] > 0
    assert p.fixed_mask.dtype == bool and abs(p.fixed_mask.mean() - p.moving_mask.mean()) < 0.05
    assert set(np.unique(p.fixed_labels)) <= set(np.unique(p.moving_labels))
    assert np.array_equal(p.fixed_labels, np.rint(library_warp(p.moving_labels.astype(float), p.displacement, 0)))


def test_synthetic_pair_seeded_and_kwargs():
    img = sample_pair(size=64).moving
    a = synthetic_pair(img, seed=1, max_displacement=2.0, smoothness=6.0)
    b = synthetic_pair(img, seed=1, max_displacement=2.0, smoothness=6.0)
    assert np.array_equal(a.fixed, b.fixed)
    assert np.sqrt((a.displacement**2).sum(0)).max() == pytest.approx(2.0)
    assert a.meta["smoothness_px"] == 6.0


def test_synthetic_pair_explicit_displacement():
    img = sample_pair(size=32).moving
    u = np.zeros((2, 32, 32))
    u[1] = 1.0
    p = synthetic_pair(img, seed=0, displacement=u)
    assert np.allclose(p.fixed[:, :-1], img[:, 1:])  # fixed(x) = moving(x + 1 column)
    with pytest.raises(TypeError, match="max_displacement"):
        synthetic_pair(img, seed=0, displacement=u, max_displacement=3.0)
    with pytest.raises(ValueError, match="displacement"):
        synthetic_pair(img, seed=0, displacement=np.zeros((2, 8, 8)))


def test_synthetic_pair_bad_image():
    with pytest.raises(ValueError, match="image"):
        synthetic_pair(np.zeros((8, 8, 3)), seed=0)
    with pytest.raises(ValueError, match="constant"):
        synthetic_pair(np.zeros((8, 8)), seed=0)
