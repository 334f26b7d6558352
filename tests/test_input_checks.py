"""Inputs every entry point refuses alike: masked arrays, bad seeds and callbacks; SSIM of huge intensities."""

from __future__ import annotations

import numpy as np
import pytest

from dipreg.methods.classical import register_classical
from dipreg.metrics import ssim
from dipreg.validate import as_image, as_mask


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    a = rng.random((32, 32))
    return a, np.clip(a + 0.1 * rng.standard_normal((32, 32)), 0, 1)


def test_masked_arrays_are_refused(images):
    a, _ = images
    masked = np.ma.masked_less(a, 0.5)
    with pytest.raises(TypeError, match=r"moving: .*masked array.*x\.filled\(value\)"):
        as_image(masked, "moving")
    with pytest.raises(TypeError, match=r"mask: .*masked array.*getmaskarray"):
        as_mask(np.ma.MaskedArray(a > 0.5, mask=a < 0.1), "mask", a.shape)
    with pytest.raises(TypeError, match="masked array"):
        ssim(masked, a)


def test_ssim_of_huge_and_tiny_intensities(images):
    a, b = images
    ref = ssim(a, b)
    for scale in (1e154, 1e300, 1e-300, 2.0**40):
        value = ssim(a * scale, b * scale, data_range=scale)
        assert np.isfinite(value) and value == pytest.approx(ref, rel=1e-12), scale
    assert ssim(a * 2.0**40, b * 2.0**40, data_range=2.0**40) == ref  # a power-of-two scale: bit for bit


@pytest.mark.parametrize("bad, error, message", [
    ({"seed": "a"}, ValueError, r"seed: expected an integer from 0 to 2\*\*63 - 1, got 'a'"),
    ({"seed": -1}, ValueError, "seed: expected an integer"),
    ({"callback": 5}, TypeError, "callback: expected a function"),
])
def test_register_classical_refuses_what_register_refuses(images, bad, error, message):
    a, b = images
    with pytest.raises(error, match=message):
        register_classical(a, b, iterations=1, levels=1, progress=False, **bad)
