"""The affine pre-alignment (dipreg.methods.affine) and its use by register / register_many."""

import warnings

import numpy as np
import pytest
import torch

import dipreg
from dipreg.data import sample_pair
from dipreg.losses import get_loss
from dipreg.methods.affine import (
    AREA_WARNING,
    LEVELS,
    affine_displacement,
    area_change,
    area_warning,
    compose_affine,
    fit_affine,
    identity_theta,
    levels_to,
    linear_part,
)
from dipreg.methods.engine import RegistrationWarning
from dipreg.transform import compose, warp_tensor

THETA = torch.tensor([[[1.06, 0.04, 0.03], [-0.05, 0.96, -0.04]]])


def _image(size: int = 96) -> torch.Tensor:
    p = sample_pair("default").resized(size)
    return torch.tensor(p.moving, dtype=torch.float32)[None, None]


def test_identity_is_zero_displacement():
    assert affine_displacement(identity_theta(1), (7, 11)).abs().max() < 1e-6


def test_translation_in_pixels():
    # x (columns) shifted by 0.5 normalised units = 0.25 * (w - 1) px, rows by -0.25 = -0.125 * (h - 1) px
    theta = torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, -0.25]]])
    a = affine_displacement(theta, (9, 17))
    assert torch.allclose(a[0, 0], torch.full((9, 17), -0.25 * 8 / 2), atol=1e-5)
    assert torch.allclose(a[0, 1], torch.full((9, 17), 0.5 * 16 / 2), atol=1e-5)


def test_compose_affine_matches_resampled_composition():
    shape = (64, 80)
    a = affine_displacement(THETA, shape)
    v = torch.nn.functional.interpolate(torch.randn(1, 2, 6, 6, generator=torch.Generator().manual_seed(0)) * 2,
                                        size=shape, mode="bilinear", align_corners=True)
    exact = compose_affine(a, linear_part(THETA, shape), v)
    resampled = compose(a, v)  # interpolates a, exact for an affine map away from the border
    assert (exact - resampled)[..., 8:-8, 8:-8].abs().max() < 1e-3


@pytest.mark.parametrize("finest", [1, 2])
def test_fit_affine_recovers_a_known_map(finest):
    """Down to full resolution (the field's default) or to half of it (the cpu preset's ``prealign_finest=2``)."""
    m = _image()
    f = warp_tensor(m, affine_displacement(THETA, m.shape[-2:]))
    theta = fit_affine(m, f, get_loss("mae"), levels=levels_to(finest))
    err = (affine_displacement(theta, m.shape[-2:]) - affine_displacement(THETA, m.shape[-2:])).norm(dim=1)
    assert err.mean() < 0.3, err.mean()


def test_levels_to_keeps_the_coarse_levels():
    assert levels_to(1) == LEVELS and [f for f, _ in levels_to(2)] == [4, 2] and [f for f, _ in levels_to(4)] == [4]


@pytest.mark.parametrize("many", [False, True])
def test_register_runs_the_affine_stage_down_to_prealign_finest(monkeypatch, many):
    seen = []
    module = "dipreg.methods.batch" if many else "dipreg.methods.dip"
    monkeypatch.setattr(f"{module}.fit_affine", lambda *a, **kw: seen.append(kw["levels"]) or fit_affine(*a, **kw))
    m = _image(64)[0, 0].numpy()
    for finest in (1, 2):
        kw = dict(config="cpu", progress=False, iterations=1, prealign_finest=finest)
        dipreg.register_many([(m, m)], **kw) if many else dipreg.register(m, m, **kw)
    assert seen == [levels_to(1), levels_to(2)]


def test_fit_affine_keeps_identity_for_identical_images():
    m = _image()
    theta = fit_affine(m, m.clone(), get_loss("mae"))
    assert affine_displacement(theta, m.shape[-2:]).abs().max() < 0.5


def test_register_prealign_affine_recovers_a_scaled_brain():
    m = _image()
    f = warp_tensor(m, affine_displacement(THETA, m.shape[-2:]))[0, 0].numpy()
    kw = dict(progress=False, iterations=60, down=(8, 16), up=(8, 16), grid_scale=4, output_scale=4.0, detail_steps=0)
    with_affine = dipreg.register(m[0, 0].numpy(), f, **kw)
    without = dipreg.register(m[0, 0].numpy(), f, prealign="none", **kw)
    assert with_affine.config.prealign == "affine" and "affine" in with_affine.info
    assert "affine" not in without.info
    # the known map's endpoint error inside the image: both warp well (MAE), only the affine stage finds the map
    true = affine_displacement(THETA, m.shape[-2:])[0].numpy()
    epe = lambda r: float(np.linalg.norm(r.displacement - true, axis=0)[10:-10, 10:-10].mean())  # noqa: E731
    assert epe(with_affine) < 0.3 and epe(with_affine) < 0.5 * epe(without), (epe(with_affine), epe(without))


