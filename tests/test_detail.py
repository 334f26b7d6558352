"""The detail stage (``detail_steps``): a smoothed free velocity on a finer grid, composed before the network."""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

import dipreg
from dipreg.config import RegistrationConfig
from dipreg.methods.batch import register_many
from dipreg.methods.dip import DetailField, DIPField
from dipreg.presets import PRESETS
from dipreg.transform import compose, integrate_velocity, resize_displacement

SMALL = dict(down=(8, 8), up=(8, 8), in_channels=8, iterations=6, patience=0)


def blob_pair(shape=(64, 64)):
    rows, cols = np.mgrid[: shape[0], : shape[1]].astype(float)
    img = np.exp(-(((rows - 30) / 9) ** 2 + ((cols - 34) / 12) ** 2))
    img += 0.5 * np.exp(-(((rows - 40) / 5) ** 2 + ((cols - 20) / 5) ** 2))
    u = np.zeros((2,) + shape)
    u[0] = 1.5 * np.sin(cols / 9.0)
    return img, dipreg.warp(img, u)


def test_presets_set_the_stage_and_the_bare_config_has_none():
    assert RegistrationConfig().detail_steps == 0 and PRESETS["paper"].detail_steps == 0
    for name in ("cpu", "gpu", "fine"):
        assert PRESETS[name].detail_steps > 0
    assert "detail_steps" in dipreg.presets.differences("cpu")


def test_a_zero_velocity_returns_the_base_field():
    base = torch.randn(2, 2, 40, 48)
    field = DetailField(PRESETS["cpu"], (40, 48), (20, 24), base)
    assert field.velocity.shape == (2, 2, 20, 24) and field.velocity.requires_grad
    torch.testing.assert_close(field(), base, rtol=1e-5, atol=1e-5)  # up to the rounding of grid_sample


