"""dipreg.intensity (what the optimisers see), label Dice, the tissue slices, the quality check and per-pair
early stopping in register_many."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

import dipreg
from dipreg.config import RegistrationConfig
from dipreg.data import tissue_pair, tissue_pairs
from dipreg.intensity import (
    border_background,
    foreground,
    intensity_window,
    match_histogram,
    match_linear,
    rescale,
)
from dipreg.losses import mae
from dipreg.methods.batch import register_many
from dipreg.methods.classical import register_classical
from dipreg.methods.dip import Plateau, RegistrationWarning, make_field, quality_check
from dipreg.metrics import label_dice
from dipreg.presets import get_preset

TINY = dict(down=(8, 16, 16), up=(8, 16, 16), in_channels=8, readout_draws=2)


def test_clip_zero_is_min_max():
    x = np.random.default_rng(0).random((16, 20)) * 7 - 2
    np.testing.assert_allclose(rescale(x, 0.0), (x - x.min()) / (x.max() - x.min()))
    assert intensity_window(x) == (x.min(), x.max())


def test_a_hot_pixel_does_not_set_the_scale():
    x = np.random.default_rng(1).random((64, 64))
    hot = x.copy()
    hot[3, 5] = 30.0
    a, b = rescale(x, 0.005), rescale(hot, 0.005)
    mask = np.ones_like(x, bool)
    mask[3, 5] = False
    assert np.abs(a - b)[mask].max() < 0.02  # min-max would squash b by 30x
    assert b[3, 5] == 1.0  # winsorised, not dropped


def test_offset_and_scale_do_not_matter():
    x = np.random.default_rng(2).random((32, 32))
    np.testing.assert_allclose(rescale(x * 1000 + 50, 0.005), rescale(x, 0.005), atol=1e-12)


def test_padding_below_the_tissue_is_not_foreground():
    """A zero band in an image whose tissue starts at 0.4: the tissue still spans [0, 1]."""
    x = 0.4 + 0.2 * np.random.default_rng(3).random((64, 64))
    padded = x.copy()
    padded[:, :6] = 0.0
    lo, hi = intensity_window(padded, 0.005)
    assert lo > 0.39 and hi < 0.61
    assert np.all(rescale(padded, 0.005)[:, :6] == 0.0)


def test_border_background_finds_a_grey_background_and_nothing_in_a_texture(grey_background):
    grey, head = grey_background
    bg = border_background(grey)
    # a skull-stripped brain: only the rim of dark CSF at the grey level (~6 % of the head) joins the background
    assert bg[~head].mean() > 0.95 and bg[head].mean() < 0.1
    assert foreground(grey).mean() > 0.99  # the noise spreads the grey level over many bins: "darkest" keeps it
    fg = foreground(grey, background="border")
    assert fg[~head].mean() < 0.05 and fg[head].mean() > 0.9
    texture = ndimage.gaussian_filter(np.random.default_rng(0).random((128, 96)), 6)  # no background at all
    assert not border_background(texture).any()
    assert np.array_equal(foreground(texture, background="border"), foreground(texture))
    assert not border_background(np.ones((8, 8))).any()  # smaller than two frames, and constant


def test_intensity_background_is_checked_everywhere():
    assert RegistrationConfig(intensity_background="border").intensity_background == "border"
    with pytest.raises(ValueError, match=r"intensity_background.*'darkest', 'border'"):
        RegistrationConfig(intensity_background="grey")
    with pytest.raises(ValueError, match=r"background.*'darkest', 'border'"):
        foreground(np.eye(4), background="grey")
    x = np.random.default_rng(0).random((32, 32))
    with pytest.raises(ValueError, match="intensity_background"):
        register_classical(x, x, intensity_background="grey", progress=False)


@pytest.mark.parametrize("image", [np.zeros((8, 8)), np.eye(8), np.eye(8) * 3 + 1])
def test_constant_and_two_valued_images(image):
    out = rescale(image, 0.01)
    assert out.shape == image.shape and np.all((out >= 0) & (out <= 1))
    if image.max() > image.min():
        assert out.max() == 1.0 and out.min() == 0.0


@pytest.mark.parametrize("bad", [-0.1, 0.5, float("nan"), "0.1", True])
def test_bad_clip_is_refused(bad):
    with pytest.raises((TypeError, ValueError), match="clip"):
        rescale(np.eye(4), bad)
    with pytest.raises((TypeError, ValueError), match="config.intensity_clip"):
        RegistrationConfig(intensity_clip=bad)


def test_match_histogram_undoes_a_monotone_change_and_keeps_the_background():
    rng = np.random.default_rng(4)
    ref = np.zeros((64, 64))
    ref[8:56, 8:56] = rng.random((48, 48))
    changed = ref**0.5 * 900 + 100  # gamma, scale and offset; the background becomes 100
    out = match_histogram(changed, ref)
    inside = ref > 0
    assert np.abs(out - ref)[inside].max() < 0.01
    assert np.all(out[~inside] == 0.0)
    hot = ref.copy()
    hot[20, 20] = 50.0
    matched = match_histogram(hot, ref)
    assert matched[20, 20] == ref.max()  # the hot pixel takes the top value; the rest stays put
    inside[20, 20] = False
    assert np.abs(matched - ref)[inside].max() < 0.01
    assert np.all(match_histogram(np.ones((4, 4)), ref) == 0.0)


def test_match_linear_undoes_scale_and_offset_but_not_a_gamma():
    rng = np.random.default_rng(5)
    ref = np.zeros((64, 64))
    ref[8:56, 8:56] = 0.2 + 0.8 * rng.random((48, 48))
    moved = ref * 900 + 100
    moved[10, 10] = 1e6  # a hot pixel does not enter the fit
    out = match_linear(moved, ref)
    keep = np.ones(ref.shape, bool)
    keep[10, 10] = False
    np.testing.assert_allclose(out[keep], ref[keep], atol=2e-3)  # one pixel shifts the quantiles by a rank
    assert np.all(out[ref == 0] == 0.0)  # the background is the reference's background, not a * 100 + b
    curved = match_linear(ref**0.5, ref)
    assert np.abs(curved - ref)[ref > 0].max() > 0.02  # linear only


def test_intensity_match_is_a_checked_config_field():
    assert RegistrationConfig(intensity_match="linear").intensity_match == "linear"
    assert RegistrationConfig(intensity_match=None).intensity_match == "none"  # what `--set intensity_match=none` gives
    with pytest.raises(ValueError, match="config.intensity_match"):
        RegistrationConfig(intensity_match="yes")


def test_label_dice_means_over_shared_labels():
    a = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 3, 3]])
    b = np.array([[1, 1, 2, 0], [1, 1, 2, 0], [0, 0, 0, 0]])
    per = label_dice(a, b, per_label=True)
    assert per == {1: 1.0, 2: pytest.approx(2 * 2 / (4 + 2)), 3: 0.0}
    assert label_dice(a, b) == pytest.approx((1.0 + 2 / 3) / 2)  # label 3 is absent from b: not averaged
    assert np.isnan(label_dice(np.zeros((2, 2), int), np.ones((2, 2), int)))
    with pytest.raises(ValueError, match="labels must be >= 0"):
        label_dice(-a, b)


def test_summarize_reports_label_dice_and_an_identity_scores_the_overlap():
    p = tissue_pair("r16", "r27")
    res = dipreg.RegistrationResult(warped=p.moving, displacement=np.zeros((2, *p.shape)), history=[], config={},
                                    seconds=0.0, moving=p.moving, fixed=p.fixed)
    m = res.metrics(moving_labels=p.moving_labels, fixed_labels=p.fixed_labels)
    assert m["label_dice_before"] == m["label_dice_after"] == pytest.approx(label_dice(p.moving_labels,
                                                                                        p.fixed_labels))
    with pytest.raises(ValueError, match="needs both"):
        res.metrics(moving_labels=p.moving_labels)


def test_tissue_pairs_and_their_splits():
    dev, held, every = tissue_pairs("development"), tissue_pairs("held-out"), tissue_pairs("all")
    assert len(dev) == len(held) == 6 and len(every) == 30
    assert not {p.moving_id for p in held} & {"r16", "r27", "r30"}
    assert {p.meta["split"] for p in every} == {"development", "held-out", "mixed"}
    p = every[0]
    assert p.shape == (256, 256) and 0 <= p.moving.min() and p.moving.max() <= 1
    assert set(np.unique(p.fixed_labels)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(p.fixed_mask, p.fixed_labels > 0)
    with pytest.raises(ValueError, match="same subject"):
        tissue_pair("r16", "r16")
    with pytest.raises(ValueError, match="split"):
        tissue_pairs("train")


def test_quality_check_flags_a_field_that_makes_things_worse():
    img = torch.zeros(1, 1, 32, 32)
    img[..., 10:20, 10:20] = 1.0
    zero = torch.zeros(1, 2, 32, 32)
    good = quality_check(img, img, zero, mae)
    assert good["warning"] is None and good["loss_final"] == good["loss_identity"] == 0.0
    shifted = torch.zeros(1, 2, 32, 32)
    shifted[:, 0] = 6.0
    bad = quality_check(img, img, shifted, mae)
    assert bad["loss_final"] > bad["loss_identity"] and bad["ssim_final"] < bad["ssim_identity"]
    assert "less alike" in bad["warning"] and "intensity_clip" in bad["warning"]


def test_register_warns_when_it_ends_worse_than_it_started():
    """A pair that is already aligned, pushed away by a huge learning rate: the result says so."""
    x = np.zeros((32, 32))
    x[8:24, 10:20] = 1.0
    with pytest.warns(RegistrationWarning, match="less alike"):
        res = dipreg.register(x, x, config="paper", seed=0, progress=False, lr=3.0, iterations=5, **TINY)
    assert res.info["warning"] and res.info["loss_final"] > res.info["loss_identity"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RegistrationWarning)
        ok = dipreg.register(x, x, config="paper", seed=0, progress=False, lr=1e-5, iterations=2, **TINY)
    assert ok.info["warning"] is None


def test_plateau_rule():
    p = Plateau(patience=2, min_delta=0.1)
    assert [p.update(v) for v in (1.0, 0.95, 0.5, 0.45, 0.44)] == [False, False, False, False, True]
    assert not any(Plateau(0, 0.0).update(1.0) for _ in range(10))


def test_register_many_stops_each_pair_on_its_own():
    """A pair whose loss cannot improve (identical images, zero gradient) stops; the other runs on and its
    result equals a register_many run without the converged partner's early stop."""
    x = np.zeros((32, 32))
    x[8:24, 10:20] = 1.0
    y = dipreg.warp(x, np.stack([np.full((32, 32), 1.5), np.full((32, 32), -1.0)]))
    kw = dict(config="paper", progress=False, iterations=12, **TINY)
    res = register_many([(x, y), (x, y)], seed=0, patience=3, min_delta=10.0, **kw)
    assert all(r.info["stopped"] == "converged" and r.info["iterations"] == 4 for r in res)
    alone = dipreg.register(x, y, seed=0, patience=3, min_delta=10.0, **kw)
    assert alone.info["iterations"] == 4
    free = register_many([(x, y)], seed=0, **kw)[0]
    assert free.info["stopped"] == "iterations" and free.info["iterations"] == 12


def test_smooth_readout_is_a_low_pass():
    cfg = get_preset("cpu").replace(smooth=8.0)
    field = make_field(cfg, (64, 64), 0, torch.device("cpu"))
    assert field.grid == (16, 16)  # so the filter is about 2 grid pixels wide
    v = torch.zeros(1, 2, *field.grid)
    v[..., field.grid[0] // 2, field.grid[1] // 2] = 1.0
    out = field.smooth(v)
    assert torch.allclose(out.sum(), torch.tensor(2.0), atol=1e-5)  # mass kept (away from the edges)
    assert out.max() < 0.5 and out[0, 0].argmax() == v[0, 0].argmax()
