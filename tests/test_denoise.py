"""dipreg.methods.denoise: PSNR, seeded noise, and the deep-image-prior denoising loop of chapter 5."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from dipreg.methods.denoise import DenoiseResult, add_noise, dip_denoise, psnr


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rows, cols = np.mgrid[:32, :32] / 31.0
    return 0.2 + 0.6 * ((rows - 0.5) ** 2 + (cols - 0.4) ** 2 < 0.12) + 0.1 * np.sin(6 * cols)


def test_psnr_matches_skimage(image):
    noisy = add_noise(image, 0.1, seed=3)
    assert psnr(noisy, image) == pytest.approx(peak_signal_noise_ratio(image, noisy, data_range=1.0), rel=1e-10)
    assert psnr(2 * noisy, 2 * image, data_range=2.0) == pytest.approx(psnr(noisy, image), rel=1e-10)
    assert psnr(image, image) == float("inf")


def test_psnr_rejects_bad_input(image):
    with pytest.raises(ValueError, match="data_range"):
        psnr(image, image, data_range=0)
    with pytest.raises(ValueError, match="shape"):
        psnr(image, image[:-1])


def test_add_noise_is_seeded_and_has_the_requested_std(image):
    a, b, c = add_noise(image, 0.1, seed=1), add_noise(image, 0.1, seed=1), add_noise(image, 0.1, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert np.std(a - image) == pytest.approx(0.1, rel=0.1)
    assert add_noise(image, 0.5, seed=0, clip=True).min() >= 0.0
    with pytest.raises(ValueError, match="sigma"):
        add_noise(image, -1.0)


def test_dip_denoise_records_the_curve(image):
    noisy = add_noise(image, 0.1, seed=0)
    res = dip_denoise(image, noisy, 40, snapshots=(1, 20, 40), down=(8, 8), in_channels=4, lr=0.01, seed=0,
                      device="cpu")
    assert isinstance(res, DenoiseResult)
    assert res.psnr.shape == res.loss.shape == (40,)
    assert sorted(res.snapshots) == [1, 20, 40]
    assert res.snapshots[40].shape == image.shape and res.final.shape == image.shape
    np.testing.assert_allclose(res.final, res.snapshots[40])
    assert res.psnr_noisy == pytest.approx(psnr(noisy, image))
    assert res.best_psnr == pytest.approx(res.psnr.max())
    assert res.best_psnr == pytest.approx(psnr(res.best, image), abs=1e-3)
    assert res.psnr[res.best_iteration - 1] == res.psnr.max()
    assert res.best_psnr > res.psnr[0] + 3  # the network learns the image
    assert res.loss[-1] < res.loss[0]
    assert res.parameters > 0 and res.device == "cpu"


def test_dip_denoise_is_reproducible(image):
    noisy = add_noise(image, 0.1, seed=0)
    kw = dict(down=(8, 8), in_channels=4, seed=5, input_jitter=0.05)
    a, b = dip_denoise(image, noisy, 10, **kw), dip_denoise(image, noisy, 10, **kw)
    np.testing.assert_array_equal(a.psnr, b.psnr)
    c = dip_denoise(image, noisy, 10, **{**kw, "seed": 6})
    assert not np.array_equal(a.psnr, c.psnr)


def test_dip_denoise_paper_init_starts_flat(image):
    """With N(0, 0.01) weights the first output is close to sigmoid(0) = 0.5 everywhere."""
    noisy = add_noise(image, 0.1, seed=0)
    res = dip_denoise(image, noisy, 1, snapshots=(1,), down=(8, 8), in_channels=4, init_std=0.01)
    assert np.abs(res.snapshots[1] - 0.5).max() < 0.05


@pytest.mark.parametrize("kwargs, match", [
    ({"iterations": 0}, "iterations"),
    ({"snapshots": (0,)}, "snapshots"),
    ({"snapshots": (11,)}, "snapshots"),
    ({"input_jitter": -0.1}, "input_jitter"),
])
def test_dip_denoise_validates(image, kwargs, match):
    args = {"iterations": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        dip_denoise(image, image, args.pop("iterations"), down=(8,), **args)