def test_the_velocity_is_in_image_pixels_smoothed_held_at_the_border_and_integrated():
    """A constant velocity of c image pixels gives a shift of c pixels (no smoothing, free border, no integration);
    the cpu preset's field is integrate_velocity of the smoothed, windowed velocity, composed before the base."""
    shape, grid = (33, 65), (17, 17)  # unequal pixel ratios along the two axes: a swap of them shows
    flat = PRESETS["cpu"].replace(boundary="free", detail_sigma=0.0, integrate=0)
    field = DetailField(flat, shape, grid, torch.zeros(1, 2, *shape))
    with torch.no_grad():
        field.velocity[:, 0] = 1.5
        field.velocity[:, 1] = -0.5
    u = field()
    torch.testing.assert_close(u[0, 0], torch.full(shape, 1.5), rtol=0, atol=1e-5)
    torch.testing.assert_close(u[0, 1], torch.full(shape, -0.5), rtol=0, atol=1e-5)

    cfg = PRESETS["cpu"]
    base = torch.randn(1, 2, *shape) * 0.5
    field = DetailField(cfg, shape, grid, base)
    with torch.no_grad():
        field.velocity.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(0))
        v = field.velocity.numpy().astype(np.float64)
        scale = [(g - 1) / (n - 1) for g, n in zip(grid, shape, strict=True)]
        for axis, s in enumerate(scale):  # edges replicated, radius ceil(3 sigma) grid pixels
            sigma = cfg.detail_sigma * s
            v = ndimage.gaussian_filter1d(v, sigma, axis=2 + axis, mode="nearest",
                                          truncate=math.ceil(3 * sigma) / sigma)
        v = torch.as_tensor(v, dtype=torch.float32) * torch.tensor(scale).view(1, 2, 1, 1) * DIPField._window(grid)
        want = compose(base, resize_displacement(integrate_velocity(v, cfg.integrate), shape))
        torch.testing.assert_close(field(), want, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(field()[..., 0, :], base[..., 0, :], rtol=0, atol=1e-5)  # held at the border


def test_register_runs_the_stage_after_the_network_and_reads_out_its_best_field():
    m, f = blob_pair()
    steps = []
    res = dipreg.register(m, f, seed=0, progress=False, detail_steps=8, detail_lr=0.05,
                          callback=lambda s: steps.append(s.iteration), **SMALL)
    net = res.info["iterations"]
    assert net == 6 and res.info["detail_steps"] == 8 and len(res.history) == 14
    assert steps == list(range(14))  # the callback counts on across the stages
    # the stage starts from the network's best field, so its first loss is that field's loss
    assert res.history[net] == pytest.approx(min(res.history[:net]), rel=1e-5)
    assert res.info["readout_step"] == int(np.argmin(res.history[net:])) + net
    assert min(res.history[net:]) < min(res.history[:net])  # it improved on this pair
    without = dipreg.register(m, f, seed=0, progress=False, detail_steps=0, **SMALL)
    assert without.info["detail_steps"] == 0 and len(without.history) == net
    assert without.history == res.history[:net]  # the network's steps are untouched by the stage
    # the field returned is the stage's best, not the network's: its loss is the lowest of the stage's
    from dipreg.losses import field_penalty, get_loss
    from dipreg.methods.dip import optimiser_images

    def loss_of(result):
        mt, ft = (t[None, None] for t in optimiser_images(m, f, result.config, torch.device("cpu")))
        u = torch.as_tensor(result.displacement, dtype=torch.float32)[None]
        cfg = result.config
        return float(get_loss(cfg.loss)(dipreg.transform.warp_tensor(mt, u), ft)
                     + field_penalty(u, cfg.fold_penalty, cfg.volume_penalty))

    assert loss_of(res) == pytest.approx(min(res.history[net:]), rel=1e-3)
    assert loss_of(res) < loss_of(without)
    again = dipreg.register(m, f, seed=0, progress=False, detail_steps=8, detail_lr=0.05, **SMALL)
    np.testing.assert_array_equal(again.displacement, res.displacement)


def test_the_stage_after_a_last_step_readout_or_fresh_noise():
    """Where the network's stage keeps no best field (readout="last", fresh noise), the stage starts from its
    readout and still returns its own best field."""
    m, f = blob_pair()
    for kw in (dict(readout="last"), dict(noise="fresh", readout_draws=2)):
        res = dipreg.register(m, f, seed=0, progress=False, detail_steps=4, detail_lr=0.05, **{**SMALL, **kw})
        assert res.info["detail_steps"] == 4 and len(res.history) == 10 and np.isfinite(res.displacement).all()
        assert res.info["readout_step"] == 6 + int(np.argmin(res.history[6:]))


def test_a_callback_stop_or_an_interrupt_in_either_stage():
    m, f = blob_pair()
    stop = dipreg.register(m, f, seed=0, progress=False, detail_steps=8, callback=lambda s: s.iteration == 2, **SMALL)
    assert stop.info["stopped"] == "callback" and stop.info["detail_steps"] == 0 and len(stop.history) == 3

    def ctrl_c(step):
        if step.iteration == 9:  # the fourth step of the detail stage
            raise KeyboardInterrupt

    with pytest.raises(dipreg.RegistrationInterrupted) as caught:
        dipreg.register(m, f, seed=0, progress=False, detail_steps=8, callback=ctrl_c, **SMALL)
    exc = caught.value
    assert len(exc.history) == 10 and exc.result.info["stopped"] == "interrupted"
    assert exc.result.info["detail_steps"] == 4 and np.isfinite(exc.result.displacement).all()


def test_register_many_runs_the_stage_for_every_pair():
    m, f = blob_pair()
    results = register_many([(m, f), (f, m)], seed=[0, 1], progress=False, detail_steps=5, **SMALL)
    for r in results:
        assert r.info["iterations"] == 6 and r.info["detail_steps"] == 5 and len(r.history) == 11
        assert r.history[6] == pytest.approx(min(r.history[:6]), rel=1e-4)
        assert r.info["readout_step"] == int(np.argmin(r.history[6:])) + 6
        assert np.isfinite(r.displacement).all()


@pytest.mark.parametrize(("field", "value", "exc"), [
    ("detail_steps", -1, ValueError), ("detail_steps", 1.5, TypeError), ("detail_lr", 0.0, ValueError),
    ("detail_lr", float("nan"), ValueError), ("detail_sigma", -1.0, ValueError), ("detail_sigma", "2", TypeError)])
def test_bad_detail_settings_are_refused(field, value, exc):
    with pytest.raises(exc, match=f"config.{field}: expected"):
        PRESETS["cpu"].replace(**{field: value})
