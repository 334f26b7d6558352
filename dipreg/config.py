"""Every knob of the method in one dataclass, and the named presets.

Book: chapter "Registration with a deep image prior" (``book/07_dip_registration.ipynb``) explains
each field; chapter "Reproducing the brain MRI results" says why the defaults are what they are.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dipreg.intensity import BACKGROUNDS, MATCHES, check_clip


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
        prealign: ``"none"`` (the paper) or ``"affine"``: a global affine map fitted first, coarse to fine, with
            the same data term (:func:`dipreg.methods.affine.fit_affine`); the network's field acts after it and the
            returned displacement is the composition. Between subjects it takes up size, position and tilt,
            which a field held at the border cannot.
        prealign_finest: the finest level of the affine stage, as a downsampling factor of the image: 1 (full
            resolution, the field's default), 2 or 4 (:data:`dipreg.methods.affine.LEVELS`).
        grid_scale: the generator runs on a grid ``grid_scale`` times coarser than the image and its output
            is upsampled bilinearly (1 = the paper: z has the image's size). The grid never gets smaller than
            ``2 ** (len(down) + 1)`` pixels a side, so that the coarsest scale keeps 2 x 2 pixels.
        output_scale: pixels of displacement per unit of network output.
        integrate: 0 = the network output is the displacement u (the paper); n > 0 = it is a stationary
            velocity integrated by n scaling-and-squaring steps (diffeomorphic up to discretisation).
        integrate_refine: with ``integrate`` > 0, how many of its last scaling-and-squaring steps (at most all of
            them) run on a grid twice as fine as the generator's, at most the image's size: 0 = all on the generator's
            grid (the field's default); ignored when ``integrate`` is 0. Composing creates detail finer than the
            velocity's grid, which the coarse grid would blur before the field is upsampled to the image.
        boundary: ``"free"`` (the paper: the network may move the image border) or ``"fixed"`` (the field is
            tapered smoothly to zero over the outer sixteenth of the image, a Dirichlet boundary condition that
            keeps the image domain onto itself, so the mean det J of the network's field stays at 1; an affine
            ``prealign`` stage before it can still change the total volume).
        smooth: standard deviation, in image pixels, of a Gaussian filter applied to the network output on its
            grid before it becomes a field (0 = none, the paper). A fixed low-pass readout, as SyN smooths its
            velocity: it removes the grid-scale wiggles that let the data term buy intensity matches with local
            volume changes; the network is still the only learned part.
        fold_penalty: weight of the fold barrier of :func:`dipreg.losses.field_penalty` (mean of
            relu(0.1 - det J)) added to the loss; 0 = the paper's pure data term. A barrier against folding, not a
            smoothness prior.
        volume_penalty: weight of the volume term of :func:`dipreg.losses.field_penalty` (the variance over the
            image of log det J) added to the loss; 0 = none, the paper. An explicit regulariser of local volume change:
            with it the method is a hybrid of the network prior and a hand-made term (book chapter 7).
    Optimisation:
        loss: ``"mae"`` (the paper), ``"mse"`` or ``"lncc"``. MAE and MSE assume both images show the same
            contrast; between contrasts (e.g. T1 before and after contrast agent) use ``"lncc"``, and for two images
            of one subject also ``detail_steps=0``: with MAE the generator can move a tumour away to match its
            enhancement, and the detail stage follows the enhancement's edges (book chapter 9, "Same-patient
            pairings"). optimizer: ``"adam"`` or ``"sgd"``.
        lr: learning rate. iterations: maximum number of steps.
        patience, min_delta: stop early when the loss has not improved by ``min_delta`` for ``patience``
            steps (``patience=0`` never stops early).
        readout_draws: with ``noise="fresh"``, the returned field is the mean generator output over this many
            noise draws.
        readout: with ``noise="fixed"``, which field is returned: ``"last"`` (the earlier default: the network
            after the last optimiser step, a field that no loss has evaluated) or ``"best"`` (the field of the step
            with the lowest loss, fold barrier and volume term included; ``result.info["readout_step"]`` says
            which step). Fresh noise always reads out the mean over ``readout_draws``.
        detail_steps: after the network's fit, a detail stage of this many Adam steps (0 = none, the paper): the
            network's field is kept fixed and a free stationary velocity on a grid twice as fine as the generator's
            (at most the image's), Gaussian-smoothed by ``detail_sigma``, held at the border with
            ``boundary="fixed"`` and integrated like the network's (``integrate``), is composed before it, fitted with
            the same loss, fold barrier and volume term; the field read out is the one with the lowest loss. A
            classical hand-made prior (a smoothed velocity) for the detail the network's coarse grid cannot hold:
            with it the method is a hybrid (book chapter 7); a callback that stops the network's steps also skips
            it. detail_lr: the learning rate of that velocity (of ``optimizer``, Adam in the presets), in image
            pixels per step. detail_sigma: standard deviation of its Gaussian smoothing, in image pixels
            (0 = none).
        normalize: rescale both images to [0, 1] before optimising (:func:`dipreg.intensity.rescale`); the
            returned warped image is the *original* moving image warped.
        intensity_clip: with ``normalize``, the fraction of each image's foreground intensities clipped at
            each end before the rescaling (0 = min-max, the paper; 0.005 = ANTs' winsorising at the 0.5 and
            99.5 % quantiles, of the pixels above the image's minimum). Makes a hot pixel, a zero-padded band
            or a different intensity range harmless to MAE and MSE.
        intensity_match: with ``normalize``, how the moving image's intensities are brought to the fixed one's:
            ``"none"`` (each image rescaled on its own, the paper), ``"linear"`` (a scale and offset fitted to the
            two foregrounds' middle quantiles, :func:`dipreg.intensity.match_linear`) or ``"histogram"`` (the
            moving foreground mapped onto the fixed one's distribution, :func:`dipreg.intensity.match_histogram`:
            also undoes a gamma). One modality only: between contrasts use ``loss="lncc"``.
        intensity_background: with ``normalize``, what the intensity statistics leave out as background
            (:func:`dipreg.intensity.foreground`): ``"darkest"`` (the darkest intensities and a flat dominant
            level) or ``"border"`` (also a flat region of any grey level touching the image border, e.g. a grey
            noisy background, which can otherwise pull the affine stage into shrinking the image).
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
    prealign: str = "none"
    prealign_finest: int = 1
    grid_scale: int = 1
    output_scale: float = 1.0
    integrate: int = 0
    integrate_refine: int = 0
    smooth: float = 0.0
    fold_penalty: float = 0.0
    volume_penalty: float = 0.0
    boundary: str = "free"
    loss: str = "mae"
    optimizer: str = "adam"
    lr: float = 1e-3
    iterations: int = 300
    patience: int = 0
    min_delta: float = 1e-4
    readout_draws: int = 8
    readout: str = "last"
    detail_steps: int = 0
    detail_lr: float = 0.4
    detail_sigma: float = 2.0
    normalize: bool = True
    intensity_clip: float = 0.0
    intensity_match: str = "none"
    intensity_background: str = "darkest"
    notes: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for key in ("down", "up"):
            value = getattr(self, key)
            if isinstance(value, list) or (isinstance(value, np.ndarray) and value.ndim == 1):
                object.__setattr__(self, key, tuple(value))
        for key, allowed in _CHOICES.items():  # None (e.g. `--set norm=none` on the command line) means "none"
            if getattr(self, key) is None and "none" in allowed:
                object.__setattr__(self, key, "none")
        _check(self)
        # numpy scalars (e.g. from a sweep over np.linspace) become plain Python numbers: hashable, JSON-ready
        for key in ("down", "up"):
            object.__setattr__(self, key, tuple(int(v) for v in getattr(self, key)))
        for key in _INTS:
            object.__setattr__(self, key, int(getattr(self, key)))
        for key in (*_FLOATS, "intensity_clip"):
            object.__setattr__(self, key, float(getattr(self, key)))
        if self.init_std is not None:
            object.__setattr__(self, "init_std", float(self.init_std))
        object.__setattr__(self, "normalize", bool(self.normalize))

    def replace(self, **overrides: Any) -> RegistrationConfig:
        """A copy with some fields changed; unknown names raise a TypeError listing the valid ones.

        ``preset`` (the label saying where the settings come from) and ``notes`` (the preset's reasons) are
        not settings and cannot be overridden: pick another preset by name instead (``config="paper"`` in the
        API, ``--preset paper`` on the command line). The copy keeps the label of the preset it starts from;
        :meth:`overridden` lists the fields that differ from that preset, and the notes of changed fields say
        so. Defining a new named preset (both ``preset``, a name no preset has yet, and ``notes``) is allowed.
        """
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"unknown config field(s) {unknown}; valid fields: {field_names()}")
        if "preset" in overrides or "notes" in overrides:
            _check_new_preset(self, overrides)
        if "notes" not in overrides and self.notes:
            base = _named_preset(self.preset)
            notes = dict(self.notes)
            for k, v in overrides.items():
                if _same(getattr(self, k), v):
                    continue
                if base is not None and _same(getattr(base, k), v):  # back to the preset's value
                    if k in base.notes:
                        notes[k] = base.notes[k]
                    else:
                        notes.pop(k, None)
                else:
                    notes[k] = f"overridden: {v!r}" + (
                        f" (the {self.preset} preset has {getattr(base, k)!r})" if base is not None else "")
            overrides["notes"] = notes
        return dataclasses.replace(self, **overrides)

    def overridden(self) -> dict[str, Any]:
        """Fields whose value differs from the named preset in :attr:`preset`, e.g. ``{"lr": 0.01}``; ``{}``
        for an unchanged preset and for a ``"custom"`` or unknown label."""
        base = _named_preset(self.preset)
        if base is None:
            return {}
        return {k: v for k, v in self.to_dict().items() if k != "preset" and getattr(base, k) != v}

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
            "optimizer": ("adam", "sgd"), "intensity_match": MATCHES, "intensity_background": BACKGROUNDS,
            "prealign": ("none", "affine"), "readout": ("last", "best")}


def _check_new_preset(c: RegistrationConfig, overrides: dict[str, Any]) -> None:
    """``replace(preset=..., notes=...)`` defines a new named preset; ``preset`` or ``notes`` alone is refused."""
    if "preset" not in overrides:
        raise ValueError("config.notes: cannot be overridden; the notes document a preset's choices and are updated "
                         "when a field is changed")
    name = overrides["preset"]
    hint = ("choose a preset by name instead (config='paper' in the API, --preset paper on the command line), "
            "then override single fields")
    if "notes" not in overrides:
        raise ValueError(f"config.preset: cannot be overridden (got {name!r}): the label would change but not the "
                         f"settings of the {c.preset!r} preset; {hint}")
    if _named_preset(name) is not None and name != c.preset:
        raise ValueError(f"config.preset: {name!r} is an existing preset with other settings; {hint}")


_NAMED: dict[str, RegistrationConfig] = {}


def register_presets(presets: Mapping[str, RegistrationConfig]) -> None:
    """Make ``presets`` known by name to :meth:`RegistrationConfig.replace` and ``overridden`` (called by
    :mod:`dipreg.presets`, which owns them; this module imports no presets)."""
    _NAMED.update(presets)


def _named_preset(name: Any) -> RegistrationConfig | None:
    """The registered preset called ``name``, or None."""
    return _NAMED.get(name) if isinstance(name, str) else None


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == (tuple(b) if isinstance(b, list) else b))
    except Exception:  # e.g. an array compared with a tuple
        return False


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


# field -> (lowest allowed value, whether the lowest value itself is allowed)
_INTS = {"skip": 0, "in_channels": 1, "grid_scale": 1, "integrate": 0, "iterations": 1, "patience": 0,
         "readout_draws": 1, "prealign_finest": 1, "integrate_refine": 0,
         "detail_steps": 0}
_FLOATS = {"noise_std": (0.0, True), "output_scale": (0.0, False), "smooth": (0.0, True),
           "fold_penalty": (0.0, True), "volume_penalty": (0.0, True), "lr": (0.0, False), "min_delta": (0.0, True),
           "detail_lr": (0.0, False), "detail_sigma": (0.0, True)}


def _check(c: RegistrationConfig) -> None:
    if not isinstance(c.preset, str) or not c.preset:
        raise TypeError(f"config.preset: expected a non-empty name (str), got {c.preset!r}")
    if not isinstance(c.notes, dict) or not all(isinstance(k, str) for k in c.notes):
        raise TypeError(f"config.notes: expected a dict of field name -> note, got {type(c.notes).__name__}")
    for name, allowed in _CHOICES.items():
        value = getattr(c, name)
        if not isinstance(value, str) or value not in allowed:
            raise ValueError(f"config.{name}: expected one of {list(allowed)}, got {value!r}")
    for name in ("down", "up"):
        value = getattr(c, name)
        if not isinstance(value, tuple) or not value or not all(_is_int(v) for v in value):
            raise TypeError(f"config.{name}: expected a non-empty list of ints (channels per scale, finest first, "
                            f"e.g. (16, 32, 64); on the command line {name}=16,32,64, or {name}=16, with the comma "
                            f"for one scale), got {value!r}")
    if len(c.down) != len(c.up) or min(c.down + c.up) < 1:
        raise ValueError(f"config.down/up: expected equal-length positive channel lists, got {c.down} and {c.up}")
    for name, low in _INTS.items():
        value = getattr(c, name)
        what = "a positive int" if low == 1 else "an int >= 0"
        if not _is_int(value):
            raise TypeError(f"config.{name}: expected {what}, got {value!r} ({type(value).__name__})")
        if value < low:
            raise ValueError(f"config.{name}: expected {what}, got {value!r}")
    if c.prealign_finest not in (1, 2, 4):
        raise ValueError(f"config.prealign_finest: expected 1, 2 or 4 (the affine stage's finest downsampling "
                         f"factor), got {c.prealign_finest!r}")
    if 0 < c.integrate < c.integrate_refine:
        raise ValueError(f"config.integrate_refine: expected at most integrate={c.integrate} (the scaling-and-squaring "
                         f"steps it refines; 0 with integrate=0 is ignored), got {c.integrate_refine!r}")
    for name, (low, inclusive) in _FLOATS.items():
        value = getattr(c, name)
        what = f"a finite number {'>=' if inclusive else '>'} {low:g}"
        if not _is_real(value):
            raise TypeError(f"config.{name}: expected {what}, got {value!r} ({type(value).__name__})")
        if not math.isfinite(value) or value < low or (value == low and not inclusive):
            raise ValueError(f"config.{name}: expected {what}, got {value!r}")
    if c.init_std is not None:
        what = "None (PyTorch's init) or a finite number > 0"
        if not _is_real(c.init_std):
            raise TypeError(f"config.init_std: expected {what}, got {c.init_std!r} ({type(c.init_std).__name__})")
        if not math.isfinite(c.init_std) or c.init_std <= 0:
            raise ValueError(f"config.init_std: expected {what}, got {c.init_std!r}")
    check_clip(c.intensity_clip, "config.intensity_clip")
    if not isinstance(c.normalize, (bool, np.bool_)):
        raise TypeError(f"config.normalize: expected True or False, got {c.normalize!r} ({type(c.normalize).__name__})")
