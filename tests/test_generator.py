"""The skip generator and its initialisation."""

import pytest
import torch

from dipreg.generator import SkipGenerator, init_normal_


@pytest.mark.parametrize("shape", [(64, 64), (48, 80), (37, 53)])
def test_output_shape_matches_input_for_any_size(shape):
    net = SkipGenerator(8, 2, (8, 16, 16), (8, 16, 16), 4)
    assert net(torch.randn(1, 8, *shape)).shape == (1, 2, *shape)


def test_dip_reference_parameter_count():
    """The DIP notebooks' configuration (32 inputs, 128 channels at 5 scales, 4 skip) has 2,217,702 parameters."""
    net = SkipGenerator(32, 2, (128,) * 5, (128,) * 5, 4)
    assert sum(p.numel() for p in net.parameters()) == 2_217_702


def test_paper_init_gives_near_identity_output():
    torch.manual_seed(0)
    net = init_normal_(SkipGenerator(32, 2, (16, 32, 64), (16, 32, 64), 4), std=0.01)
    out = net(0.1 * torch.randn(1, 32, 64, 64))
    assert out.std() < 0.1  # about 0.01 * sqrt(16) = 0.04
    default = SkipGenerator(32, 2, (16, 32, 64), (16, 32, 64), 4)
    assert default(0.1 * torch.randn(1, 32, 64, 64)).std() > out.std()


def test_init_is_seeded_by_generator():
    a = init_normal_(SkipGenerator(4, 2, (4, 4), (4, 4), 2), generator=torch.Generator().manual_seed(3))
    b = init_normal_(SkipGenerator(4, 2, (4, 4), (4, 4), 2), generator=torch.Generator().manual_seed(3))
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_no_skip_connections_and_options():
    net = SkipGenerator(4, 2, (8, 8), (8, 8), 0, upsample="nearest", padding="reflection", norm="none",
                        activation="elu")
    assert net.body.skip is None
    assert net(torch.randn(1, 4, 16, 16)).shape == (1, 2, 16, 16)


@pytest.mark.parametrize("kw", [{"upsample": "cubic"}, {"padding": "circular"}, {"norm": "layer"},
                                {"activation": "gelu"}])
def test_bad_options_raise(kw):
    with pytest.raises(ValueError, match="expected one of"):
        SkipGenerator(4, 2, (8,), (8,), 4, **kw)


def test_mismatched_scales_raise():
    with pytest.raises(ValueError, match="same non-zero length"):
        SkipGenerator(4, 2, (8, 8), (8,), 4)
