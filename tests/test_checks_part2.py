"""The exercise checks of chapters 5-8: each passes dipreg's reference, reports a stub as not implemented,
and names the right mistake for typical wrong answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dipreg.generator import init_normal_
from dipreg.metrics import dice, endpoint_error, folded_fraction, jacobian_determinant
from dipreg.teaching.checks import CheckFailed
from dipreg.teaching.checks import dip as cdip
from dipreg.teaching.checks import evaluation as ceval
from dipreg.teaching.checks import generator as cgen
from dipreg.teaching.checks import prior as cprior
from dipreg.transform import warp_tensor


def stub(*args, **kwargs):
    raise NotImplementedError


def fails_with(check, fn, *fragments: str) -> str:
    with pytest.raises(CheckFailed) as info:
        check(fn, seed=0)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


# ---------------------------------------------------------------- every check: reference and stub

REFERENCES = [
    (cprior.check_psnr, cprior.reference_psnr),
    (cprior.check_discrepancy_stop, cprior.reference_discrepancy_stop),
    (cdip.check_registration_loss, cdip.reference_registration_loss),
    (cdip.check_stopping_iteration, cdip.reference_stopping_iteration),
    (cgen.check_receptive_field, cgen.reference_receptive_field),
    (cgen.check_init_normal, init_normal_),
    (ceval.check_jacobian_determinant, jacobian_determinant),
    (ceval.check_folded_fraction, folded_fraction),
    (ceval.check_dice, dice),
    (ceval.check_endpoint_error, endpoint_error),
]


@pytest.mark.parametrize("check, reference", REFERENCES, ids=[c.__name__ for c, _ in REFERENCES])
@pytest.mark.parametrize("seed", [0, 1, None])
def test_reference_passes(check, reference, seed, capsys):
    assert check(reference, seed=seed) is True
    assert "correct" in capsys.readouterr().out


@pytest.mark.parametrize("check", [c for c, _ in REFERENCES], ids=[c.__name__ for c, _ in REFERENCES])
def test_stub_is_not_implemented(check, capsys):
    assert check(stub) is False
    assert "not implemented yet" in capsys.readouterr().out


@pytest.mark.parametrize("check", [c for c, _ in REFERENCES], ids=[c.__name__ for c, _ in REFERENCES])
def test_none_and_exceptions_are_reported(check):
    with pytest.raises(CheckFailed):
        check(lambda *a: None, seed=0)

    def broken(*args):
        raise KeyError("oops")

    fails_with(check, broken, "raised KeyError")


# ---------------------------------------------------------------- chapter 5: PSNR


def psnr_with(log=np.log10, factor=10.0, square_peak=True, rmse=False, peak=None):
    def fn(estimate, reference, data_range=1.0):
        mse = np.mean((estimate - reference) ** 2)
        top = (data_range if peak is None else peak(estimate, reference)) ** (2 if square_peak else 1)
        return factor * log(top / (np.sqrt(mse) if rmse else mse))

    return fn


@pytest.mark.parametrize("fn, fragment", [
    (psnr_with(log=np.log), "natural logarithm"),
    (psnr_with(factor=20.0), "factor is 10"),
    (psnr_with(square_peak=False), "peak is squared"),
    (psnr_with(rmse=True), "RMSE"),
    (psnr_with(peak=lambda e, r: r.max()), "not the largest value in the image"),
    (lambda e, r, d=1.0: 10 * np.log10(np.mean((e - r) ** 2) / d**2), "upside down"),
    (lambda e, r, d=1.0: 10 * np.log10(d**2 / np.sum((e - r) ** 2)), "averaged"),
])
def test_psnr_diagnoses(fn, fragment):
    fails_with(cprior.check_psnr, fn, fragment)


def test_psnr_unknown_mistake_reports_difference():
    fails_with(cprior.check_psnr, lambda e, r, d=1.0: cprior.reference_psnr(e, r, d) + 0.5, "you returned")


def discrepancy_with(threshold=lambda s: s**2, offset=0, last=False, above=False):
    def fn(losses, sigma):
        hits = [i + 1 for i, v in enumerate(losses) if (v > threshold(sigma) if above else v <= threshold(sigma))]
        if not hits:
            return len(losses)
        return (hits[-1] if last or above else hits[0]) + offset

    return fn


@pytest.mark.parametrize("fn, fragment", [
    (discrepancy_with(threshold=lambda s: s), "*variance* sigma**2"),
    (discrepancy_with(offset=-1), "0-based"),
    (discrepancy_with(last=True), "last iteration below"),
    (discrepancy_with(above=True), "last iteration *above*"),
    (discrepancy_with(threshold=lambda s: 2 * s**2), "not 2 sigma**2"),
])
def test_discrepancy_diagnoses(fn, fragment):
    fails_with(cprior.check_discrepancy_stop, fn, fragment)


# ---------------------------------------------------------------- chapter 7: registration loss, stopping


def test_registration_loss_diagnoses():
    def mse(m, f, u):
        return (warp_tensor(m, u) - f).pow(2).mean()

    def swapped_images(m, f, u):
        return (warp_tensor(f, u) - m).abs().mean()

    def minus(m, f, u):
        return (warp_tensor(m, -u) - f).abs().mean()

    def channels(m, f, u):
        return (warp_tensor(m, u.flip(1)) - f).abs().mean()

    def normalised(m, f, u):
        grid = torch.nn.functional.affine_grid(torch.eye(2, 3)[None], m.shape, align_corners=True)
        return (torch.nn.functional.grid_sample(m, grid + u.permute(0, 2, 3, 1).flip(-1), align_corners=True)
                - f).abs().mean()

    def unwarped(m, f, u):
        return (m - f).abs().mean() + 0 * u.sum()

    for fn, fragment in [(mse, "mean *squared* error"), (swapped_images, "warped the fixed image"),
                         (minus, "wrong sign"), (channels, "swapped"), (normalised, "normalised"),
                         (unwarped, "nothing was warped")]:
        fails_with(cdip.check_registration_loss, fn, fragment)


def test_registration_loss_must_stay_differentiable():
    fails_with(cdip.check_registration_loss,
               lambda m, f, u: cdip.reference_registration_loss(m, f, u).item(), "returned a float")
    fails_with(cdip.check_registration_loss,
               lambda m, f, u: cdip.reference_registration_loss(m, f, u.detach()), "does not depend on u")
    fails_with(cdip.check_registration_loss,
               lambda m, f, u: cdip.reference_registration_loss(m, f, u).reshape(1), "scalar")


def stopping_with(previous=False, delta_used=True, extra=0, index=False):
    def fn(losses, patience, min_delta):
        best, prev, since = np.inf, np.inf, 0
        for it, value in enumerate(losses):
            anchor = prev if previous else best
            if value < anchor - (min_delta if delta_used else 0.0):
                best, since = min(best, value), 0
            else:
                since += 1
                if patience and since >= patience + extra:
                    return it if index else it + 1
            prev = value
        return len(losses)

    return fn


@pytest.mark.parametrize("fn, fragment", [
    (stopping_with(previous=True), "best loss so far"),
    (stopping_with(delta_used=False), "min_delta is ignored"),
    (stopping_with(extra=1), "`>=`, not `>`"),
    (stopping_with(extra=-1), "one iteration early"),
    (stopping_with(index=True), "not the index"),
])
def test_stopping_diagnoses(fn, fragment):
    fails_with(cdip.check_stopping_iteration, fn, fragment)


def test_stopping_reference_matches_register():
    """The reference rule is the one dipreg.register applies (patience on the training loss)."""
    import dipreg

    rng = np.random.default_rng(0)
    moving = rng.random((16, 16))
    fixed = np.roll(moving, 1, axis=0)
    res = dipreg.register(moving, fixed, config="cpu", seed=0, progress=False, iterations=60, patience=3,
                          min_delta=1e-3, down=(4, 4), up=(4, 4), in_channels=2, readout_draws=1,
                          detail_steps=0)
    history = res.history
    assert cdip.reference_stopping_iteration(history, 3, 1e-3) == len(history)


# ---------------------------------------------------------------- chapter 6: receptive field, initialisation


def rf_with(start=1, kernel_minus=1, use_jump=True, early_jump=False):
    def fn(layers):
        r, jump = start, 1
        for k, s in layers:
            if early_jump:
                jump *= s
            r += (k - kernel_minus) * (jump if use_jump else 1)
            if not early_jump:
                jump *= s
        return r

    return fn


@pytest.mark.parametrize("fn, fragment", [
    (rf_with(start=0), "start from r = 1 (not 0)"),
    (rf_with(start=2), "one pixel too many"),
    (rf_with(kernel_minus=0), "not kernel * jump"),
    (rf_with(use_jump=False), "strides are ignored"),
    (rf_with(early_jump=True), "updated too early"),
])
def test_receptive_field_diagnoses(fn, fragment):
    fails_with(cgen.check_receptive_field, fn, fragment)


def init_with(std_fn=lambda s: s, zero_bias=True, touch_norm=False, use_generator=True, skip_first=False):
    def fn(module, std, generator):
        convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
        for i, m in enumerate(convs):
            if skip_first and i == 0:
                continue
            torch.nn.init.normal_(m.weight, 0.0, std_fn(std), generator=generator if use_generator else None)
            if zero_bias and m.bias is not None:
                torch.nn.init.zeros_(m.bias)
        if touch_norm:
            for m in module.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    torch.nn.init.normal_(m.weight, 0.0, std)
        return module

    return fn


@pytest.mark.parametrize("fn, fragment", [
    (init_with(std_fn=np.sqrt), "read std as a variance"),
    (init_with(std_fn=lambda s: s**2), "not its square"),
    (init_with(zero_bias=False), "biases must be set to zero"),
    (init_with(touch_norm=True), "normalisation layer"),
    (init_with(use_generator=False), "use the `generator` argument"),
    (init_with(skip_first=True), "kept their old weights"),
    (lambda module, std, generator: None, "no convolution weight changed"),
])
def test_init_diagnoses(fn, fragment):
    fails_with(cgen.check_init_normal, fn, fragment)


def test_init_accepts_none_return_when_in_place(capsys):
    def in_place(module, std, generator):
        init_normal_(module, std, generator)

    assert cgen.check_init_normal(in_place) is True


# ---------------------------------------------------------------- chapter 8: metrics


def det_with(identity=1.0, swap=False, plus=False, offdiag=True):
    def fn(u):
        (a, b), (c, d) = np.gradient(u[0]), np.gradient(u[1])
        if swap:
            a, b, c, d = b, a, d, c
        if not offdiag:
            b = c = 0
        return (identity + a) * (identity + d) + (1 if plus else -1) * b * c

    return fn


def det_forward(u):
    g = [np.diff(u[i], axis=j, append=u[i].take([-1], axis=j)) for i in range(2) for j in range(2)]
    return (1 + g[0]) * (1 + g[3]) - g[1] * g[2]


@pytest.mark.parametrize("fn, fragment", [
    (det_with(identity=0.0), "forgot the identity"),
    (det_with(swap=True), "axes (or the channels) are swapped"),
    (lambda u: det_with()(u[::-1]), "axes (or the channels) are swapped"),
    (det_with(plus=True), "- J01 J10, not + J01 J10"),
    (det_with(offdiag=False), "off-diagonal terms are missing"),
    (lambda u: 1 + np.gradient(u[0], axis=0) + np.gradient(u[1], axis=1), "linearisation"),
    (det_forward, "central differences"),
])
def test_jacobian_diagnoses(fn, fragment):
    fails_with(ceval.check_jacobian_determinant, fn, fragment)


def test_jacobian_transposed_channels_and_axes_is_fine(capsys):
    """Swapping both channels and derivative axes gives P J P, whose determinant is the same."""
    def both(u):
        (a, b), (c, d) = np.gradient(u[1]), np.gradient(u[0])
        return (1 + b) * (1 + c) - a * d

    assert ceval.check_jacobian_determinant(both) is True


@pytest.mark.parametrize("fn, fragment", [
    (lambda u: 100 * folded_fraction(u), "percentage"),
    (lambda u: float(np.mean(jacobian_determinant(u) < 1)), "compression"),
    (lambda u: 1 - folded_fraction(u), "*not* folded"),
    (lambda u: float(np.sum(jacobian_determinant(u) <= 0)), "divide"),
])
def test_folding_diagnoses(fn, fragment):
    fails_with(ceval.check_folded_fraction, fn, fragment)


def test_folding_cases_fold():
    rng = np.random.default_rng(0)
    for _ in range(5):
        (u,), frac, _ = ceval._folding_case(rng)
        assert 0.005 < frac < 0.5


@pytest.mark.parametrize("fn, fragment", [
    (lambda a, b: np.logical_and(a, b).sum() / np.logical_or(a, b).sum(), "Jaccard"),
    (lambda a, b: np.logical_and(a, b).sum() / (a.sum() + b.sum()), "factor 2"),
    (lambda a, b: 2 * np.logical_and(a, b).sum() / np.logical_or(a, b).sum(), "not the union"),
    (lambda a, b: 2 * np.logical_or(a, b).sum() / (a.sum() + b.sum()), "logical and"),
])
def test_dice_diagnoses(fn, fragment):
    fails_with(ceval.check_dice, fn, fragment)


def test_dice_empty_masks():
    def no_guard(a, b):
        return 2 * int(np.logical_and(a, b).sum()) // 1 / int(a.sum() + b.sum())

    fails_with(ceval.check_dice, no_guard, "two empty masks", "ZeroDivisionError")

    def zero(a, b):
        total = a.sum() + b.sum()
        return 0.0 if total == 0 else dice(a, b)

    fails_with(ceval.check_dice, zero, "two empty masks gave 0.0")

    def one(a, b):
        total = a.sum() + b.sum()
        return 1.0 if total == 0 else dice(a, b)

    assert ceval.check_dice(one) is True


@pytest.mark.parametrize("fn, fragment", [
    (lambda e, r: float(((e - r) ** 2).sum(0).mean()), "square root is missing"),
    (lambda e, r: float(np.sqrt(((e - r) ** 2).sum(0).mean())), "root-mean-square"),
    (lambda e, r: float(np.abs(e - r).mean()), "averaged separately"),
    (lambda e, r: float(np.abs(e - r).sum(0).mean()), "L1 length"),
    (lambda e, r: float(np.sqrt(((e - r) ** 2).sum(0)).max()), "largest error"),
])
def test_epe_diagnoses(fn, fragment):
    fails_with(ceval.check_endpoint_error, fn, fragment)


@pytest.mark.parametrize("fn, fragment", [
    (lambda e, r, d=1.0: 10 * np.log10(1.0 / np.mean((e - r) ** 2)), "ignored the data_range argument"),
    (lambda e, r, d=1.0: 10 * np.log10(255.0**2 / np.mean((e - r) ** 2)), "not a fixed 255"),
    (psnr_with(peak=lambda e, r: e.max()), "largest value in the noisy estimate"),
    (psnr_with(peak=lambda e, r: np.ptp(e)), "range of values (max - min)"),
    (lambda e, r, d=1.0: float(np.mean((e - r) ** 2)), "returned the mean squared error"),
    (lambda e, r, d=1.0: float(np.sqrt(np.mean((e - r) ** 2))), "root-mean-square error"),
])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_psnr_diagnoses_data_range_and_mse(fn, fragment, seed):
    with pytest.raises(CheckFailed) as info:
        cprior.check_psnr(fn, seed=seed)
    assert fragment in str(info.value), str(info.value)
