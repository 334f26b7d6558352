"""Checks for the exercises of the chapter "Building the generator" (``book/06_generator.ipynb``)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dipreg.generator import SkipGenerator, init_normal_
from dipreg.teaching.checks import CheckFailed
from dipreg.teaching.checks.cases import Variants, check_cases

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


# ---------------------------------------------------------------------------------------------------
# One scale of the skip generator, written with torch.nn.functional


def scale_parameters(scale: nn.Module) -> dict[str, tuple[torch.Tensor, ...]]:
    """The weights of one scale of :class:`dipreg.generator.SkipGenerator` (``net.body``, ``net.body.inner``,
    ...) by role, for the exercise that writes the scale's forward pass with ``torch.nn.functional``.

    Keys ``"skip"``, ``"down1"``, ``"down2"``, ``"merge1"``, ``"merge2"``: the conv -> norm -> activation
    blocks as ``(conv_weight, conv_bias, norm_weight, norm_bias)``; ``"merge_norm"``: the normalisation
    of the concatenated branches as ``(norm_weight, norm_bias)``. The tensors are the module's own (no
    copies). The scale must have a skip branch and batch (or no) normalisation with an affine part.
    """
    if getattr(scale, "skip", None) is None:
        raise ValueError("scale_parameters: this scale has no skip branch (skip=0)")

    def block(seq: nn.Module) -> tuple[torch.Tensor, ...]:
        conv, norm = seq[0], seq[1]
        return conv.weight, conv.bias, norm.weight, norm.bias

    return {"skip": block(scale.skip), "down1": block(scale.down[0]), "down2": block(scale.down[1]),
            "merge_norm": (scale.merge_norm.weight, scale.merge_norm.bias),
            "merge1": block(scale.merge[0]), "merge2": block(scale.merge[1])}


def _norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, how: str) -> torch.Tensor:
    """Batch normalisation in training mode (``how="batch"``) and the usual ways to get it wrong."""
    if how == "batch":
        return F.batch_norm(x, None, None, weight, bias, training=True, eps=1e-5)
    if how == "running":  # evaluation mode with fresh running statistics (mean 0, variance 1): affine only
        return x * weight.view(1, -1, 1, 1) / np.sqrt(1 + 1e-5) + bias.view(1, -1, 1, 1)
    if how == "unbiased":
        mean, var = x.mean((0, 2, 3), keepdim=True), x.var((0, 2, 3), keepdim=True, unbiased=True)
    elif how == "instance":
        mean, var = x.mean((2, 3), keepdim=True), x.var((2, 3), keepdim=True, unbiased=False)
    else:
        raise ValueError(how)
    return (x - mean) / torch.sqrt(var + 1e-5) * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


def scale_forward_variant(x: torch.Tensor, p: dict[str, tuple[torch.Tensor, ...]],
                          inner: Callable[[torch.Tensor], torch.Tensor] | None = None, *, pad: bool = True,
                          act: str = "leaky", act_first: bool = False, stride_on: str = "first",
                          skip_first: bool = True, merge_norm: bool = True, upsample: str = "bilinear",
                          norm: str = "batch") -> torch.Tensor:
    """The forward pass of one bilinear, zero-padded, batch-normalised scale, written with
    ``torch.nn.functional`` from :func:`scale_parameters`; the keywords make the typical mistakes
    (all defaults: the right answer, equal to the module's own forward in training mode)."""
    slopes = {"leaky": 0.2, "leaky-default": 0.01}

    def activation(y: torch.Tensor) -> torch.Tensor:
        if act == "none":
            return y
        if act == "relu":
            return F.relu(y)
        return F.leaky_relu(y, slopes[act])

    def block(y: torch.Tensor, params: tuple[torch.Tensor, ...], stride: int = 1) -> torch.Tensor:
        w, b, gamma, beta = params
        k = w.shape[-1]
        y = F.conv2d(y, w, b, stride=stride, padding=(k - 1) // 2 if pad else 0)
        if act_first:
            return _norm(activation(y), gamma, beta, norm)
        return activation(_norm(y, gamma, beta, norm))

    strides = {"first": (2, 1), "second": (1, 2), "both": (2, 2)}[stride_on]
    deep = block(block(x, p["down1"], strides[0]), p["down2"], strides[1])
    if inner is not None:
        deep = inner(deep)
    if upsample == "bilinear":
        deep = F.interpolate(deep, size=x.shape[-2:], mode="bilinear", align_corners=False)
    elif upsample == "bilinear-aligned":
        deep = F.interpolate(deep, size=x.shape[-2:], mode="bilinear", align_corners=True)
    else:
        deep = F.interpolate(deep, size=x.shape[-2:], mode=upsample)
    skip = block(x, p["skip"])
    both = torch.cat([skip, deep] if skip_first else [deep, skip], dim=1)
    if merge_norm:
        both = _norm(both, *p["merge_norm"], norm)
    return block(block(both, p["merge1"]), p["merge2"])


_SCALE_ERRORS = [
    ("Sizes of tensors must match except in dimension 1.",
     "the skip branch and the upsampled deep branch have different sizes: pad each k x k convolution by "
     "(k - 1) // 2 and upsample the deep branch to the exact size of x (size=x.shape[-2:]), not by a factor 2, "
     "which misses odd sizes"),
    ("Sizes of tensors must match except in dimension",
     "the branches were concatenated along the wrong axis: torch.cat([skip, deep], dim=1) joins the channels"),
    ("channels", "a convolution received the wrong number of channels: concatenate the skip and the deep "
     "branch along the channel axis (dim=1), skip first, and give each block its own weights"),
    ("running_mean", "use batch statistics: F.batch_norm(x, None, None, weight, bias, training=True)"),
]


def _scale_case(rng: np.random.Generator, depth: int) -> tuple[tuple, torch.Tensor, Variants]:
    cin = int(rng.integers(2, 5))
    width = int(rng.choice([4, 6]))
    skip = int(rng.choice([2, 3]))
    torch_seed = int(rng.integers(0, 2**31))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed)
        net = SkipGenerator(cin, 2, down=(width,) * depth, up=(width + 2,) * depth, skip=skip)
        with torch.no_grad():  # norms that are not the identity, so that every normalisation shows
            for m in _norms(net):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.3)
        x = torch.randn(2, cin, int(rng.integers(11, 16)) | 1, int(rng.integers(16, 22)))
    scale = net.body
    p = {k: tuple(t.detach() for t in v) for k, v in scale_parameters(scale).items()}
    inner = scale.inner
    with torch.no_grad():
        expected = scale(x)

        def v(**kw: Any) -> torch.Tensor | None:
            try:
                return scale_forward_variant(x, p, inner, **kw)
            except RuntimeError:  # a mistake that cannot even run on this input
                return None

        variants: Variants = {
            "the output shrank: a k x k convolution needs zero padding (k - 1) // 2 on each side to keep the size "
            "(padding=1 for 3 x 3, 0 for 1 x 1)": v(pad=False),
            "the activation is missing: every block is conv -> norm -> LeakyReLU(0.2)": v(act="none"),
            "LeakyReLU's slope is 0.2 here; F.leaky_relu's default negative_slope is 0.01":
                v(act="leaky-default"),
            "that is ReLU; the generator uses LeakyReLU with slope 0.2 (negative inputs keep a fifth of their "
            "value)": v(act="relu"),
            "the activation comes after the normalisation: conv -> norm -> activation": v(act_first=True),
            "the stride is on the wrong convolution: the *first* 3 x 3 conv of the deep branch has stride 2, the "
            "second stride 1": v(stride_on="second"),
            "only the first 3 x 3 conv of the deep branch has stride 2; the second keeps the size":
                v(stride_on="both"),
            "the concatenation order is reversed: torch.cat([skip, deep], dim=1), skip branch first (the merge "
            "weights expect the skip channels first)": v(skip_first=False),
            "the normalisation of the concatenated branches (merge_norm) is missing before the merge convs":
                v(merge_norm=False),
            "the deep branch is upsampled with align_corners=True; the skip network's bilinear upsampling uses "
            "PyTorch's default align_corners=False": v(upsample="bilinear-aligned"),
            "the deep branch is upsampled with nearest neighbour; this scale uses bilinear upsampling":
                v(upsample="nearest"),
            "the normalisation uses the running statistics (evaluation mode); in the generator batch "
            "normalisation runs in training mode, with the mean and variance of the batch (training=True)":
                v(norm="running"),
            "the variance is the unbiased one (divided by n - 1); batch normalisation divides by n":
                v(norm="unbiased"),
            "each sample was normalised on its own (instance norm); batch norm takes the mean and variance over "
            "the batch and the pixels together, dims (0, 2, 3)": v(norm="instance"),
        }
    return (x, p, inner), expected, variants


