"""The ablation grid shown: tables, figures and the widgets of the chapter (nothing is computed here).

Book: chapter "Ablations" (``book/10_ablations.ipynb``). Everything comes from a grid that
:func:`dipreg.experiments.ablation.run_grid` computed and :func:`~dipreg.experiments.ablation.load_grid`
read: :func:`axis_table`, :func:`plot_axis` and :func:`plot_setting` for the static book,
:func:`make_widgets` (ipywidgets) to browse it in a notebook.
"""

from __future__ import annotations

import io
import math
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from dipreg.experiments.ablation import AblationGrid, load_grid, lookup

if TYPE_CHECKING:
    from matplotlib.figure import Figure


# ---------------------------------------------------------------------------------------------------------------
# Tables and figures (no computation: everything comes from the grid)

_TABLE_COLS = (("ssim_after", "SSIM after", "{:.3f}"), ("jac_mean", "mean det J", "{:.3f}"),
               ("jac_std", "SD det J", "{:.3f}"), ("folded_fraction", "% folded", "{:.2%}"),
               ("std_log_jac", "SD log det J", "{:.3f}"), ("seconds", "seconds", "{:.1f}"))


def axis_table(grid: AblationGrid, axis: str, *, html: bool = False) -> list[dict[str, Any]] | str:
    """One row per value of ``axis``: the value, whether it is the default, the metrics, iterations, error.

    With ``html=True`` a small HTML ``<table>`` string (for the static book), else a list of dicts.
    Values not computed yet appear with NaN metrics and ``error="not computed"``.
    """
    if axis not in grid.axes:
        raise KeyError(f"axis {axis!r} is not in this grid; axes: {list(grid.axes)}")
    rows = []
    for e in grid.axes[axis]:
        rec = grid.records.get(e["key"])
        row: dict[str, Any] = {axis: e["value"], "label": e["label"], "default": e["default"]}
        for k, _, _ in _TABLE_COLS:
            row[k] = rec[k] if rec is not None else math.nan
        row["iterations"] = rec.get("iterations") if rec is not None else None
        row["error"] = (rec.get("error") if rec is not None else "not computed") or ""
        rows.append(row)
    if not html:
        return rows
    from html import escape

    head = "".join(f"<th>{escape(h)}</th>" for h in (axis, *[c[1] for c in _TABLE_COLS], "iterations", "note"))
    body = []
    for r in rows:
        cells = [escape(r["label"]) + (" (default)" if r["default"] else "")]
        for k, _, fmt in _TABLE_COLS:
            v = r[k]
            cells.append(fmt.format(v) if isinstance(v, (int, float)) and math.isfinite(v) else "-")
        cells.append("" if r["iterations"] is None else str(r["iterations"]))
        cells.append(escape(r["error"][:120]))
        style = ' style="font-weight:bold"' if r["default"] else ""
        body.append(f"<tr{style}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (f'<table class="dipreg-ablation"><thead><tr>{head}</tr></thead><tbody>' + "".join(body)
            + "</tbody></table>")


def _show_detj(ax, d: np.ndarray | None) -> None:
    from dipreg.plotting import show_detj

    if d is None:
        ax.text(0.5, 0.5, "failed", ha="center", va="center", transform=ax.transAxes)
    else:
        show_detj(ax, d)
    ax.set_axis_off()


