"""The one optimisation loop behind every method: a field module, its input, an objective and an optimiser.

Book: chapter "Registration with a deep image prior" (``book/07_dip_registration.ipynb``) explains the loop;
chapter "Classical registration" (``book/04_classical.ipynb``) and chapter "The deep image prior"
(``book/05_deep_image_prior.ipynb``) run it on a parameter field and on a denoising generator.

A *field module* maps an input to a displacement (N, 2, H, W) in pixels, channel 0 rows, channel 1 columns:
:class:`dipreg.methods.dip.DIPField` (noise -> generator -> field, paper eq. 2), :class:`ParameterField` (the field
itself, paper eq. 1) or :class:`BatchField` (B modules of one architecture evaluated as one, for
:func:`dipreg.register_many`). :class:`Noise` is the input of a noise-driven module: a fresh draw per iteration or
one fixed draw, and the readout: the module at the fixed draw, the evaluated field with the lowest loss, or the
mean over ``draws`` fresh draws. :func:`run` is the loop: the caller's objective gives one loss per member (one
member per pair), :func:`run` checks them for NaN, steps the optimiser, keeps one history per member (and, when
asked, each member's output at its lowest loss), stops a member on a :class:`Plateau`, shows a progress bar, calls
the callback and, when asked, turns Ctrl-C into ``Fit.stopped == "interrupted"`` (the field reached is kept).
Methods configure it: :func:`dipreg.register`, :func:`dipreg.register_many`,
:func:`dipreg.methods.classical.register_classical` and :func:`dipreg.methods.denoise.dip_denoise`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dipreg.metrics import ssim
from dipreg.transform import warp_tensor


class RegistrationError(RuntimeError):
    """The optimisation broke down (e.g. the loss became NaN). ``history`` holds the losses so far."""

    def __init__(self, message: str, history: list[float]):
        super().__init__(message)
        self.history = history


class RegistrationWarning(UserWarning):
    """A registration ended worse than the unregistered pair; ``result.info["warning"]`` says how."""


class Plateau:
    """Early stopping on the training loss: :meth:`update` says stop once the best loss so far has not improved
    by more than ``min_delta`` for ``patience`` steps in a row (``patience=0``: never)."""

    def __init__(self, patience: int, min_delta: float):
        self.patience, self.min_delta = patience, min_delta
        self.best, self.since_best = math.inf, 0

    def update(self, value: float) -> bool:
        """Record one step's loss; True when the run should stop."""
        if value < self.best - self.min_delta:
            self.best, self.since_best = value, 0
            return False
        self.since_best += 1
        return bool(self.patience) and self.since_best >= self.patience


