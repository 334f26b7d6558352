"""Deep-image-prior registration: optimise a random CNN's weights so that its output, read as a displacement,
warps the moving image onto the fixed one (paper eq. 2 with ``config="paper"``; the default presets add the
parts listed by :func:`dipreg.presets.differences`). The field is a :class:`DIPField`; the loop, shared with
the other methods, is :func:`dipreg.methods.engine.run`.

Book: chapter "Registration with a deep image prior" (``book/07_dip_registration.ipynb``).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dipreg.config import RegistrationConfig
from dipreg.generator import SkipGenerator, init_normal_
from dipreg.intensity import prepare_pair
from dipreg.losses import field_penalty, get_loss
from dipreg.methods.affine import (
    affine_displacement,
    area_change,
    area_warning,
    compose_affine,
    fit_affine,
    levels_to,
    linear_part,
)
from dipreg.methods.engine import (
    Noise,
    Plateau,
    RegistrationError,
    RegistrationWarning,
    Stage,
    Terms,
    checked,
    progress_bar,
    quality_check,
    run,
)
from dipreg.presets import default_config, get_preset
from dipreg.result import RegistrationResult
from dipreg.transform import ALIGN_CORNERS, compose, integrate_velocity, resize_displacement, warp, warp_tensor
from dipreg.validate import ArrayLike, as_image, check_seed, same_shape

# The loop, its early stopping, progress bar, errors and quality check live in dipreg.methods.engine; the DIP method's
# public names are kept here, where the book and the user look for them.
__all__ = ["DIPField", "DetailField", "Plateau", "RegistrationError", "RegistrationInterrupted",
           "RegistrationWarning", "Step", "compiled_objective", "make_field", "make_optimizer", "member_terms",
           "objective", "optimiser_images", "progress_bar", "quality_check", "register", "resolve_config",
           "resolve_device"]


class RegistrationInterrupted(KeyboardInterrupt):
    """Ctrl-C (any KeyboardInterrupt) during :func:`register`. Still a KeyboardInterrupt, so it stops
    whatever called ``register``; ``history`` holds the losses so far and ``result`` the field the run would
    return so far (with ``readout="best"`` the lowest-loss field evaluated; ``result.info["stopped"] ==
    "interrupted"``; ``None`` if there is no finite field)."""

    def __init__(self, history: list[float], result: RegistrationResult | None):
        super().__init__(f"registration interrupted after {len(history)} iteration(s)")
        self.history = history
        self.result = result


@dataclass
class Step:
    """Passed to ``callback`` after every iteration; tensors are detached.

    Attributes:
        iteration: 0-based index of the iteration just done.
        loss: its loss value (the data term plus any fold penalty), on the images as the optimiser sees them.
        displacement: (1, 2, H, W) in pixels, channel 0 rows, channel 1 columns.
        warped: (1, 1, H, W) the moving image warped by ``displacement``, in the intensity units the
            optimiser sees (in [0, 1] when the config normalises the images).
    """

    iteration: int
    loss: float
    displacement: torch.Tensor
    warped: torch.Tensor


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` picks CUDA when available, else the CPU. ``"cpu"``, ``"cuda"``/``"cuda:i"`` (an existing GPU)
    and ``"mps"`` (where PyTorch has it) are accepted; anything else raises a ValueError."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: expected e.g. 'cpu' or 'cuda', got {device!r}") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device: 'cuda' was asked for but no CUDA GPU is available; use device='cpu'")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"device: {device!r} does not exist; this machine has {n} CUDA GPU(s), cuda:0 to "
                             f"cuda:{n - 1}")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError("device: 'mps' was asked for but this PyTorch has no MPS (Apple GPU) support")
    elif dev.type != "cpu":
        raise ValueError(f"device: expected 'cpu', 'cuda', 'cuda:<index>' or 'mps', got {device!r}")
    return dev


def make_field(cfg: RegistrationConfig, shape: tuple[int, int], seed: int, device: torch.device) -> DIPField:
    """The :class:`DIPField` of ``cfg`` for images of ``shape``, its weights drawn from ``seed`` alone.

    Built under a forked, seeded global RNG, so PyTorch's default initialisation (``init_std=None``) depends
    on the seed too and the caller's random state is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DIPField(cfg, shape, torch.Generator().manual_seed(seed))
    return model.to(device)