def check_scale_forward(fn: Callable[..., torch.Tensor], *, seed: int | None = None) -> bool:
    """Check ``fn(x, p, inner) -> tensor``: the forward pass of one scale of the skip generator written with
    ``torch.nn.functional`` from the weights ``p`` of :func:`scale_parameters`, against the module's own forward
    (:mod:`dipreg.generator`, training mode). ``inner`` is the next, coarser scale (a callable) or ``None`` at the
    bottom; the check tries both. Shapes are checked first, then values, and the typical mistakes are named
    (padding, activation, stride, concatenation, normalisation, upsampling)."""
    what = "scale forward"

    def guarded(x: torch.Tensor, p: dict, inner: Any) -> Any:
        try:
            with torch.no_grad():
                return fn(x, p, inner)
        except RuntimeError as exc:
            for fragment, hint in _SCALE_ERRORS:
                if fragment in str(exc):
                    raise CheckFailed(f"{what}: your function raised RuntimeError ({str(exc).splitlines()[0]}): "
                                      f"{hint}") from exc
            raise

    calls = iter([1, 2, 1])  # the bottom scale (inner None), two scales, the bottom again
    return check_cases(guarded, lambda rng: _scale_case(rng, next(calls)), what, trials=3, seed=seed,
                       atol=1e-4, rtol=1e-4)
