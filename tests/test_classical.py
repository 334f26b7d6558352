"""Tests of the classical baseline (paper eq. 1): regularisers, recovery of a known field, input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from dipreg.methods.classical import DEFAULTS, REGULARIZERS, ClassicalSettings, bending, diffusion, register_classical
from dipreg.methods.dip import RegistrationError
from dipreg.metrics import endpoint_error, folded_fraction
from dipreg.transform import warp

N = 64


@pytest.fixture(scope="module")
def synthetic_pair():
    """A smooth random texture and its warp by a known smooth field (max about 2 pixels)."""
    rng = np.random.default_rng(0)
    tex = ndimage.gaussian_filter(rng.normal(size=(N, N)), 2.0)
    moving = (tex - tex.min()) / np.ptp(tex)
    r, c = np.indices((N, N)) / (N - 1)
    u_true = np.stack([2.0 * np.sin(np.pi * r) * np.sin(np.pi * c),
                       -1.5 * np.sin(np.pi * c) * np.sin(2 * np.pi * r)])
    fixed = warp(moving, u_true)
    inner = np.zeros((N, N), dtype=bool)
    inner[6:-6, 6:-6] = True
    return moving, fixed, u_true, inner


def _field(fn, shape=(9, 11)) -> torch.Tensor:
    r, c = torch.meshgrid(torch.arange(shape[0], dtype=torch.float64), torch.arange(shape[1], dtype=torch.float64),
                          indexing="ij")
    return torch.stack(fn(r, c))[None]


# --- regularisers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REGULARIZERS))
def test_constant_field_has_zero_energy(name):
    u = _field(lambda r, c: (torch.full_like(r, 3.5), torch.full_like(r, -2.0)))
    assert REGULARIZERS[name](u).item() == 0.0


def test_linear_field_energies():
    a = np.array([[0.3, -0.2], [0.1, 0.5]])
    u = _field(lambda r, c: (a[0, 0] * r + a[0, 1] * c + 4.0, a[1, 0] * r + a[1, 1] * c - 1.0))
    assert diffusion(u).item() == pytest.approx(float((a**2).sum()), rel=1e-12)  # ||A||_F^2
    assert bending(u).item() == pytest.approx(0.0, abs=1e-20)


def test_quadratic_field_bending_and_mixed_term():
    u = _field(lambda r, c: (r**2 / 2, torch.zeros_like(r)))
    assert bending(u).item() == pytest.approx(1.0)  # u_rr = 1
    u = _field(lambda r, c: (r * c, torch.zeros_like(r)))
    assert bending(u).item() == pytest.approx(2.0)  # 2 u_rc^2 with u_rc = 1


def test_regularizers_are_differentiable_and_check_shape():
    u = torch.zeros(2, 2, 8, 8, requires_grad=True)
    (diffusion(u) + bending(u)).backward()
    assert u.grad is not None and u.grad.shape == u.shape
    with pytest.raises(ValueError, match="N, 2, H, W"):
        diffusion(torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="N, 2, H, W"):
        bending(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="3 x 3"):
        bending(torch.zeros(1, 2, 2, 8))


# --- registration ----------------------------------------------------------------------------------------------


def test_regularisation_prevents_folding_and_recovers_the_field(synthetic_pair):
    moving, fixed, u_true, inner = synthetic_pair
    plain = register_classical(moving, fixed, weight=0.0, levels=1, progress=False)
    reg = register_classical(moving, fixed, weight=0.3, levels=3, progress=False)
    # measured: weight 0 folds 7.8 % with EPE 1.06 px; weight 0.3 folds 0 % with EPE 0.05 px (zero field: 1.41 px)
    assert folded_fraction(plain.displacement) > 0.01
    assert endpoint_error(plain.displacement, u_true, inner) > 0.5
    assert folded_fraction(reg.displacement) == 0.0
    assert endpoint_error(reg.displacement, u_true, inner) < 0.2
    np.testing.assert_allclose(reg.warped, warp(moving, reg.displacement))


def test_bending_regulariser_recovers_the_field(synthetic_pair):
    moving, fixed, u_true, inner = synthetic_pair
    res = register_classical(moving, fixed, regularizer="bending", weight=1.0, levels=2, iterations=100,
                             progress=False)
    assert folded_fraction(res.displacement) == 0.0
    assert endpoint_error(res.displacement, u_true, inner) < 0.2


def test_result_fields_and_determinism(synthetic_pair):
    moving, fixed, _, _ = synthetic_pair
    kw = dict(weight=0.2, levels=2, iterations=[10, 15], progress=False, device="cpu")
    a = register_classical(moving, fixed, seed=1, **kw)
    b = register_classical(moving, fixed, seed=2, **kw)
    np.testing.assert_array_equal(a.displacement, b.displacement)
    assert a.method == "classical" and a.device == "cpu"
    assert a.displacement.shape == (2, N, N) and a.displacement.dtype == np.float64
    assert len(a.history) == 25 and a.info["iterations"] == 25
    assert a.info["weight"] == 0.2 and a.info["regularizer"] == "diffusion"
    assert a.info["level_shapes"] == [(32, 32), (64, 64)] and a.info["level_starts"] == [0, 10]
    assert isinstance(a.config, ClassicalSettings) and a.info["seed"] == 1
    assert a.config.to_dict() == {"regularizer": "diffusion", "weight": 0.2, "loss": "mae", "lr": DEFAULTS["lr"],
                                  "iterations": [10, 15], "levels": 2, "intensity_clip": DEFAULTS["intensity_clip"],
                                  "intensity_match": DEFAULTS["intensity_match"],
                                  "intensity_background": "darkest"}
    np.testing.assert_allclose(a.history, np.array(a.info["data_history"]) + 0.2 * np.array(a.info["reg_history"]),
                               rtol=1e-5)


def test_single_level_is_plain(synthetic_pair):
    moving, fixed, _, _ = synthetic_pair
    res = register_classical(moving, fixed, levels=1, iterations=3, progress=False)
    assert res.info["level_shapes"] == [(N, N)] and len(res.history) == 3


def test_callback_gets_full_resolution_steps_and_can_stop(synthetic_pair):
    moving, fixed, _, _ = synthetic_pair
    seen = []

    def cb(step):
        seen.append((step.iteration, tuple(step.displacement.shape), tuple(step.warped.shape)))
        return step.iteration == 4

    res = register_classical(moving, fixed, levels=2, iterations=10, callback=cb, progress=False)
    assert [s[0] for s in seen] == [0, 1, 2, 3, 4]
    assert all(s[1] == (1, 2, N, N) and s[2] == (1, 1, N, N) for s in seen)
    assert res.info["stopped"] == "callback" and len(res.history) == 5
    assert res.displacement.shape == (2, N, N)


def test_nan_objective_raises_with_history(synthetic_pair):
    moving, fixed, _, _ = synthetic_pair
    with pytest.raises(RegistrationError) as err:
        register_classical(moving, fixed, weight=1.0, lr=1e30, levels=1, iterations=5, progress=False)
    assert len(err.value.history) >= 1


@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    (dict(regularizer="tv"), ValueError, "regularizer"),
    (dict(weight=-1.0), ValueError, "weight"),
    (dict(weight=float("nan")), ValueError, "weight"),
    (dict(lr=0.0), ValueError, "lr"),
    (dict(levels=0), ValueError, "levels"),
    (dict(levels=6), ValueError, "levels"),
    (dict(levels=2, iterations=[5]), ValueError, "iterations"),
    (dict(iterations=0), ValueError, "iterations"),
    (dict(iterations="many"), TypeError, "iterations"),
    (dict(loss="ssim"), ValueError, "loss"),
    (dict(device="nonsense"), ValueError, "device"),
])
def test_bad_settings_raise(synthetic_pair, kwargs, exc, match):
    moving, fixed, _, _ = synthetic_pair
    with pytest.raises(exc, match=match):
        register_classical(moving, fixed, progress=False, **kwargs)


def test_bad_images_raise():
    img = np.random.default_rng(0).random((16, 16))
    with pytest.raises(ValueError, match="shape"):
        register_classical(img, img[:8], progress=False)
    bad = img.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        register_classical(bad, img, progress=False)
    with pytest.raises(ValueError, match="constant"):
        register_classical(np.ones((16, 16)), img, progress=False)
    with pytest.raises(ValueError, match="RGB"):
        register_classical(np.zeros((16, 16, 3)), img, progress=False)


def test_too_many_levels_names_the_number_that_fits():
    rng = np.random.default_rng(0)
    m, f = rng.random((48, 48)), rng.random((48, 48))
    with pytest.raises(ValueError, match=r"use levels=4 or fewer"):
        register_classical(m, f, levels=5, progress=False, device="cpu")
    res = register_classical(m, f, levels=4, iterations=1, progress=False, device="cpu")
    assert res.displacement.shape == (2, 48, 48)
