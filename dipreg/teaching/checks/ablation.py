"""Checks for the exercises of the chapter "Ablations" (``book/10_ablations.ipynb``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from dipreg.experiments.ablation import AblationGrid
from dipreg.teaching.ablation_view import axis_table
from dipreg.teaching.checks import CheckFailed


def _rows(grid: AblationGrid) -> list[tuple[str, dict[str, Any]]]:
    return [(axis, r) for axis in grid.axes for r in axis_table(grid, axis) if math.isfinite(r["ssim_after"])]


def best_unfolded(grid: AblationGrid) -> tuple[str, str]:
    """``(axis, label)`` of the highest ``ssim_after`` among the settings with ``folded_fraction == 0``."""
    axis, row = max(((a, r) for a, r in _rows(grid) if r["folded_fraction"] == 0),
                    key=lambda ar: ar[1]["ssim_after"])
    return axis, row["label"]


def check_best_setting(fn: Callable[[AblationGrid], tuple[str, Any]], grid: AblationGrid) -> bool:
    """Check ``fn(grid) -> (axis, label)``: the setting with the best SSIM that folds no pixel.

    The label may also be given as the axis value (e.g. ``("lr", 0.001)``). Several axes share the
    default setting, so any axis naming the same run counts.
    """
    what = "best setting without folds"
    try:
        got = fn(grid)
    except NotImplementedError:
        print(f"{what}: not implemented yet - replace the `raise NotImplementedError` with your code.")
        return False
    except Exception as exc:
        raise CheckFailed(f"{what}: your function raised {type(exc).__name__}: {exc}") from exc
    if got is None:
        raise CheckFailed(f"{what}: your function returned None; did you forget `return`?")
    if not (isinstance(got, tuple) and len(got) == 2):
        raise CheckFailed(f"{what}: expected a tuple (axis, label) such as ('lr', '0.001'), got {got!r}")
    axis, label = got
    if axis not in grid.axes:
        raise CheckFailed(f"{what}: {axis!r} is not an axis of the grid; axes: {list(grid.axes)}")
    rows = axis_table(grid, axis)
    row = next((r for r in rows if r["label"] == label or r[axis] == label), None)
    if row is None:
        raise CheckFailed(f"{what}: {label!r} is not on axis {axis!r}; labels: {[r['label'] for r in rows]}")
    ref_axis, ref_label = best_unfolded(grid)
    best = next(r for r in axis_table(grid, ref_axis) if r["label"] == ref_label)["ssim_after"]
    if row["ssim_after"] == best and row["folded_fraction"] == 0:
        print(f"{what}: correct ({ref_axis} = {ref_label}, SSIM {best:.4f}, no folded pixel).")
        return True
    if row["folded_fraction"] > 0:
        raise CheckFailed(f"{what}: {axis} = {row['label']} folds {100 * row['folded_fraction']:.3g} % of the "
                          "pixels; keep only the settings with folded_fraction == 0 before taking the best SSIM")
    if row["ssim_after"] == min(r["ssim_after"] for _, r in _rows(grid) if r["folded_fraction"] == 0):
        raise CheckFailed(f"{what}: {axis} = {row['label']} has the lowest SSIM; take the maximum")
    raise CheckFailed(f"{what}: {axis} = {row['label']} reaches SSIM {row['ssim_after']:.4f}, but another "
                      f"setting without folds reaches {best:.4f}: compare across all axes, not within one")