def _show_img(ax, im: np.ndarray | None) -> None:
    if im is None:
        ax.text(0.5, 0.5, "failed", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.imshow(np.asarray(im, dtype=np.float32), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()


def _default_entry(grid: AblationGrid, axis: str) -> dict[str, Any] | None:
    for e in grid.axes[axis]:
        if e["default"]:
            return e
    return None


def plot_setting(grid: AblationGrid, axis: str, value: Any) -> Figure:
    """Figure of one setting: fixed, warped and det J thumbnails and the loss history beside the default's."""
    import matplotlib.pyplot as plt

    rec = lookup(grid, axis, value)
    fig, axs = plt.subplots(1, 4, figsize=(12, 3.1), gridspec_kw={"width_ratios": [1, 1, 1, 1.5]})
    plt.close(fig)
    _show_img(axs[0], grid.fixed)
    axs[0].set_title("fixed T", fontsize=9)
    _show_img(axs[1], rec["warped"])
    axs[1].set_title(f"warped (SSIM {rec['ssim_after']:.3f})", fontsize=9)
    _show_detj(axs[2], rec["detj"])
    axs[2].set_title(f"det J ({100 * rec['folded_fraction']:.2f} % folded)", fontsize=9)
    ax = axs[3]
    d = _default_entry(grid, axis)
    if d is not None and d["key"] != rec["key"] and d["key"] in grid.records:
        drec = grid.records[d["key"]]
        ax.plot(drec["history_steps"], drec["history"], color="0.6", lw=1, label=f"default ({d['label']})")
    if rec["history"]:
        ax.plot(rec["history_steps"], rec["history"], color="C0", lw=1.5, label=rec["label"])
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no loss history", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("iteration", fontsize=8)
    ax.set_ylabel("loss", fontsize=8)
    ax.tick_params(labelsize=7)
    err = f"  error: {rec['error'][:80]}" if rec.get("error") else ""
    fig.suptitle(f"{axis} = {rec['label']}{' (default)' if rec['default'] else ''}: SSIM {rec['ssim_after']:.3f}, "
                 f"mean det J {rec['jac_mean']:.3f} (SD {rec['jac_std']:.3f}), SD log det J {rec['std_log_jac']:.3f}, "
                 f"{rec['seconds']:.1f} s{err}", fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.16, top=0.82, wspace=0.12)  # tight_layout: 2x slower
    return fig


def plot_axis(grid: AblationGrid, axis: str) -> Figure:
    """Static figure of one axis: SSIM, % folded, SD log det J and seconds against the value, then the warped
    and det J thumbnails of every value (default in bold)."""
    import matplotlib.pyplot as plt

    rows = axis_table(grid, axis)
    n = len(rows)
    width = max(10.0, 1.6 * n)
    fig = plt.figure(figsize=(width, 2.6 + 2 * width / max(n, 4) * 0.9))
    gs = fig.add_gridspec(3, max(n, 4), height_ratios=[1.3, 1, 1])
    x = np.arange(n)
    labels = [r["label"] for r in rows]
    top = gs[0, :].subgridspec(1, 4, wspace=0.3)
    for i, (key, title, scale) in enumerate((("ssim_after", "SSIM after", 1), ("folded_fraction", "% folded", 100),
                                             ("std_log_jac", "SD log det J", 1), ("seconds", "seconds", 1))):
        ax = fig.add_subplot(top[0, i])
        y = np.array([r[key] for r in rows], dtype=float) * scale
        ax.plot(x, y, "o-", color="C0")
        for j, r in enumerate(rows):
            if r["default"]:
                ax.plot([j], [y[j]], "o", color="C3", ms=8, label="default")
        ax.set_xticks(x, labels, fontsize=7, rotation=30 if n > 4 else 0)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    for j, r in enumerate(rows):
        entry = grid.axes[axis][j]
        rec = grid.records.get(entry["key"])
        t = rec.get("thumb") if rec is not None else None
        has = t is not None and 0 <= t < len(grid.warped)
        axw = fig.add_subplot(gs[1, j])
        _show_img(axw, grid.warped[t] if has else None)
        axw.set_title(r["label"], fontsize=8, fontweight="bold" if r["default"] else "normal")
        _show_detj(fig.add_subplot(gs[2, j]), grid.detj[t] if has else None)
    fig.suptitle(f"Ablation: {axis} (top: metrics; middle: warped; bottom: det J, folds yellow)", fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------------------
# Widgets


def _import_ipywidgets():
    try:
        import ipywidgets
    except ImportError as exc:
        raise ImportError("the ablation widgets need ipywidgets: pip install ipywidgets (or pip install "
                          "'dipreg[widgets]'); without it use plot_axis() and axis_table()") from exc
    return ipywidgets


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """PNG bytes of a matplotlib figure, rendered at ``dpi`` dots per inch."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, pil_kwargs={"compress_level": 1})
    return buf.getvalue()


@dataclass
class AblationWidgets:
    """Controls of :func:`make_widgets`: ``axis`` (Dropdown), ``value`` (ToggleButtons of the axis's values),
    ``output`` (an Image widget holding the current figure), ``box`` (all of them, what is displayed) and
    ``on_change(axis, value) -> Figure``, the callback that draws a setting from the grid."""

    grid: AblationGrid
    axis: Any
    value: Any
    output: Any
    box: Any
    last_figure: Any = None
    seconds: float = math.nan

    def on_change(self, axis: str, value: Any) -> Figure:
        """The figure of ``axis = value``, from the stored grid (no registration runs)."""
        return plot_setting(self.grid, axis, value)

    def update(self, *_: Any) -> None:
        """Draw the current selection into ``output``."""
        start = time.perf_counter()
        entries = self.grid.axes[self.axis.value]
        entry = entries[self.value.value] if self.value.value is not None else entries[0]
        try:
            fig = self.on_change(self.axis.value, entry["value"])
        except KeyError as exc:  # a setting not computed yet
            import matplotlib.pyplot as plt

            fig = plt.figure(figsize=(6, 1))
            plt.close(fig)
            fig.text(0.5, 0.5, str(exc).strip("'\""), ha="center", va="center", fontsize=9)
        self.output.value = figure_png(fig)
        self.last_figure = fig
        self.seconds = time.perf_counter() - start

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.box)


def make_widgets(grid: AblationGrid | str | os.PathLike, *, axis: str | None = None) -> AblationWidgets:
    """ipywidgets to browse a grid: pick an axis, then a value; the figure of that setting appears at once.

    Display the returned object (or its ``box``) in a notebook. Everything is read from the grid;
    nothing is computed. Without ipywidgets an ImportError says how to install it.
    """
    if not isinstance(grid, AblationGrid):
        grid = load_grid(grid)
    widgets = _import_ipywidgets()
    names = list(grid.axes)
    if not names:
        raise ValueError("the grid has no axes")
    first = axis if axis is not None else names[0]
    if first not in grid.axes:
        raise KeyError(f"axis {first!r} is not in this grid; axes: {names}")

    def options(name: str) -> list[tuple[str, int]]:
        return [(e["label"] + (" *" if e["default"] else ""), i) for i, e in enumerate(grid.axes[name])]

    def default_index(name: str) -> int:
        return next((i for i, e in enumerate(grid.axes[name]) if e["default"]), 0)

    axis_w = widgets.Dropdown(options=names, value=first, description="axis")
    value_w = widgets.ToggleButtons(options=options(first), value=default_index(first), description="value",
                                    style={"button_width": "auto"})
    out = widgets.Image(format="png")
    box = widgets.VBox([axis_w, value_w, out])
    ui = AblationWidgets(grid=grid, axis=axis_w, value=value_w, output=out, box=box)
    state = {"switching": False}

    def on_axis(change: dict[str, Any]) -> None:
        state["switching"] = True
        try:
            value_w.options = options(change["new"])
            value_w.value = default_index(change["new"])
        finally:
            state["switching"] = False
        ui.update()

    def on_value(change: dict[str, Any]) -> None:
        if not state["switching"]:
            ui.update()

    axis_w.observe(on_axis, names="value")
    value_w.observe(on_value, names="value")
    ui.update()
    return ui
