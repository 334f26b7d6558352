"""The deep-image-prior "skip" generator: an encoder-decoder with skip connections.

Book: chapter "Building the generator" (``book/06_generator.ipynb``) builds it step by step.

The structure follows Ulyanov et al.'s Deep Image Prior ``skip`` network, written afresh. Every
scale ``i`` has a *skip* branch (1x1 conv, norm, activation) and a *deep* branch (3x3 stride-2 conv,
norm, act, 3x3 conv, norm, act, the next scale, x2 upsampling). The two are concatenated, normalised,
and merged by a 3x3 conv (norm, act) and a 1x1 conv (norm, act). A last 1x1 conv gives the output:
for registration, 2 channels and no sigmoid (a displacement is signed and unbounded).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

_ACTIVATIONS = {"leaky_relu": lambda: nn.LeakyReLU(0.2), "relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh}
_NORMS = {"batch": nn.BatchNorm2d, "instance": lambda c: nn.InstanceNorm2d(c, affine=True),
          "none": lambda c: nn.Identity()}
_PADDING = {"zeros": "zeros", "reflection": "reflect", "replicate": "replicate"}


def _conv(cin: int, cout: int, k: int, stride: int, padding: str) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=(k - 1) // 2, padding_mode=_PADDING[padding])


class _Block(nn.Sequential):
    """conv -> norm -> activation."""

    def __init__(self, cin: int, cout: int, k: int, *, stride: int = 1, padding: str, norm: str, act: str):
        super().__init__(_conv(cin, cout, k, stride, padding), _NORMS[norm](cout), _ACTIVATIONS[act]())


class _Scale(nn.Module):
    """One scale of the skip generator; ``inner`` is the next (coarser) scale or ``None`` at the bottom."""

    def __init__(self, cin: int, down: int, up: int, skip: int, inner: _Scale | None, inner_out: int, *,
                 upsample: str, padding: str, norm: str, act: str):
        super().__init__()
        kw = dict(padding=padding, norm=norm, act=act)
        self.skip = _Block(cin, skip, 1, **kw) if skip > 0 else None
        self.down = nn.Sequential(_Block(cin, down, 3, stride=2, **kw), _Block(down, down, 3, **kw))
        self.inner = inner
        self.upsample = upsample
        deep_out = inner_out if inner is not None else down
        self.merge_norm = _NORMS[norm](skip + deep_out)
        self.merge = nn.Sequential(_Block(skip + deep_out, up, 3, **kw), _Block(up, up, 1, **kw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deep = self.down(x)
        if self.inner is not None:
            deep = self.inner(deep)
        kw = {"align_corners": False} if self.upsample == "bilinear" else {}
        deep = F.interpolate(deep, size=x.shape[-2:], mode=self.upsample, **kw)
        y = deep if self.skip is None else torch.cat([self.skip(x), deep], dim=1)
        return self.merge(self.merge_norm(y))


class SkipGenerator(nn.Module):
    """DIP skip generator mapping noise (N, in_channels, H, W) to (N, out_channels, H, W).

    Args:
        in_channels: channels of the noise input z.
        out_channels: 2 for a displacement field.
        down, up: channels per scale, finest first (same length: the number of scales).
        skip: skip-branch channels per scale (an int for all scales; 0 removes a skip connection).
        upsample: ``"nearest"`` or ``"bilinear"``.
        padding: ``"zeros"``, ``"reflection"`` or ``"replicate"`` (reflection is ~15x slower on CPU).
        norm: ``"batch"``, ``"instance"`` or ``"none"``.
        activation: ``"leaky_relu"`` (slope 0.2), ``"relu"``, ``"elu"`` or ``"tanh"``.

    Inputs whose sides are not multiples of ``2**len(down)`` work: each scale upsamples back to the
    exact size of its input.
    """

    def __init__(self, in_channels: int = 32, out_channels: int = 2, down: Sequence[int] = (16, 32, 64, 128, 128),
                 up: Sequence[int] = (16, 32, 64, 128, 128), skip: int | Sequence[int] = 4, *,
                 upsample: str = "bilinear", padding: str = "zeros", norm: str = "batch",
                 activation: str = "leaky_relu"):
        super().__init__()
        down, up = list(down), list(up)
        skips = [skip] * len(down) if isinstance(skip, int) else list(skip)
        if not (len(down) == len(up) == len(skips)) or not down:
            raise ValueError(f"down, up and skip need the same non-zero length, got {down}, {up}, {skips}")
        for name, value, allowed in (("upsample", upsample, ("nearest", "bilinear")), ("padding", padding, _PADDING),
                                     ("norm", norm, _NORMS), ("activation", activation, _ACTIVATIONS)):
            if value not in allowed:
                raise ValueError(f"{name}: expected one of {sorted(allowed)}, got {value!r}")
        kw = dict(upsample=upsample, padding=padding, norm=norm, act=activation)
        inner: _Scale | None = None
        for i in reversed(range(len(down))):
            cin = in_channels if i == 0 else down[i - 1]
            inner_out = up[i + 1] if i + 1 < len(down) else 0
            inner = _Scale(cin, down[i], up[i], skips[i], inner, inner_out, **kw)
        self.body = inner
        self.head = nn.Conv2d(up[0], out_channels, 1)
        self.in_channels = in_channels

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(z))


def init_normal_(module: nn.Module, std: float = 0.01, generator: torch.Generator | None = None) -> nn.Module:
    """The paper's initialisation: every convolution weight ~ N(0, std**2), biases zero.

    Normalisation layers keep weight 1 and bias 0, so every hidden activation is standardised and
    only the last 1x1 convolution's small weights set the output scale: the first output is of the
    order of ``std * sqrt(up[0])`` units (measured smaller, see chapter 6), i.e. near the identity.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, std, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module
