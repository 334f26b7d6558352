"""The registration methods, and their registry by name for the experiments, the ablations and the command line.

The folder holds one module per method: :mod:`~dipreg.methods.dip` (the paper's eq. 2 and the default built on
it, :func:`dipreg.register`), :mod:`~dipreg.methods.classical` (eq. 1), :mod:`~dipreg.methods.ants` (ANTs, the
comparator), :mod:`~dipreg.methods.batch` (many DIP pairs at once) and :mod:`~dipreg.methods.denoise` (the deep
image prior's denoising demo); and what they share: :mod:`~dipreg.methods.engine` (the one optimisation loop)
and :mod:`~dipreg.methods.affine` (the affine stage).

Book: chapter "Reproducing the brain MRI results" (``book/09_reproduction.ipynb``) runs every method
here on the LGG pairs; chapter "Ablations" compares DIP with the classical method through it.

A method name is ``"dip"`` (:func:`dipreg.register`, the paper's eq. 2 or the default built on it),
``"classical"`` (:func:`dipreg.methods.classical.register_classical`, eq. 1) or ``"ants-<setting>"``
(:func:`dipreg.methods.ants.register_ants`; ``<setting>`` is a key of :data:`dipreg.methods.ants.ANTS_SETTINGS`, such as
``"strong"``, or any ANTs ``type_of_transform``, such as ``"SyN"``). Each :class:`Method` says which type
holds its settings (:class:`dipreg.RegistrationConfig`, :class:`dipreg.methods.classical.ClassicalSettings`,
:class:`dipreg.methods.ants.AntsSettings`, each with ``to_dict()``), how to make them from a preset or options,
and runs them with one call shape::

    from dipreg import methods
    cfg = methods.settings("classical", options={"weight": 0.1})
    res = methods.run("classical", moving, fixed, cfg, seed=0)   # res.config is cfg, as run

:func:`plan` binds a method to its settings, seed and device for many pairs (:mod:`dipreg.experiments`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from importlib import import_module
from typing import Any

import torch

from dipreg.config import RegistrationConfig
from dipreg.methods import ants, classical
from dipreg.methods.ants import ANTS_SETTINGS, AntsSettings, check_ants_seed  # imports no antspyx itself
from dipreg.methods.classical import DEFAULTS, ClassicalSettings
from dipreg.methods.dip import check_seed, resolve_config, resolve_device
from dipreg.result import RegistrationResult, Settings

# The runners are looked up when called, so that a patched dipreg.methods.dip.register (tests) is the one run.
_REGISTER = import_module("dipreg.methods.dip")  # the module: ``dipreg.register`` is also the function's name


@dataclass(frozen=True)
class Method:
    """One registration method of the registry.

    Attributes:
        name: the registry key, ``"dip"``, ``"classical"`` or ``"ants"`` (run as ``"ants-<setting>"``).
        settings_type: the type of its settings (and of the ``config`` of its results).
        make: ``make(variant, options, preset, overrides, device)`` -> settings; ``variant`` is the part of
            the name after ``ants-`` (``""`` otherwise), ``options`` keyword arguments of the method
            (classical, ANTs), ``preset`` and ``overrides`` the DIP configuration.
        call: ``call(moving, fixed, settings, seed, device, progress, compile)`` -> a RegistrationResult.
        label: ``label(variant, options, settings)`` -> what the results file records as the preset.
        quick: the settings of a short, untimed warm-up run (``None``: the method has none).
        check_seed: raises a ValueError for a seed the method cannot take.
        needs_ants: runs through antspyx (an optional dependency).
    """

    name: str
    settings_type: type
    make: Callable[..., Any]
    call: Callable[..., RegistrationResult]
    label: Callable[[str, Mapping[str, Any], Any], str]
    quick: Callable[[Any], Any] | None
    check_seed: Callable[[Any], Any]
    needs_ants: bool = False

    def from_dict(self, values: Mapping[str, Any]) -> Any:
        """Settings of this method from their ``to_dict()`` form (as stored in a JSON or ``.npz`` file)."""
        return _FROM_DICT[self.name](dict(values))


# ---------------------------------------------------------------------------------------------------------------
# DIP


def _dip_make(variant: str, options: Mapping[str, Any], preset: Any, overrides: Mapping[str, Any] | None,
              device: torch.device) -> Any:
    return resolve_config(preset, device, dict(overrides or {}))


def _dip_call(moving: Any, fixed: Any, settings: Any, seed: int | None, device: Any, progress: bool,
              compile: bool) -> RegistrationResult:
    return _REGISTER.register(moving, fixed, config=settings, seed=seed, device=device, progress=progress,
                              compile=compile)


def _dip_from_dict(values: dict[str, Any]) -> Any:
    tuples = {f.name for f in fields(RegistrationConfig) if isinstance(getattr(RegistrationConfig(), f.name), tuple)}
    return RegistrationConfig(**{k: tuple(v) if k in tuples else v for k, v in values.items()})


# ---------------------------------------------------------------------------------------------------------------
# Classical (eq. 1)


def _classical_make(variant: str, options: Mapping[str, Any], preset: Any, overrides: Mapping[str, Any] | None,
                    device: torch.device) -> Any:
    bad = sorted(set(options) - set(DEFAULTS))
    if bad:
        raise ValueError(f"method_options['classical']: unknown setting(s) {bad}; valid: {sorted(DEFAULTS)}")
    return ClassicalSettings(**{**DEFAULTS, **options})


def _classical_call(moving: Any, fixed: Any, settings: Any, seed: int | None, device: Any, progress: bool,
                    compile: bool) -> RegistrationResult:
    return classical.register_classical(moving, fixed, seed=seed, device=device, progress=progress,
                                        **settings.to_dict())


def _classical_from_dict(values: dict[str, Any]) -> Any:
    return ClassicalSettings(**values)


# ---------------------------------------------------------------------------------------------------------------
# ANTs


def _ants_make(variant: str, options: Mapping[str, Any], preset: Any, overrides: Mapping[str, Any] | None,
               device: torch.device) -> Any:
    kwargs = dict(ANTS_SETTINGS.get(variant, {"type_of_transform": variant}))
    kwargs.update(options)
    return _ants_from_dict(kwargs)


def _ants_call(moving: Any, fixed: Any, settings: Any, seed: int | None, device: Any, progress: bool,
               compile: bool) -> RegistrationResult:
    return ants.register_ants(moving, fixed, seed=seed, **settings.to_dict())


def _ants_from_dict(values: dict[str, Any]) -> Any:
    values = dict(values)
    return AntsSettings(values.pop("type_of_transform"), values)


def _ants_label(variant: str, options: Mapping[str, Any], settings: Any) -> str:
    return variant if variant in ANTS_SETTINGS else "custom"


_FROM_DICT: dict[str, Callable[[dict[str, Any]], Any]] = {
    "dip": _dip_from_dict, "classical": _classical_from_dict, "ants": _ants_from_dict}

METHODS: dict[str, Method] = {
    "dip": Method("dip", RegistrationConfig, _dip_make, _dip_call,
                  label=lambda variant, options, cfg: cfg.preset,
                  quick=lambda cfg: cfg.replace(iterations=1, readout_draws=1, patience=0), check_seed=check_seed),
    "classical": Method("classical", ClassicalSettings, _classical_make,
                        _classical_call, label=lambda variant, options, s: "custom" if options else "default",
                        quick=lambda s: s.replace(iterations=1), check_seed=check_seed),
    "ants": Method("ants", AntsSettings, _ants_make, _ants_call,
                   label=_ants_label, quick=None, check_seed=check_ants_seed, needs_ants=True),
}
"""Registry key -> :class:`Method`."""


def method(name: str) -> tuple[Method, str]:
    """The :class:`Method` of a method name and its variant: ``"dip"`` -> (dip, ``""``), ``"ants-SyN"`` ->
    (ants, ``"SyN"``). An unknown name raises a ValueError that lists the known ones."""
    if not isinstance(name, str):
        raise TypeError(f"methods: expected method names (str), got {type(name).__name__}")
    if name in ("dip", "classical"):
        return METHODS[name], ""
    if name.startswith("ants-") and len(name) > 5:
        return METHODS["ants"], name[5:]
    raise ValueError(f"methods: unknown method {name!r}; expected 'dip', 'classical' or 'ants-<setting>' "
                     "(e.g. 'ants-SyN', 'ants-strong')")


def settings(name: str, *, preset: Any = None, overrides: Mapping[str, Any] | None = None,
             options: Mapping[str, Any] | None = None, device: Any = None) -> Settings:
    """The settings of method ``name``: for ``"dip"`` the ``preset`` (a name, a config, or ``None`` for the
    device's default) with ``overrides``; for the others their defaults (for ANTs those of the setting named)
    with ``options`` (keyword arguments of the method)."""

    m, variant = method(name)
    return m.make(variant, dict(options or {}), preset, overrides, resolve_device(device))


def run(name: str, moving: Any, fixed: Any, settings: Settings | None = None, *, seed: int | None = 0,
        device: Any = None, progress: bool = False, compile: bool = False) -> RegistrationResult:
    """Register ``moving`` onto ``fixed`` with method ``name`` and ``settings`` (``None``: its defaults).

    ``compile`` applies to DIP only, ``device`` and ``progress`` to DIP and the classical method (ANTs runs
    on the CPU, without a progress bar).
    """
    m, variant = method(name)
    if settings is None:
        settings = m.make(variant, {}, None, None, resolve_device(device))
    if not isinstance(settings, m.settings_type):
        raise TypeError(f"settings: method {name!r} takes a {m.settings_type.__name__}, got "
                        f"{type(settings).__name__}")
    return m.call(moving, fixed, settings, seed, device, progress, compile)


@dataclass(frozen=True)
class Planned:
    """A method bound to its settings, seed and device, ready to run on many pairs.

    ``name`` as asked (``"ants-SyN"``), ``label`` what the results file records as its preset,
    ``settings`` its :class:`~dipreg.result.Settings`; ``config`` is ``settings.to_dict()``.
    """

    name: str
    method: Method
    label: str
    settings: Any
    seed: int
    device: Any
    progress: bool = False
    compile: bool = False

    @property
    def needs_ants(self) -> bool:
        return self.method.needs_ants

    @property
    def config(self) -> dict[str, Any]:
        return self.settings.to_dict()

    @property
    def can_warm_up(self) -> bool:
        """Whether the method has a short warm-up run (:meth:`warm_up`)."""
        return self.method.quick is not None

    def run(self, pair: Any) -> RegistrationResult:
        """Register ``pair.moving`` onto ``pair.fixed``."""
        return self.method.call(pair.moving, pair.fixed, self.settings, self.seed, self.device, self.progress,
                                self.compile)

    def warm_up(self, pair: Any) -> None:
        """One short run on ``pair`` (untimed): start-up costs (and compilation) are then paid; a setting that
        cannot run on the pair's size raises here."""
        if self.method.quick is not None:
            self.method.call(pair.moving, pair.fixed, self.method.quick(self.settings), self.seed, self.device,
                             False, self.compile)


def plan(name: str, *, seed: int, device: Any, preset: Any = None, overrides: Mapping[str, Any] | None = None,
         options: Mapping[str, Any] | None = None, progress: bool = False, compile: bool = False) -> Planned:
    """Method ``name`` with its settings (see :func:`settings`), checked ``seed`` and ``device``.

    A seed the method cannot take (ANTs reads it as a 32-bit int) fails here, not once per pair.
    """

    m, variant = method(name)
    m.check_seed(seed)
    dev = resolve_device(device)
    opts = dict(options or {})
    made = m.make(variant, opts, preset, overrides, dev)
    return Planned(name, m, m.label(variant, opts, made), made, seed, dev, progress, compile)