def test_register_many_fits_one_affine_per_pair():
    m = _image(64)
    f = warp_tensor(m, affine_displacement(THETA, m.shape[-2:]))[0, 0].numpy()
    mm = m[0, 0].numpy()
    kw = dict(progress=False, iterations=2, down=(8, 16), up=(8, 16), grid_scale=4, output_scale=4.0, patience=0)
    res = dipreg.register_many([(mm, f), (mm, mm)], **kw)
    one = dipreg.register(mm, f, **kw)
    assert np.allclose(res[0].info["affine"], one.info["affine"], atol=1e-5)
    assert not np.allclose(res[0].info["affine"], res[1].info["affine"], atol=1e-3)


@pytest.mark.parametrize("preset", ["paper"])
def test_paper_preset_has_no_prealignment(preset):
    assert dipreg.presets.get_preset(preset).prealign == "none"


def test_area_change_is_the_det_j_of_the_map():
    # the determinant of the linear part does not depend on the image's aspect ratio
    for shape in ((64, 80), (97, 31)):
        assert area_change(THETA, shape) == pytest.approx(float(torch.linalg.det(THETA[0, :, :2])), rel=1e-5)
    # and it is the map's det J: the finite-difference Jacobian of x + a(x), rows and columns in pixels
    a = affine_displacement(THETA, (64, 80))[0].double()
    d_rows, d_cols = torch.gradient(a[0]), torch.gradient(a[1])
    det = (1 + d_rows[0]) * (1 + d_cols[1]) - d_rows[1] * d_cols[0]
    assert float(det.mean()) == pytest.approx(area_change(THETA, (64, 80)), rel=1e-4)


def test_area_warning_only_past_the_limit():
    scale = lambda s: torch.tensor([[[s, 0.0, 0.0], [0.0, s, 0.0]]])  # noqa: E731
    assert area_warning(THETA, (64, 64)) is None
    assert area_warning(scale(AREA_WARNING ** 0.5 * 0.99), (64, 64)) is None
    assert "factor of 2.56" in area_warning(scale(1.6), (64, 64))
    assert "factor of 0.36" in area_warning(scale(0.6), (64, 64))


@pytest.mark.parametrize("many", [False, True])
def test_register_warns_when_the_affine_stage_changes_area_a_lot(monkeypatch, many):
    """A pre/post-contrast LGG pair with a grey background in one image made the affine stage shrink it to less
    than half its area: the result says so instead of staying silent."""
    big = torch.tensor([[[1.6, 0.0, 0.0], [0.0, 1.6, 0.0]]])
    module = "dipreg.methods.batch" if many else "dipreg.methods.dip"
    monkeypatch.setattr(f"{module}.fit_affine", lambda m, f, loss_fn, **kw: big.clone())
    mm = _image(64)[0, 0].numpy()
    kw = dict(progress=False, iterations=2, down=(8, 16), up=(8, 16), grid_scale=4, output_scale=4.0)
    with pytest.warns(RegistrationWarning, match="changed the area by a factor of 2.56"):
        res = dipreg.register_many([(mm, mm)], **kw)[0] if many else dipreg.register(mm, mm, **kw)
    assert "prealign='none'" in res.info["warning"]
    assert res.info["affine_area"] == pytest.approx(2.56, rel=1e-5)


def test_border_background_keeps_the_affine_stage_on_the_anatomy(grey_background):
    """A grey, noisy background that the fixed image lacks: with the darkest-intensity rule the affine stage
    shrinks the brain (area x3, with a warning); leaving out the border-connected background gives nearly the
    clean pair's map."""
    pair = sample_pair()
    m, grey = pair.moving, grey_background[0]
    cpu = dipreg.presets.get_preset("cpu")
    area = {}
    for name, moving, background in (("clean", m, "darkest"), ("grey", grey, "darkest"), ("border", grey, "border")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = dipreg.register(moving, pair.fixed, seed=0, iterations=1, progress=False,
                                  config=cpu.replace(intensity_background=background))
        area[name] = res.info["affine_area"]
        assert any(issubclass(w.category, RegistrationWarning) for w in caught) == (name == "grey")
    assert area["grey"] > 2.0
    assert area["border"] == pytest.approx(area["clean"], rel=0.1)  # the CSF rim (test_intensity) costs a little