def resolve_config(config: RegistrationConfig | str | None, device: torch.device,
                   overrides: dict[str, Any]) -> RegistrationConfig:
    """The config to run: a preset name, a config, or ``None`` for the device's default; then the overrides."""
    if config is None:
        cfg = default_config(device)
    elif isinstance(config, str):
        cfg = get_preset(config)
    elif isinstance(config, RegistrationConfig):
        cfg = config
    else:
        raise TypeError(f"config: expected a RegistrationConfig, a preset name or None, got {type(config).__name__}")
    return cfg.replace(**overrides) if overrides else cfg


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalised 1D Gaussian of standard deviation ``sigma`` > 0 (pixels), radius max(1, ceil(3 sigma))."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _smooth(v: torch.Tensor, kernels: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """A field (N, 2, h, w) filtered along rows, then columns, by the two 1D ``kernels`` (edges replicated; written
    with ``torch.cat`` rather than ``F.pad(mode="replicate")``, whose backward ``torch.compile`` cannot trace)."""
    for axis, k in enumerate(kernels):
        r = k.shape[-1] // 2
        dim = 2 + axis
        first, last = v.narrow(dim, 0, 1), v.narrow(dim, v.shape[dim] - 1, 1)
        v = torch.cat([first.repeat_interleave(r, dim), v, last.repeat_interleave(r, dim)], dim)
        weight = (k.view(1, 1, -1, 1) if axis == 0 else k.view(1, 1, 1, -1)).expand(2, 1, -1, -1)
        v = F.conv2d(v, weight, groups=2)
    return v


class DIPField(torch.nn.Module):
    """The paper's parameterisation: noise z -> generator -> displacement u in pixels at the image size."""

    def __init__(self, cfg: RegistrationConfig, shape: tuple[int, int], generator: torch.Generator):
        super().__init__()
        self.cfg, self.shape = cfg, shape
        need = 2 ** (len(cfg.down) + 1)  # the coarsest scale keeps at least 2 x 2 pixels
        if min(shape) < need:
            raise ValueError(
                f"image {shape} is too small for a generator with {len(cfg.down)} scales: it needs at least "
                f"{need} x {need} pixels; use fewer scales (down=..., up=...) or a larger image")
        self.grid = tuple(max(need, math.ceil(n / cfg.grid_scale)) for n in shape)
        self.net = SkipGenerator(cfg.in_channels, 2, cfg.down, cfg.up, cfg.skip, upsample=cfg.upsample,
                                 padding=cfg.padding, norm=cfg.norm, activation=cfg.activation)
        if cfg.init_std is not None:
            init_normal_(self.net, cfg.init_std, generator)
        # the network output times this (1, 2, h, w) factor is the field on the generator's grid: image
        # pixels per unit (output_scale), the border window (boundary="fixed") and, when a velocity is
        # integrated on that grid, the change to the grid's pixel units
        factor = torch.full((1, 2, *self.grid), float(cfg.output_scale))
        if cfg.boundary == "fixed":
            factor = factor * self._window(self.grid)
        if cfg.integrate:
            factor[:, 0] *= (self.grid[0] - 1) / (shape[0] - 1)
            factor[:, 1] *= (self.grid[1] - 1) / (shape[1] - 1)
        self.register_buffer("factor", factor, persistent=False)
        # the grid of the last integrate_refine squarings: twice the generator's, at most the image's
        self.refine_grid = tuple(min(2 * g, n) for g, n in zip(self.grid, shape, strict=True))
        if cfg.smooth:  # the filter's width in grid pixels along each axis
            for axis, (g, n) in enumerate(zip(self.grid, shape, strict=True)):
                kernel = _gaussian_kernel(cfg.smooth * (g - 1) / max(n - 1, 1))
                self.register_buffer(f"kernel{axis}", kernel, persistent=False)
        self.register_buffer("prealign_shift", None, persistent=False)
        self.register_buffer("prealign_linear", None, persistent=False)

    def set_prealign(self, theta: torch.Tensor) -> None:
        """Put the affine map ``theta`` (1, 2, 3), normalised units (:mod:`dipreg.methods.affine`), before the field:
        :meth:`forward` then returns the composition (the affine map first)."""
        self.prealign_shift = affine_displacement(theta, self.shape)
        self.prealign_linear = linear_part(theta, self.shape)

    @staticmethod
    def _window(grid: tuple[int, int]) -> torch.Tensor:
        """(h, w) window that is 0 on the border and 1 inside the outer sixteenth (smoothstep ramp)."""
        profiles = []
        for n in grid:
            t = torch.linspace(0.0, 1.0, n)
            s = (torch.minimum(t, 1 - t) * 16).clamp(max=1.0)
            profiles.append(s * s * (3 - 2 * s))
        return profiles[0][:, None] * profiles[1][None, :]

    def noise(self, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """One draw of z ~ N(0, noise_std**2), shape (1, in_channels, *grid)."""
        z = torch.randn((1, self.cfg.in_channels, *self.grid), generator=generator, device=device)
        return z * self.cfg.noise_std

    def smooth(self, v: torch.Tensor) -> torch.Tensor:
        """The Gaussian low-pass of ``cfg.smooth`` image pixels on the generator's grid, (N, 2, h, w) in and out."""
        return _smooth(v, (self.kernel0, self.kernel1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Displacement (1, 2, H, W) in image pixels for the noise ``z``."""
        out = self.net(z)
        if self.cfg.smooth:
            out = self.smooth(out)
        out = out * self.factor
        if self.cfg.integrate:  # on the generator's grid in its pixel units, the last squarings on refine_grid
            phi = integrate_velocity(out, self.cfg.integrate, refine=self.cfg.integrate_refine,
                                     refine_shape=self.refine_grid)
            u = resize_displacement(phi, self.shape)
        elif self.grid == self.shape:
            u = out
        else:
            u = F.interpolate(out, size=self.shape, mode="bilinear", align_corners=ALIGN_CORNERS)
        if self.prealign_shift is not None:
            u = compose_affine(self.prealign_shift, self.prealign_linear, u)
        return u


class DetailField(torch.nn.Module):
    """The detail stage's field (``cfg.detail_steps``): a free stationary velocity on ``grid``, composed before the
    fixed field ``base`` (B, 2, H, W) in image pixels, e.g. the network's readout: ``u(x) = d(x) + base(x + d(x))``
    with ``d`` the velocity's integral. The velocity (B, 2, *grid) is held in image pixels and starts at zero (so
    ``u == base``); each evaluation smooths it with a Gaussian of ``cfg.detail_sigma`` image pixels, tapers it to
    zero at the border with ``cfg.boundary="fixed"`` (as :class:`DIPField`) and integrates it by ``cfg.integrate``
    scaling-and-squaring steps (0: used as a displacement).
    """

    def __init__(self, cfg: RegistrationConfig, shape: tuple[int, int], grid: tuple[int, int], base: torch.Tensor):
        super().__init__()
        self.cfg, self.shape = cfg, shape
        self.velocity = torch.nn.Parameter(base.new_zeros((base.shape[0], 2, *grid)))
        self.register_buffer("base", base.detach(), persistent=False)
        # image pixels -> grid pixels along each axis, times the border window
        scale = [(g - 1) / max(n - 1, 1) for g, n in zip(grid, shape, strict=True)]
        factor = base.new_tensor(scale).view(1, 2, 1, 1).expand(1, 2, *grid)
        if cfg.boundary == "fixed":
            factor = factor * DIPField._window(grid).to(base)
        self.register_buffer("factor", factor, persistent=False)
        self.smoothed = bool(cfg.detail_sigma)
        for axis, s in enumerate(scale):  # the filter's width in grid pixels along each axis
            kernel = _gaussian_kernel(cfg.detail_sigma * s).to(base) if self.smoothed else None
            self.register_buffer(f"kernel{axis}", kernel, persistent=False)

    def forward(self, z: torch.Tensor | None = None) -> torch.Tensor:
        """Displacement (B, 2, H, W) in image pixels (``z`` is ignored: the stage has no noise input)."""
        v = _smooth(self.velocity, (self.kernel0, self.kernel1)) if self.smoothed else self.velocity
        v = v * self.factor
        d = integrate_velocity(v, self.cfg.integrate) if self.cfg.integrate else v
        return compose(self.base, resize_displacement(d, self.shape))


def member_terms(displacement: Callable[[], torch.Tensor], moving: torch.Tensor, fixed: torch.Tensor,
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 cfg: RegistrationConfig) -> Callable[[int], Terms]:
    """An objective for :func:`dipreg.methods.engine.run` over B pairs (members) at once: ``displacement()`` gives
    their fields (B, 2, H, W) in pixels (a :class:`DetailField`, or :func:`dipreg.register_many`'s stacked
    networks), and each pair of the (B, 1, H, W) images gets its own data term plus ``cfg``'s fold barrier and
    volume term, as :func:`objective` computes them."""

    def terms(it: int) -> Terms:
        u = displacement()
        warped = warp_tensor(moving, u)
        losses = []
        for i in range(u.shape[0]):
            loss = loss_fn(warped[i:i + 1], fixed[i:i + 1])
            if cfg.fold_penalty or cfg.volume_penalty:
                loss = loss + field_penalty(u[i:i + 1], cfg.fold_penalty, cfg.volume_penalty)
            losses.append(loss)
        return Terms(losses, u, warped)

    return terms


def optimiser_images(moving: np.ndarray, fixed: np.ndarray, cfg: RegistrationConfig,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The two (H, W) images as the optimiser sees them: float32 (H, W) tensors on ``device``.

    ``cfg.normalize``: both mapped to [0, 1] by :func:`dipreg.intensity.prepare_pair` with ``cfg.intensity_clip``,
    ``cfg.intensity_match`` and ``cfg.intensity_background``; otherwise as they are.
    """
    m, f = (prepare_pair(moving, fixed, cfg.intensity_clip, cfg.intensity_match, cfg.intensity_background)
            if cfg.normalize else (moving, fixed))
    return (torch.as_tensor(m, dtype=torch.float32, device=device),
            torch.as_tensor(f, dtype=torch.float32, device=device))


def make_optimizer(params: Iterable[torch.Tensor], cfg: RegistrationConfig,
                   device: torch.device, lr: float | None = None) -> torch.optim.Optimizer:
    """The optimiser ``cfg.optimizer`` at ``lr`` (``None``: ``cfg.lr``) over ``params`` (leaf tensors that require
    grad).

    Adam runs fused (one kernel for all tensors per step) on CPU and CUDA: the same update as the
    default implementation up to float rounding, and faster (BENCHMARKS.md, "after fused Adam").
    """
    lr = cfg.lr if lr is None else lr
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr)
    return torch.optim.Adam(params, lr=lr, fused=device.type in ("cpu", "cuda"))


def objective(model: DIPField, z: torch.Tensor, moving: torch.Tensor, fixed: torch.Tensor,
              loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
              fold_weight: float, volume_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One iteration's loss, displacement and warped image (paper eq. 2, plus the fold barrier and the volume
    regulariser of presets that have them: ``fold_weight`` and ``volume_weight`` times
    :func:`~dipreg.losses.field_penalty` of u, det J computed once).

    ``z``: (1, C, h, w) noise; ``moving``, ``fixed``: (1, 1, H, W) images as the optimiser sees them.
    Returns the scalar loss, the displacement (1, 2, H, W) in pixels and ``warp_tensor(moving, u)``.
    """
    u = model(z)
    warped = warp_tensor(moving, u)
    loss = loss_fn(warped, fixed)
    if fold_weight or volume_weight:
        loss = loss + field_penalty(u, fold_weight, volume_weight)
    return loss, u, warped


@functools.cache
def compiled_objective() -> Callable:
    """:func:`objective` through ``torch.compile``, built once per process, so every later registration
    with the same architecture and image size reuses the compiled kernels."""
    return torch.compile(objective)


def register(moving: ArrayLike, fixed: ArrayLike, *, config: RegistrationConfig | str | None = None,
             seed: int | None = None, device: str | torch.device | None = None, progress: bool = True,
             callback: Callable[[Step], bool | None] | None = None, compile: bool = False,
             **overrides: Any) -> RegistrationResult:
    """Register ``moving`` onto ``fixed`` with a randomly initialised CNN as the prior.

    ``config="paper"`` is the paper's method (eq. 2: the network's weights optimised on the MAE, the field read
    out as a displacement). The default presets (``"cpu"``, ``"gpu"``) are a hybrid built on it: the same
    generator, but after an affine pre-alignment, on a coarse control grid and integrated as a velocity, with
    robust intensity handling, a fold barrier, an explicit volume regulariser and early stopping, followed by a
    detail stage (:class:`DetailField`, ``detail_steps``: a smoothed free velocity on a finer grid);
    :func:`dipreg.presets.differences` lists every departure from the paper and the book's chapter "Reproducing
    the brain MRI results" measures each one.

    Args:
        moving, fixed: (H, W) images, numpy arrays or torch tensors, same shape, in the same intensity units
            (any; rescaled to [0, 1] for the optimisation when ``config.normalize``, as
            ``config.intensity_clip`` and ``config.intensity_match`` say).
        config: a :class:`RegistrationConfig`, a preset name (``"paper"``, ``"cpu"``, ...) or ``None`` for the
            device's default (``"gpu"`` on CUDA, ``"cpu"`` otherwise; ``result.info["preset"]`` says which).
        seed: seeds the weights and every noise draw (``None`` means 0): same seed and device, same numbers
            (on a CPU also the same ``torch.get_num_threads()`` and instruction set, AVX2 or AVX-512, by which
            PyTorch's kernels differ: the optimisation amplifies float rounding).
        device: ``"cpu"``, ``"cuda"``, ... or ``None`` for CUDA when available.
        progress: show a progress bar.
        callback: called with a :class:`Step` after every iteration; returning ``True`` stops the run.
        compile: run each iteration's forward and backward pass through ``torch.compile``. The first call
            in a process compiles (about a minute on a 2-core CPU, seconds when the on-disk cache of an
            earlier process is warm); later calls with the same architecture and image size reuse it, and
            a step takes about 20 % less time on a 2-core CPU (``BENCHMARKS.md``). The same update up to
            float rounding, which the optimisation amplifies: results match eager mode statistically, not
            digit by digit.
        **overrides: config fields to change, e.g. ``iterations=100``.

    Returns:
        A :class:`RegistrationResult`; ``displacement`` is (2, H, W) in pixels (rows, columns) and
        ``warped = warp(moving, displacement)``.

    Raises:
        TypeError, ValueError: bad images or config fields. RegistrationError: the loss became NaN.
        RegistrationInterrupted: a KeyboardInterrupt (Ctrl-C) during the run; it carries the losses and the
        field reached so far.
    """
    mov = as_image(moving, "moving")
    fix = as_image(fixed, "fixed")
    same_shape(mov, fix, "moving", "fixed")
    dev = resolve_device(device)
    cfg = resolve_config(config, dev, overrides)
    seed = check_seed(seed)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a function called with a Step after every iteration (or None), got "
                        f"{callback!r}")
    start = time.perf_counter()

    m_t, f_t = (t[None, None] for t in optimiser_images(mov, fix, cfg, dev))
    gen = torch.Generator(device=dev).manual_seed(seed)
    model = make_field(cfg, mov.shape, seed, dev)
    loss_fn = get_loss(cfg.loss)
    theta = fit_affine(m_t, f_t, loss_fn, levels=levels_to(cfg.prealign_finest)) if cfg.prealign == "affine" else None
    if theta is not None:
        model.set_prealign(theta)
    step_fn = compiled_objective() if compile else objective
    opt = make_optimizer(model.parameters(), cfg, dev)
    noise = Noise(lambda: model.noise(gen, dev), cfg.noise == "fixed", cfg.readout_draws)

    def terms(it: int) -> Terms:
        z = noise()
        try:
            loss, u, warped_t = step_fn(model, z, m_t, f_t, loss_fn, cfg.fold_penalty, cfg.volume_penalty)
        except Exception as exc:  # torch.compile needs a working C++ compiler (CPU) or Triton (CUDA)
            if compile and it == 0:
                raise RegistrationError(f"torch.compile failed ({type(exc).__name__}: {exc}); run with "
                                        "compile=False", []) from exc
            raise
        return Terms([loss], u, warped_t)

    def step(it: int, t: Terms, values: list[float]) -> bool | None:
        return callback(Step(it, values[0], t.output.detach(), t.warped.detach()))

    fit = run([Stage(terms, opt, cfg.iterations)], total=cfg.iterations, patience=cfg.patience,
              min_delta=cfg.min_delta, callback=None if callback is None else step,
              nonfinite=lambda it, _, value: (f"the loss became {value} at iteration {it}; lower the learning "
                                              f"rate (now {cfg.lr}) or check the images"),
              progress=progress, desc=f"dipreg [{cfg.preset}, {dev.type}]", interruptible=True,
              keep_best=noise.fixed is not None and cfg.readout == "best")
    history = fit.histories[0]
    stopped, readout_step = fit.stopped, fit.best_step[0]
    net_steps = len(history)
    best = fit.best[0]
    if cfg.detail_steps and stopped in ("iterations", "converged"):
        detail = DetailField(cfg, mov.shape, model.refine_grid, noise.readout(model, best))

        def detail_step(it: int, t: Terms, values: list[float]) -> bool | None:
            return callback(Step(net_steps + it, values[0], t.output.detach(), t.warped.detach()))

        try:
            dfit = run([Stage(member_terms(detail, m_t, f_t, loss_fn, cfg),
                              make_optimizer([detail.velocity], cfg, dev, lr=cfg.detail_lr), cfg.detail_steps)],
                       total=cfg.detail_steps, callback=None if callback is None else detail_step,
                       nonfinite=lambda it, _, value: (f"the loss became {value} at step {it} of the detail stage; "
                                                       f"lower detail_lr (now {cfg.detail_lr}) or check the images"),
                       progress=progress, desc=f"dipreg detail [{cfg.preset}, {dev.type}]", interruptible=True,
                       keep_best=True)
        except RegistrationError as exc:  # the losses of both stages, as a run without the stage would report them
            exc.history = history + exc.history
            raise
        history = history + dfit.histories[0]
        if dfit.stopped != "iterations":
            stopped = dfit.stopped
        if dfit.best[0] is not None:
            best, readout_step = dfit.best[0], net_steps + dfit.best_step[0]

    def readout() -> RegistrationResult:
        u = noise.readout(model, best) if best is fit.best[0] else best
        disp, check = checked(m_t, f_t, u, loss_fn, history, stacklevel=3,
                              extra=None if theta is None else area_warning(theta, mov.shape))
        return RegistrationResult(
            warped=warp(mov, disp), displacement=disp, history=history, config=cfg,
            seconds=time.perf_counter() - start, moving=mov, fixed=fix, method="dip", device=str(dev),
            info={"preset": cfg.preset, "overridden": cfg.overridden(), "iterations": net_steps,
                  "detail_steps": len(history) - net_steps, "stopped": stopped, "readout_step": readout_step,
                  "seed": seed, **check,
                  **({} if theta is None else {"affine": theta[0].tolist(),
                                                    "affine_area": area_change(theta, mov.shape)})},
        )

    if stopped != "interrupted":
        return readout()
    try:  # keep what the run reached, then let the interrupt go on
        partial = readout()
    except Exception:  # weights that give no finite field: the history is all there is
        partial = None
    raise RegistrationInterrupted(history, partial)