def progress_bar(total: int, enabled: bool, desc: str) -> Any:
    """A tqdm bar over ``total`` steps labelled ``desc``, or ``None`` when not ``enabled``."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


def quality_check(moving: torch.Tensor, fixed: torch.Tensor, u: torch.Tensor,
                  loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> dict[str, Any]:
    """Is the registration better than none? The data term and SSIM of the optimiser's images (1, 1, H, W)
    at the identity and after the displacement ``u`` (1, 2, H, W), pixels.

    Returns ``loss_identity``, ``loss_final``, ``ssim_identity``, ``ssim_final`` and ``warning``: ``None``, or
    what got worse (the data term up by more than 1 % and 0.001, or SSIM down by more than 0.01) and what to
    check.
    """
    with torch.no_grad():
        warped = warp_tensor(moving, u)
        loss_id, loss_fin = float(loss_fn(moving, fixed)), float(loss_fn(warped, fixed))
    m, f, w = (t[0, 0].double().cpu().numpy() for t in (moving, fixed, warped))
    data_range = max(float(max(m.max(), f.max()) - min(m.min(), f.min())), 1e-12)
    ssim_id, ssim_fin = ssim(m, f, data_range=data_range), ssim(w, f, data_range=data_range)
    worse = []
    if loss_fin > loss_id + max(0.01 * abs(loss_id), 1e-3):
        worse.append(f"the data term rose from {loss_id:.4g} (no registration) to {loss_fin:.4g}")
    if ssim_fin < ssim_id - 0.01:
        worse.append(f"SSIM fell from {ssim_id:.3f} (no registration) to {ssim_fin:.3f}")
    warning = None if not worse else (
        "the registration made the pair less alike: " + "; ".join(worse) + ". Check that both images show the "
        "same contrast (between contrasts use loss='lncc'), that one image does not hold outliers or padding that "
        "set its intensity scale (intensity_clip), or lower the learning rate")
    return {"loss_identity": loss_id, "loss_final": loss_fin, "ssim_identity": ssim_id, "ssim_final": ssim_fin,
            "warning": warning}


def checked(moving: torch.Tensor, fixed: torch.Tensor, u: torch.Tensor,
            loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], history: list[float], *,
            label: str = "", stacklevel: int = 2, extra: str | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The final field ``u`` (1, 2, H, W), pixels, as a float64 (2, H, W) array and its :func:`quality_check`.

    Raises RegistrationError when ``u`` holds NaN or inf; warns (RegistrationWarning, ``stacklevel`` counted from
    the caller of this function) when the check finds the pair less alike, or when the caller passes a warning of
    its own (``extra``, e.g. :func:`dipreg.methods.affine.area_warning`), both joined in ``check["warning"]``.
    ``label`` prefixes the messages.
    """
    disp = u[0].double().cpu().numpy()
    if not np.all(np.isfinite(disp)):
        raise RegistrationError(f"{label}the final displacement contains NaN or inf", history)
    check = quality_check(moving, fixed, u, loss_fn)
    if extra:
        check["warning"] = f"{check['warning']}; {extra}" if check["warning"] else extra
    if check["warning"]:
        warnings.warn(f"{label}{check['warning']}", RegistrationWarning, stacklevel=stacklevel + 1)
    return disp, check


class Noise:
    """The input of a noise-driven field module: ``draw()`` makes one draw (seeded by the caller's generator).

    With ``fixed`` one draw is made now and fed at every iteration, and :meth:`readout` returns the module's
    output for it, or the field that the loop evaluated with the lowest loss (:attr:`Fit.best`) where the caller
    kept one; otherwise every iteration draws afresh and :meth:`readout` averages the field over ``draws`` fresh
    draws.
    """

    def __init__(self, draw: Callable[[], torch.Tensor], fixed: bool, draws: int):
        self.draw, self.draws = draw, draws
        self.fixed = draw() if fixed else None

    def __call__(self) -> torch.Tensor:
        """The input of one iteration."""
        return self.fixed if self.fixed is not None else self.draw()

    def readout(self, module: Callable[[torch.Tensor], torch.Tensor], best: torch.Tensor | None = None
                ) -> torch.Tensor:
        """The field to keep, without gradients. With the fixed draw: ``best`` (the evaluated output with the lowest
        loss, a field the loss has seen) when given, else ``module`` at the fixed draw (after the last optimiser
        step, a field no loss has evaluated). Fresh draws: the mean of ``module`` over ``draws`` of them."""
        if self.fixed is not None and best is not None:
            return best
        with torch.no_grad():
            if self.fixed is not None:
                return module(self.fixed)
            return sum(module(self.draw()) for _ in range(self.draws)) / self.draws


class ParameterField(torch.nn.Module):
    """The classical parameterisation (paper eq. 1): the displacement itself, (1, 2, h, w) in pixels of its
    own grid, is the parameter, starting at ``init``. It takes no input."""

    def __init__(self, init: torch.Tensor):
        super().__init__()
        self.u = torch.nn.Parameter(init.clone())

    def forward(self, z: torch.Tensor | None = None) -> torch.Tensor:
        return self.u


def _without_running_stats(module: torch.nn.Module) -> None:
    """Make every BatchNorm use batch statistics only (no running-stat buffers to update under vmap).

    ``register`` keeps its network in training mode throughout, readout included, so BatchNorm always
    normalises with the current batch's statistics and the running averages are never read: dropping them
    changes no number.
    """
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean = None
            m.running_var = None
            m.num_batches_tracked = None
            m.track_running_stats = False


