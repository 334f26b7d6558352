"""Figures used across the book: image panels, deformation grids, det J maps (paper Fig. 3 style)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import TwoSlopeNorm

from dipreg.metrics import jacobian_determinant
from dipreg.validate import ArrayLike, as_displacement

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage


def show_images(images: Sequence[np.ndarray], titles: Sequence[str] | None = None, *, cmap: str = "gray",
                size: float = 2.6, axes: Sequence[Axes] | np.ndarray | None = None) -> Figure:
    """Show (H, W) images side by side without ticks; returns the figure.

    Args:
        images: (H, W) images; with ``cmap="gray"`` shown on a fixed [0, 1] intensity scale.
        titles: one title per image, or None.
        cmap: matplotlib colour map name.
        size: side of each panel, in inches (only when a new figure is made).
        axes: Axes to draw into, one per image (a list or the array ``plt.subplots`` returns); None makes a
            new figure.
    """
    if axes is None:
        fig, axes = plt.subplots(1, len(images), figsize=(size * len(images), size), squeeze=False)
        axes = axes[0]
    for i, (ax, im) in enumerate(zip(axes, images, strict=False)):
        ax.imshow(np.asarray(im), cmap=cmap, vmin=None if cmap != "gray" else 0, vmax=None if cmap != "gray" else 1)
        ax.set_axis_off()
        if titles is not None:
            ax.set_title(titles[i], fontsize=10)
    return axes[0].figure


def plot_grid(ax: Axes, displacement: ArrayLike, *, step: int = 8, color: str = "k", linewidth: float = 0.6,
              background: np.ndarray | None = None) -> None:
    """Draw the deformed grid phi(x) = x + u(x): every ``step``-th row and column line, in image axes.

    Args:
        ax: the Axes to draw into.
        displacement: (2, H, W) in pixels, channel 0 rows, channel 1 columns.
        step: spacing of the grid lines, in pixels.
        color: line colour (any matplotlib colour).
        linewidth: line width, in points.
        background: optional (H, W) image in [0, 1] intensity units, drawn underneath in grey.
    """
    u = as_displacement(displacement)
    h, w = u.shape[1:]
    rows, cols = np.mgrid[:h, :w].astype(float)
    pr, pc = rows + u[0], cols + u[1]
    if background is not None:
        ax.imshow(background, cmap="gray", vmin=0, vmax=1)
    for r in range(0, h, step):
        ax.plot(pc[r], pr[r], color=color, lw=linewidth)
    for c in range(0, w, step):
        ax.plot(pc[:, c], pr[:, c], color=color, lw=linewidth)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.set_axis_off()


FOLD_COLOUR = "#ffd400"
"""Colour of folded pixels (det J <= 0) in every det J map: yellow, apart from both ends of ``RdBu_r``."""


def show_detj(ax: Axes, det: ArrayLike, *, vmax: float = 2.0) -> AxesImage:
    """Draw a det J map (H, W) (dimensionless) in ``RdBu_r`` centred at 1 over [0, ``vmax``], folded pixels
    (det J <= 0) in :data:`FOLD_COLOUR`. Returns the map's image (for a colour bar)."""
    from matplotlib.colors import ListedColormap

    det = np.asarray(det, dtype=np.float64)
    im = ax.imshow(det, cmap="RdBu_r", norm=TwoSlopeNorm(vcenter=1.0, vmin=0.0, vmax=vmax))
    ax.imshow(np.ma.masked_where(det > 0, np.ones_like(det)), cmap=ListedColormap([FOLD_COLOUR]), vmin=0, vmax=1)
    return im


def plot_jacobian(ax: Axes, displacement: ArrayLike, *, vmax: float = 2.0, colorbar: bool = True) -> AxesImage:
    """det J map in a diverging colour map centred at 1 (red expansion, blue compression); folds in yellow.

    Args:
        ax: the Axes to draw into.
        displacement: (2, H, W) in pixels, channel 0 rows, channel 1 columns.
        vmax: det J (dimensionless) at the top of the colour scale, which spans [0, vmax] centred at 1.
        colorbar: add a colour bar beside ``ax``.

    Returns:
        The image of the det J map (for a shared colour bar).
    """
    im = show_detj(ax, jacobian_determinant(displacement), vmax=vmax)
    ax.set_axis_off()
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="det J")
    return im


class ShownResult(Protocol):
    """What :func:`plot_result` reads of a result (:class:`dipreg.RegistrationResult` has it all): the (H, W)
    images, the (2, H, W) pixel displacement and ``metrics()``. A protocol, so that this module needs no
    import of :mod:`dipreg.result`, which imports this one to draw itself."""

    moving: np.ndarray
    fixed: np.ndarray
    warped: np.ndarray
    displacement: np.ndarray

    def metrics(self) -> dict[str, Any]: ...


def plot_result(result: ShownResult, *, step: int = 8, title: str | None = None,
                axes: Sequence[Axes] | np.ndarray | None = None) -> Figure:
    """Paper Fig. 3 style: moving, fixed, warped, deformation grid and det J map of one result.

    Args:
        result: the registration to show (images on a [0, 1] intensity scale).
        step: spacing of the deformation grid lines, in pixels.
        title: optional figure title.
        axes: five Axes to draw into; None makes a new 1 x 5 figure.

    Returns:
        The figure.
    """
    if axes is None:
        fig, axes = plt.subplots(1, 5, figsize=(15, 3.3))
    m = result.metrics()
    show_images([result.moving, result.fixed, result.warped],
                ["moving I", "fixed T", f"warped (SSIM {m['ssim_after']:.3f})"], axes=axes[:3])
    plot_grid(axes[3], result.displacement, step=step)
    axes[3].set_title("deformation grid", fontsize=10)
    plot_jacobian(axes[4], result.displacement)
    axes[4].set_title(f"det J (mean {m['jac_mean']:.3f}, {100 * m['folded_fraction']:.2f}% folded)", fontsize=10)
    fig = axes[0].figure
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_ladder(figure: dict[str, np.ndarray], rungs: Sequence[str], *, size: float = 1.9) -> Figure:
    """One column per rung of :mod:`dipreg.experiments.steps` found in ``figure`` (what
    :func:`~dipreg.experiments.steps.load_figure` returns), the fixed image first: warped image on top, det J
    below (:func:`show_detj`: red expansion, blue compression, folds in :data:`FOLD_COLOUR`); returns the figure."""
    shown = [r for r in rungs if f"{r}/warped" in figure]
    fig, axes = plt.subplots(2, len(shown) + 1, figsize=(size * (len(shown) + 1), 2 * size + 0.4), squeeze=False)
    show_images([figure["fixed"]], ["fixed"], axes=[axes[0, 0]])
    show_images([figure["moving"]], ["moving"], axes=[axes[1, 0]])
    for i, rung in enumerate(shown, 1):
        show_images([np.clip(figure[f"{rung}/warped"], 0, 1)], [rung], axes=[axes[0, i]])
        show_detj(axes[1, i], figure[f"{rung}/detj"])
        axes[1, i].set_axis_off()
    fig.tight_layout()
    return fig
