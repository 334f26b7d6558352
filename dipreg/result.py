"""The result type shared by every registration method (DIP, the classical baseline, ANTs).

Book: chapter "Registration with a deep image prior" shows one (``res.plot()``, ``res.metrics()``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from dipreg.validate import ArrayLike


class Settings(Protocol):
    """The settings a method ran with: :class:`dipreg.RegistrationConfig` (DIP),
    :class:`dipreg.methods.classical.ClassicalSettings`, :class:`dipreg.methods.ants.AntsSettings`
    (:mod:`dipreg.methods` names each method's type). ``to_dict()`` gives them JSON-ready."""

    def to_dict(self) -> dict[str, Any]: ...


@dataclass
class RegistrationResult:
    """What a registration returns.

    Attributes:
        warped: (H, W) moving image warped onto the fixed one, ``moving(x + displacement(x))``.
        displacement: (2, H, W) in pixels, channel 0 rows, channel 1 columns (pull-back).
        history: the loss at every iteration (empty for methods that do not report one).
        config: the settings used, a :class:`Settings` (``config.to_dict()`` for JSON).
        seconds: wall time of the registration, in seconds.
        moving, fixed: the (H, W) inputs, as float arrays, in the caller's intensity units (not normalised).
        method: ``"dip"``, ``"classical"``, ``"ants-SyN"``, ...
        device: where it ran.
        info: extra facts (iterations run, why it stopped, the preset the default picked).
    """

    warped: np.ndarray
    displacement: np.ndarray
    history: list[float]
    config: Settings
    seconds: float
    moving: np.ndarray
    fixed: np.ndarray
    method: str = "dip"
    device: str = "cpu"
    info: dict[str, Any] = field(default_factory=dict)

    def jacobian_determinant(self) -> np.ndarray:
        """det J of phi(x) = x + u(x), (H, W)."""
        from dipreg.metrics import jacobian_determinant

        return jacobian_determinant(self.displacement)

    def metrics(self, moving_mask: ArrayLike | None = None, fixed_mask: ArrayLike | None = None,
                reference: ArrayLike | None = None, *, data_range: float | None = None,
                moving_labels: ArrayLike | None = None, fixed_labels: ArrayLike | None = None) -> dict[str, float]:
        """SSIM before/after, det J statistics, folding, SD log det J; Dice, label Dice and EPE when given.

        See :func:`dipreg.metrics.summarize` for the keys and their units. ``moving_mask``/``fixed_mask``:
        (H, W) boolean masks (both or neither); ``reference``: (2, H, W) displacement in pixels;
        ``data_range``: the SSIM data range in intensity units, None to pick it from ``moving`` and ``fixed``
        (1.0 when both lie within [0, 1], else their joint max - min; the value used is returned as
        ``ssim_data_range``); ``moving_labels``/``fixed_labels``: (H, W) integer label maps for label Dice.
        """
        from dipreg.metrics import summarize

        return summarize(self.moving, self.fixed, self.warped, self.displacement, moving_mask=moving_mask,
                         fixed_mask=fixed_mask, reference=reference, data_range=data_range,
                         moving_labels=moving_labels, fixed_labels=fixed_labels)

    def plot(self, **kwargs: Any) -> Figure:
        """Paper Fig. 3 style panels: moving, fixed, warped, deformation grid, det J map; returns the figure.

        ``kwargs`` go to :func:`dipreg.plotting.plot_result`: ``step`` (grid line spacing, pixels), ``title``,
        ``axes`` (five matplotlib Axes to draw into).
        """
        from dipreg.plotting import plot_result

        return plot_result(self, **kwargs)

    def __repr__(self) -> str:
        h, w = self.warped.shape
        return (f"RegistrationResult(method={self.method!r}, shape=({h}, {w}), steps={len(self.history)}, "
                f"seconds={self.seconds:.2f}, device={self.device!r})")