class BatchField(torch.nn.Module):
    """B field modules of one architecture evaluated as one: their parameters stacked along a new first
    dimension (:func:`torch.func.stack_module_state`), one call per step under :func:`torch.vmap`.

    Each module still sees its own batch of one input, so BatchNorm normalises with that member's statistics
    (its running statistics are dropped, see :func:`_without_running_stats`; ``modules`` are changed so).
    ``forward`` maps the inputs (B, 1, ...) to the fields (B, 2, H, W). The stacked parameters are leaves of
    their own: optimising them never touches ``modules``.
    """

    def __init__(self, modules: Sequence[torch.nn.Module]):
        super().__init__()
        for m in modules:
            _without_running_stats(m)
        params, self.stacked_buffers = torch.func.stack_module_state(list(modules))
        self.names = list(params)
        self.stacked = torch.nn.ParameterList([params[k] for k in self.names])
        base = modules[0]

        def one(p: tuple[torch.Tensor, ...], b: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(base, ({**dict(zip(self.names, p, strict=True)), **b}), (z,))

        self._batched = torch.vmap(one, in_dims=(0, 0, 0))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self._batched(tuple(self.stacked), self.stacked_buffers, z)[:, 0]


@dataclass
class Terms:
    """One iteration's forward pass, as the objective returns it to :func:`run`.

    Attributes:
        losses: one scalar tensor per member, each that member's loss (what is minimised).
        output: the module's output, e.g. the displacement (B, 2, H, W) in pixels.
        warped: the moving image warped by ``output``, where there is one.
        parts: further scalar tensors for the caller's callback (e.g. the data term and the regulariser).
    """

    losses: list[torch.Tensor]
    output: torch.Tensor | None = None
    warped: torch.Tensor | None = None
    parts: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Stage:
    """``iterations`` steps of ``optimizer`` on ``objective(i)`` (``i``: the step within the stage, from 0).

    A run has one stage, or one per pyramid level (coarse to fine, each with its own field and optimiser).
    Where there are several members, every parameter of ``optimizer`` holds them along its first dimension.
    """

    objective: Callable[[int], Terms]
    optimizer: torch.optim.Optimizer
    iterations: int


@dataclass
class Fit:
    """What :func:`run` did: ``histories`` (one list of losses per member), ``active`` (False for a member that
    converged), ``stopped``: ``"iterations"``, ``"converged"`` (every member), ``"callback"`` or
    ``"interrupted"``, and with ``run(keep_best=True)`` ``best`` (each member's output (1, ...) at its lowest
    recorded loss in the last stage in which it took a step, ``None`` before its first recorded step or when
    nothing is kept) and ``best_step`` (that step's index in its history, or ``None`` likewise: a caller's
    ``info["readout_step"]``)."""

    histories: list[list[float]]
    active: list[bool]
    stopped: str = "iterations"
    best: list[torch.Tensor | None] = field(default_factory=list)
    best_step: list[int | None] = field(default_factory=list)

    def reason(self, member: int) -> str:
        """Why ``member`` stopped."""
        return "converged" if not self.active[member] else self.stopped

    @property
    def steps(self) -> int:
        """Steps run (by the members that ran longest)."""
        return max(len(h) for h in self.histories)


def mean_loss(values: list[float]) -> dict[str, Any]:
    """The progress bar's postfix: the mean loss over the members."""
    return {"loss": f"{sum(values) / len(values):.4f}"}


def run(stages: Iterable[Stage], *, members: int = 1, total: int, patience: int = 0, min_delta: float = 0.0,
        callback: Callable[[int, Terms, list[float]], bool | None] | None = None,
        nonfinite: Callable[[int, int, float], str] | None = None, progress: bool = False, desc: str = "",
        postfix: Callable[[list[float]], dict[str, Any]] | None = mean_loss,
        interruptible: bool = False, keep_best: bool = False) -> Fit:
    """Optimise: for every stage, ``stage.iterations`` steps of forward, NaN check, backward, optimiser step.

    Args:
        stages: the stages in order; an iterator is read one stage at a time, after the previous one ran, so a
            stage can start from where the last one ended.
        members: how many independent members the objective's ``losses`` hold. A member whose loss has not
            improved by ``min_delta`` for ``patience`` steps (:class:`Plateau`; 0: never) is frozen: left out of
            the loss, its parameters put back after every later step (so Adam's momentum cannot move it); the run
            ends when every member is frozen.
        total: the steps of all stages, for the progress bar.
        callback: called after every step with the step's index over all stages (from 0), its :class:`Terms`
            and every member's loss value; returning True ends the run (``stopped == "callback"``).
        nonfinite: the message for a NaN or inf loss, from (step index, member, value); the run raises
            :class:`RegistrationError` with it and that member's history. ``None``: a generic message.
        progress, desc, postfix: a progress bar labelled ``desc``; ``postfix`` turns the values into the bar's
            postfix (``None``: none).
        interruptible: catch a KeyboardInterrupt (Ctrl-C) and return with ``stopped == "interrupted"``, the
            parameters as reached; otherwise it propagates.
        keep_best: keep in ``Fit.best`` each active member's ``terms.output`` (a detached copy) at its lowest loss
            so far, counted afresh in every stage, once the step is in its history (a step cut short by Ctrl-C is
            not); the readout of a fixed-input module (:meth:`Noise.readout`).
    """
    histories: list[list[float]] = [[] for _ in range(members)]
    plateaus = [Plateau(patience, min_delta) for _ in range(members)]
    fit = Fit(histories, [True] * members, best=[None] * members, best_step=[None] * members)
    bar = progress_bar(total, progress, desc)
    step = 0
    try:
        for stage in stages:
            params = [p for group in stage.optimizer.param_groups for p in group["params"]]
            lowest = [math.inf] * members
            for i in range(stage.iterations):
                terms = stage.objective(i)
                values = torch.stack(terms.losses).detach().cpu().tolist()  # one device sync for all members
                for k, value in enumerate(values):
                    if not math.isfinite(value):
                        message = (nonfinite(step, k, value) if nonfinite is not None else
                                   f"the loss became {value} at iteration {step}; lower the learning rate")
                        raise RegistrationError(message, histories[k])
                # copied before the optimiser step moves what the output may alias; kept once the step is recorded
                pending = {k: terms.output[k:k + 1].detach().clone() for k, value in enumerate(values)
                           if keep_best and fit.active[k] and value < lowest[k]}
                stage.optimizer.zero_grad(set_to_none=True)
                if members == 1:
                    terms.losses[0].backward()
                else:
                    sum(loss for loss, on in zip(terms.losses, fit.active, strict=True) if on).backward()
                frozen = None if all(fit.active) else torch.tensor([not on for on in fit.active],
                                                                    device=params[0].device)
                kept = None if frozen is None else [p.detach()[frozen].clone() for p in params]
                stage.optimizer.step()
                if kept is not None:
                    with torch.no_grad():
                        for p, k in zip(params, kept, strict=True):
                            p[frozen] = k
                for k, value in enumerate(values):
                    if fit.active[k]:
                        histories[k].append(value)
                for k, output in pending.items():
                    lowest[k], fit.best[k], fit.best_step[k] = values[k], output, len(histories[k]) - 1
                if bar is not None:
                    bar.update(1)
                    if postfix is not None:
                        bar.set_postfix(**postfix(values), refresh=False)
                if callback is not None and callback(step, terms, values):
                    fit.stopped = "callback"
                    return fit
                step += 1
                for k, value in enumerate(values):
                    if fit.active[k]:
                        fit.active[k] = not plateaus[k].update(value)
                if not any(fit.active):
                    fit.stopped = "converged"
                    return fit
    except KeyboardInterrupt:
        if not interruptible:
            raise
        fit.stopped = "interrupted"
    finally:
        if bar is not None:
            bar.close()
    return fit
