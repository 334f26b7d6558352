"""Every knob of the method in one dataclass, and the named presets.

Book: chapter "Registration with a deep image prior" (``book/07_dip_registration.ipynb``) explains
each field; chapter "Reproducing the brain MRI results" says why the defaults are what they are.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RegistrationConfig:
    """Settings of a deep-image-prior registration (paper eq. 2). Units are stated per field.

    Generator (Ulyanov et al.'s skip network):
        down, up: channels per scale, finest first. skip: skip-branch channels per scale (0 = none).
        upsample, padding, norm, activation: see :class:`dipreg.generator.SkipGenerator`.
        in_channels: channels C' of the noise input z.
        noise_std: standard deviation of z ~ N(0, noise_std**2).
        noise: ``"fresh"`` (a new z every iteration, the paper) or ``"fixed"`` (one z, as DIP denoising).
        init_std: convolution weights ~ N(0, init_std**2) (the paper: 0.01); ``None`` keeps PyTorch's init.
    Parameterisation of the field:
        grid_scale: the generator runs on a grid ``grid_scale`` times coarser than the image and its output
            is upsampled bilinearly (1 = the paper: z has the image's size). The grid never gets smaller than
            ``2 ** (len(down) + 1)`` pixels a side, so that the coarsest scale keeps 2 x 2 pixels.
        output_scale: pixels of displacement per unit of network output.
        integrate: 0 = the network output is the displacement u (the paper); n > 0 = it is a stationary
            velocity integrated by n scaling-and-squaring steps (diffeomorphic up to discretisation).
        boundary: ``"free"`` (the paper: the network may move the image border) or ``"fixed"`` (the field is
            tapered smoothly to zero over the outer sixteenth of the image, a Dirichlet boundary condition that
            keeps the image domain onto itself, so mean det J stays at 1).
        fold_penalty: weight of :func:`dipreg.losses.fold_penalty` (mean of relu(0.1 - det J)) added to the
            loss; 0 = the paper's pure data term. A barrier against folding, not a smoothness prior.
    Optimisation:
        loss: ``"mae"`` (the paper), ``"mse"`` or ``"lncc"``. MAE and MSE assume both images show the same
            contrast; between contrasts (e.g. T1 before and after contrast agent) use ``"lncc"``: with MAE the
            generator can move a tumour away to match its enhancement (book chapter 9, "Same-patient
            pairings"). optimizer: ``"adam"`` or ``"sgd"``.
        lr: learning rate. iterations: maximum number of steps.
        patience, min_delta: stop early when the loss has not improved by ``min_delta`` for ``patience``
            steps (``patience=0`` never stops early).
        readout_draws: the returned field is the mean generator output over this many noise draws.
        normalize: rescale both images to [0, 1] (min-max) before optimising; the returned warped image is
            the *original* moving image warped.
    """

    preset: str = "custom"
    down: tuple[int, ...] = (16, 32, 64, 128, 128)
    up: tuple[int, ...] = (16, 32, 64, 128, 128)
    skip: int = 4
    upsample: str = "bilinear"
    padding: str = "zeros"
    norm: str = "batch"
    activation: str = "leaky_relu"
    in_channels: int = 32
    noise_std: float = 0.1
    noise: str = "fresh"
    init_std: float | None = 0.01
    grid_scale: int = 1
    output_scale: float = 1.0
    integrate: int = 0
    fold_penalty: float = 0.0
    boundary: str = "free"
    loss: str = "mae"
    optimizer: str = "adam"
    lr: float = 1e-3
    iterations: int = 300
    patience: int = 0
    min_delta: float = 1e-4
    readout_draws: int = 8
    normalize: bool = True
    notes: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        _check(self)

    def replace(self, **overrides: Any) -> RegistrationConfig:
        """A copy with some fields changed; unknown names raise a TypeError listing the valid ones."""
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"unknown config field(s) {unknown}; valid fields: {field_names()}")
        for key in ("down", "up"):
            if key in overrides:
                overrides[key] = tuple(overrides[key])
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of the fields (without ``notes``)."""
        d = dataclasses.asdict(self)
        d.pop("notes")
        return d


def field_names() -> list[str]:
    """Names of all :class:`RegistrationConfig` fields a user may override."""
    return [f.name for f in dataclasses.fields(RegistrationConfig) if f.name != "notes"]


_CHOICES = {"upsample": ("nearest", "bilinear"), "padding": ("zeros", "reflection", "replicate"),
            "norm": ("batch", "instance", "none"), "activation": ("leaky_relu", "relu", "elu", "tanh"),
            "noise": ("fresh", "fixed"), "boundary": ("free", "fixed"), "loss": ("mae", "mse", "lncc"),
            "optimizer": ("adam", "sgd")}


def _check(c: RegistrationConfig) -> None:
    for name, allowed in _CHOICES.items():
        if getattr(c, name) not in allowed:
            raise ValueError(f"config.{name}: expected one of {list(allowed)}, got {getattr(c, name)!r}")
    if not c.down or len(c.down) != len(c.up) or min(c.down + c.up) < 1:
        raise ValueError(f"config.down/up: expected equal-length positive channel lists, got {c.down} and {c.up}")
    positive = {"in_channels": c.in_channels, "grid_scale": c.grid_scale, "iterations": c.iterations,
                "lr": c.lr, "readout_draws": c.readout_draws}
    for name, value in positive.items():
        if not value > 0:
            raise ValueError(f"config.{name}: expected a positive number, got {value!r}")
    for name in ("skip", "integrate", "patience"):
        if getattr(c, name) < 0:
            raise ValueError(f"config.{name}: expected a number >= 0, got {getattr(c, name)!r}")
    if c.fold_penalty < 0:
        raise ValueError(f"config.fold_penalty: expected a number >= 0, got {c.fold_penalty!r}")
    if c.noise_std < 0 or (c.init_std is not None and c.init_std <= 0) or c.output_scale <= 0:
        raise ValueError("config: noise_std must be >= 0, init_std and output_scale > 0")
