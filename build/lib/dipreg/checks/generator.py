"""Checks for the exercises of the chapter "Building the generator" (``book/06_generator.ipynb``)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from fractions import Fraction

import numpy as np
import torch
from torch import nn

from dipreg.checks import CheckFailed
from dipreg.checks.dip import Variants, check_cases
from dipreg.generator import SkipGenerator, init_normal_

# ---------------------------------------------------------------------------------------------------
# Receptive field of a chain of convolutions


def reference_receptive_field(layers: Sequence[tuple[int, int | Fraction]]) -> int | Fraction:
    """Receptive field (pixels along one axis) of a chain of convolutions given as ``(kernel, stride)``.

    Walking from the input: ``r = 1``, ``jump = 1``; each layer adds ``(kernel - 1) * jump`` to ``r``
    and then multiplies ``jump`` (the input-pixel distance between neighbouring outputs) by its stride.
    A x2 upsampling is a layer with stride ``Fraction(1, 2)`` (kernel 2 for bilinear, 1 for nearest).
    """
    r, jump = 1, 1
    for kernel, stride in layers:
        r += (kernel - 1) * jump
        jump *= stride
    return int(r) if r == int(r) else r


def _rf_case(rng: np.random.Generator) -> tuple[tuple, int, Variants]:
    n = int(rng.integers(4, 8))
    layers = [(int(rng.choice([1, 3, 3, 5, 7])), int(rng.choice([1, 2]))) for _ in range(n)]
    layers[0] = (3, 2)  # at least one early stride, so that the jump matters
    layers[1] = (3, 1)
    r = reference_receptive_field(layers)
    after, jump = 1, 1
    for kernel, stride in layers:
        jump *= stride
        after += (kernel - 1) * jump
    variants = {
        "off by one: a single pixel already has a receptive field of 1, start from r = 1 (not 0)": r - 1,
        "off by one: one pixel too many; start from r = 1 and add (kernel - 1) * jump per layer": r + 1,
        "each layer adds (kernel - 1) * jump, not kernel * jump": 1 + sum(k * int(np.prod([s for _, s in layers[:i]]))
                                                                        for i, (k, _) in enumerate(layers)),
        "the strides are ignored: after a stride-2 layer, one step of the next kernel spans 2 input pixels "
        "(multiply by the jump, the product of the strides *before* the layer)": 1 + sum(k - 1 for k, _ in layers),
        "the jump is updated too early: a layer's own stride does not widen its own kernel; add "
        "(kernel - 1) * jump first, then multiply jump by the stride": after,
    }
    return (layers,), r, variants


def check_receptive_field(fn: Callable[[Sequence[tuple[int, int]]], int], *, seed: int | None = None) -> bool:
    """Check ``fn(layers) -> receptive field`` for lists of ``(kernel, stride)`` convolutions."""
    return check_cases(fn, _rf_case, "receptive field", trials=5, seed=seed, atol=0, rtol=0)


# ---------------------------------------------------------------------------------------------------
# The paper's initialisation N(0, 0.01)


def _small_generator() -> nn.Module:
    return SkipGenerator(3, 2, down=(4, 8), up=(4, 8), skip=2)


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def _norms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]


def check_init_normal(fn: Callable[..., nn.Module | None], *, seed: int | None = None) -> bool:
    """Check ``fn(module, std, generator)``: conv weights ~ N(0, std**2) drawn from ``generator``, biases 0.

    The reference is :func:`dipreg.generator.init_normal_`. Normalisation layers must stay as they are
    (weight 1, bias 0), and the draws must come from ``generator`` in the order of ``module.modules()``
    so that a seed gives the same network.
    """
    what = "init_normal"
    rng = np.random.default_rng(seed)
    for trial in range(3):
        std = float(rng.choice([0.01, 0.02, 0.05]))
        torch_seed = int(rng.integers(0, 2**31))
        base = _small_generator()
        with torch.no_grad():  # make the starting state unlike the target in every respect
            for m in base.modules():
                if isinstance(m, nn.Conv2d) and m.bias is not None:
                    m.bias.fill_(0.3)
        mine, ref = copy.deepcopy(base), copy.deepcopy(base)
        try:
            out = fn(mine, std, torch.Generator().manual_seed(torch_seed))
        except NotImplementedError:
            print(f"{what}: not implemented yet - replace the `raise NotImplementedError` with your code.")
            return False
        except Exception as exc:
            raise CheckFailed(f"{what}: your function raised {type(exc).__name__}: {exc}") from exc
        if isinstance(out, nn.Module) and out is not mine:
            mine = out
        init_normal_(ref, std, torch.Generator().manual_seed(torch_seed))
        _diagnose_init(mine, ref, base, std, f"{what} (trial {trial + 1}/3, std={std})")
    print(f"{what}: correct on 3 random networks.")
    return True


def _diagnose_init(mine: nn.Module, ref: nn.Module, base: nn.Module, std: float, what: str) -> None:
    convs, ref_convs, base_convs = _convs(mine), _convs(ref), _convs(base)
    if len(convs) != len(ref_convs):
        raise CheckFailed(f"{what}: the network you returned has {len(convs)} convolutions, expected {len(ref_convs)}")
    untouched = [i for i, (c, b) in enumerate(zip(convs, base_convs, strict=True)) if torch.equal(c.weight, b.weight)]
    if len(untouched) == len(convs):
        raise CheckFailed(f"{what}: no convolution weight changed; modify the weights in place "
                          "(torch.nn.init.normal_ or weight.normal_ under torch.no_grad())")
    if untouched:
        raise CheckFailed(f"{what}: {len(untouched)} of {len(convs)} convolutions kept their old weights (e.g. "
                          f"number {untouched[0]}); visit every nn.Conv2d, e.g. with module.modules(), not children()")
    for n, b in zip(_norms(mine), _norms(base), strict=False):
        if not (torch.equal(n.weight, b.weight) and torch.equal(n.bias, b.bias)):
            raise CheckFailed(f"{what}: a normalisation layer ({type(n).__name__}) was changed; initialise only the "
                              "convolutions: BatchNorm must keep weight 1 and bias 0")
    if any(c.bias is not None and not torch.all(c.bias == 0) for c in convs):
        raise CheckFailed(f"{what}: the convolution biases must be set to zero")
    weights = torch.cat([c.weight.detach().flatten() for c in convs])
    measured = float(weights.std())
    if abs(float(weights.mean())) > 5 * std / np.sqrt(weights.numel()) + 1e-3 * std:
        raise CheckFailed(f"{what}: the weights have mean {float(weights.mean()):.3g}; they should be zero-mean")
    if abs(measured / np.sqrt(std) - 1) < 0.1:
        raise CheckFailed(f"{what}: the weights have standard deviation {measured:.3g} = sqrt({std}): you read std "
                          f"as a variance. torch.nn.init.normal_(w, mean, std) takes the standard deviation: pass "
                          f"std={std} directly")
    if abs(measured / std**2 - 1) < 0.1:
        raise CheckFailed(f"{what}: the weights have standard deviation {measured:.3g} = {std}**2: pass std itself, "
                          "not its square")
    if abs(measured / std - 1) > 0.1:
        raise CheckFailed(f"{what}: the weights have standard deviation {measured:.3g}, expected {std}")
    for i, (c, r) in enumerate(zip(convs, ref_convs, strict=True)):
        if not torch.equal(c.weight, r.weight):
            raise CheckFailed(f"{what}: the statistics are right, but convolution {i} differs from the reference "
                              "draw: use the `generator` argument for every draw (normal_(..., generator=generator)) "
                              "and visit the convolutions in the order of module.modules()")
