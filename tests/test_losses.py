"""dipreg.losses against independent implementations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from dipreg.losses import lncc


def lncc_reference(warped: np.ndarray, fixed: np.ndarray, window: int, eps: float = 1e-5) -> float:
    """1 - mean NCC^2 with scipy's box filter, zeros outside the image, channel by channel."""
    def box(x):
        return ndimage.uniform_filter(x, size=(1, 1, window, window), mode="constant", cval=0.0)

    mw, mf = box(warped), box(fixed)
    vw, vf = box(warped * warped) - mw**2, box(fixed * fixed) - mf**2
    cov = box(warped * fixed) - mw * mf
    return float(1 - (cov**2 / (np.clip(vw, 0, None) * np.clip(vf, 0, None) + eps)).mean())


@pytest.mark.parametrize(("shape", "window"), [((1, 1, 64, 48), 9), ((2, 3, 20, 31), 5), ((1, 1, 7, 7), 9)])
def test_lncc_matches_a_direct_box_filter(shape, window):
    rng = np.random.default_rng(sum(shape) + window)
    warped, fixed = rng.random(shape), rng.random(shape)
    fixed[..., : shape[-2] // 2, :] += warped[..., : shape[-2] // 2, :]  # correlated in half the image
    got = lncc(torch.from_numpy(warped), torch.from_numpy(fixed), window)
    assert float(got) == pytest.approx(lncc_reference(warped, fixed, window), abs=1e-10)


def test_lncc_ignores_a_change_of_contrast():
    """Rescaling one image's intensities does not make it match worse (the zeros outside the image rescale
    too; eps only matters in flat windows, less so at higher contrast), while a mirrored image matches badly."""
    rng = np.random.default_rng(0)
    img = ndimage.gaussian_filter(rng.random((1, 1, 64, 64)), (0, 0, 2, 2))
    img = torch.from_numpy((img - img.min()) / (img.max() - img.min()))
    same, rescaled, mirrored = (float(lncc(img, other)) for other in (img, 3.0 * img, torch.flip(img, (-1,))))
    assert rescaled <= same < 0.5 * mirrored
