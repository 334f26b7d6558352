"""Figures used across the book: image panels, deformation grids, det J maps (paper Fig. 3 style)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import TwoSlopeNorm

from dipreg._validate import as_displacement
from dipreg.metrics import jacobian_determinant


def show_images(images: Sequence[np.ndarray], titles: Sequence[str] | None = None, *, cmap: str = "gray",
                size: float = 2.6, axes=None):
    """Show (H, W) images side by side without ticks; returns the figure."""
    if axes is None:
        fig, axes = plt.subplots(1, len(images), figsize=(size * len(images), size), squeeze=False)
        axes = axes[0]
    for i, (ax, im) in enumerate(zip(axes, images, strict=False)):
        ax.imshow(np.asarray(im), cmap=cmap, vmin=None if cmap != "gray" else 0, vmax=None if cmap != "gray" else 1)
        ax.set_axis_off()
        if titles is not None:
            ax.set_title(titles[i], fontsize=10)
    return axes[0].figure


def plot_grid(ax, displacement, *, step: int = 8, color: str = "k", linewidth: float = 0.6,
              background: np.ndarray | None = None) -> None:
    """Draw the deformed grid phi(x) = x + u(x): every ``step``-th row and column line, in image axes."""
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


def plot_jacobian(ax, displacement, *, vmax: float = 2.0, colorbar: bool = True):
    """det J map in a diverging colour map centred at 1 (red expansion, blue compression); folds in black."""
    det = jacobian_determinant(displacement)
    im = ax.imshow(det, cmap="RdBu_r", norm=TwoSlopeNorm(vcenter=1.0, vmin=0.0, vmax=vmax))
    folds = np.ma.masked_where(det > 0, np.ones_like(det))
    ax.imshow(folds, cmap="gray_r", vmin=0, vmax=1, alpha=1.0)
    ax.set_axis_off()
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="det J")
    return im


def plot_result(result, *, step: int = 8, title: str | None = None, axes=None):
    """Paper Fig. 3 style: moving, fixed, warped, deformation grid and det J map of one result."""
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


def plot_history(history: Sequence[float], ax=None, label: str | None = None):
    """Loss against iteration."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    ax.plot(np.arange(len(history)), history, label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    if label:
        ax.legend()
    return ax
