"""Tests of the ANTs comparator: the composite displacement reproduces ANTs' own warp, affine det J, seeds."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from scipy import ndimage

from dipreg.methods.ants import ANTS_SETTINGS, THREADS_ENV, register_ants
from dipreg.metrics import jacobian_determinant
from dipreg.transform import warp

N = 96


@pytest.fixture(scope="module")
def ants():
    return pytest.importorskip("ants")


@pytest.fixture(scope="module")
def phantom():
    """A smooth random texture inside a disk on a zero background (like a brain slice), in [0, 1]."""
    rng = np.random.default_rng(1)
    tex = ndimage.gaussian_filter(rng.normal(size=(N, N)), 2.5)
    tex = (tex - tex.min()) / np.ptp(tex)
    r, c = np.indices((N, N))
    disk = ((r - (N - 1) / 2) ** 2 + (c - (N - 1) / 2) ** 2) < (0.38 * N) ** 2
    return tex * ndimage.gaussian_filter(disk.astype(float), 1.5)


@pytest.fixture(scope="module")
def syn_pair(phantom):
    rs, cs = np.indices((N, N)) / (N - 1)
    u = np.stack([3.0 * np.sin(np.pi * rs) * np.sin(np.pi * cs), -2.0 * np.sin(2 * np.pi * rs) * np.sin(np.pi * cs)])
    return warp(phantom, -u), phantom


@pytest.fixture(scope="module")
def syn_result(ants, syn_pair):
    moving, fixed = syn_pair
    return register_ants(moving, fixed, type_of_transform="SyN", seed=3)


def test_composite_displacement_reproduces_ants_warp(ants, syn_pair, syn_result):
    moving, fixed = syn_pair
    res = syn_result
    assert res.method == "ants-SyN" and res.history == []
    assert res.displacement.shape == (2, N, N) and res.displacement.dtype == np.float64
    assert res.info["transforms"][0].endswith("Warp.nii.gz") and res.info["transforms"][1].endswith(".mat")
    np.testing.assert_allclose(res.warped, warp(moving, res.displacement))
    # dipreg's warp by the composite field and ANTs' own warpedmovout agree to float32 precision (measured
    # 2e-6 here; 1e-5 on LGG pairs away from the moving image's edge, where ITK and grid_sample pad differently).
    assert res.info["ants_warped_max_diff"] < 1e-4
    assert res.info["ants_warped_max_diff_inside"] < 1e-4
    # The registration did something sensible: closer to the fixed image than before.
    assert np.abs(res.warped - fixed).mean() < 0.5 * np.abs(moving - fixed).mean()
    # The vector order and sign are ours: a translation by +2 rows reads as u[0] = +2.
    shifted = ndimage.shift(fixed, (-2.0, 0.0), order=1)  # shifted(x) = fixed(x + (2, 0))
    tr = register_ants(fixed, shifted, type_of_transform="Translation", seed=0)
    inner = (slice(20, -20), slice(20, -20))
    assert np.median(tr.displacement[0][inner]) == pytest.approx(2.0, abs=0.1)
    assert np.median(tr.displacement[1][inner]) == pytest.approx(0.0, abs=0.1)


def test_affine_det_j_equals_matrix_determinant(ants, phantom):
    a = np.array([[1.08, 0.05], [-0.03, 0.95]])
    r, c = np.indices((N, N)).astype(float)
    grid = np.stack([r, c])
    centre = (N - 1) / 2
    u_true = np.einsum("ij,jhw->ihw", a - np.eye(2), grid - centre) + np.array([1.5, -2.0])[:, None, None]
    fixed = warp(phantom, u_true)  # fixed(x) = phantom(A (x - c) + c + t)
    res = register_ants(phantom, fixed, type_of_transform="Affine", seed=0)
    mat = res.info["affine"]
    assert mat.shape == (3, 3) and np.array_equal(mat[2], [0.0, 0.0, 1.0])
    # the composite field is exactly the affine map, and its det J is det A everywhere
    expected = np.einsum("ij,jhw->ihw", mat[:2, :2], grid) + mat[:2, 2][:, None, None] - grid
    np.testing.assert_allclose(res.displacement, expected, atol=1e-3)
    det = jacobian_determinant(res.displacement)
    np.testing.assert_allclose(det, np.linalg.det(mat[:2, :2]), atol=1e-4)
    # and ANTs found roughly the transform we applied (det A = 1.0275)
    assert np.linalg.det(mat[:2, :2]) == pytest.approx(np.linalg.det(a), abs=0.02)


def test_same_seed_same_numbers(ants, syn_pair, syn_result):
    if os.environ.get(THREADS_ENV) != "1":
        pytest.skip(f"{THREADS_ENV}={os.environ.get(THREADS_ENV)}: multi-threaded ITK is not bit-reproducible")
    moving, fixed = syn_pair
    again = register_ants(moving, fixed, type_of_transform="SyN", seed=3)
    np.testing.assert_array_equal(again.displacement, syn_result.displacement)
    assert again.info["ants_random_seed"] == 4  # ANTs reads seed 0 as "from the clock", so dipreg adds 1
    assert ants.config._random_seed is None  # the global ANTs seed is restored


def test_settings_are_valid_calls():
    assert ANTS_SETTINGS["paper"] == {"type_of_transform": "SyN"}
    assert {"paper", "strong"} <= set(ANTS_SETTINGS)
    assert all(isinstance(v["type_of_transform"], str) for v in ANTS_SETTINGS.values())


def test_bad_arguments_raise(phantom):
    img = phantom
    with pytest.raises(TypeError, match="seed="):
        register_ants(img, img, random_seed=1)
    with pytest.raises(ValueError, match="seed"):
        register_ants(img, img, seed=-1)
    with pytest.raises(ValueError, match="shape"):
        register_ants(img, img[:50])
    with pytest.raises(TypeError, match="type_of_transform"):
        register_ants(img, img, type_of_transform=3)


def test_missing_antspyx_says_how_to_install(monkeypatch, phantom):
    monkeypatch.setitem(sys.modules, "ants", None)  # makes ``import ants`` raise ImportError
    with pytest.raises(ImportError, match="pip install antspyx"):
        register_ants(phantom, phantom)


def test_seeds_and_keywords_are_checked_as_register_checks_them(phantom):
    from dipreg.methods.ants import ANTS_MAX_SEED, check_ants_seed

    assert check_ants_seed(None) is None and check_ants_seed(ANTS_MAX_SEED) == 2**31 - 1  # ITK's int32 maximum
    with pytest.raises(ValueError, match=r"seed: expected an integer from 0 to 2\*\*31 - 2 = 2147483646 for ANTs"):
        register_ants(phantom, phantom, seed=2**31 - 1)
    with pytest.raises(ValueError, match=r"seed: expected an integer from 0 to 2\*\*63 - 1, got 'a'"):
        register_ants(phantom, phantom, seed="a")
    with pytest.raises(ValueError, match="seed: expected an integer"):
        register_ants(phantom, phantom, seed=1.5)


def test_unknown_keywords_are_refused(ants, phantom):
    with pytest.raises(TypeError, match=r"unknown keyword argument\(s\) \['bogus'\].*valid: .*reg_iterations"):
        register_ants(phantom, phantom, bogus=1)
    with pytest.raises(TypeError, match=r"\['callback'\]"):
        register_ants(phantom, phantom, callback=5)
