"""Ablations: change one setting of the DIP registration at a time and keep every number and a thumbnail.

Book: chapter "Ablations" (``book/10_ablations.ipynb``). :func:`run_grid` computes the grid once (slow: one
registration per setting and pair, through :mod:`dipreg.methods`) into a compressed ``.npz``; everything
else reads that file (:func:`load_grid`, :func:`lookup`, :func:`axis_table`), so the chapter's widgets
(:mod:`dipreg.teaching.ablation_view`) answer instantly and the static HTML shows the same results as
figures and tables.

Axes (:data:`ABLATION_AXES`), each varied alone around the base configuration (one at a time, not
a factorial design; the base value is added to an axis that lacks it):

``method``      ``"dip"`` vs direct optimisation of the field (:func:`dipreg.methods.classical.register_classical`)
                with weight 0 (``"classical-w0"``, no prior at all) and with its default weight (``"classical"``)
``depth``       number of generator scales (channels of the base config, truncated or the last one repeated)
``width``       channel multiplier of every scale
``skip``        skip-branch channels per scale (0 = no skip connections)
``init_std``    SD of the initial conv weights (``None``: PyTorch's default initialisation)
``noise_std``   SD of the input noise z (0.316 = the "variance 0.1" reading of N(0, 0.1))
``noise``       a fresh z every iteration (the paper) or one fixed z (DIP denoising)
``loss``        ``"mae"`` (the paper), ``"mse"``, ``"lncc"``
``lr``          Adam learning rate
``iterations``  number of steps
``prealign``    ``"none"`` (the paper) or ``"affine"``: the global affine stage before the network's field
``smooth``      SD in image pixels of the Gaussian readout of the generator's output (0 = none, the paper)
``intensity_match``  ``"none"`` (min-max per image, as the paper), ``"linear"``, ``"histogram"``
``integrate``   scaling-and-squaring steps (0 = the output is the displacement, the paper)
``fold_penalty``  weight of the fold barrier (0 = none, the paper)
``volume_penalty``  weight of the variance of log det J, an explicit regulariser (0 = none, the paper)
``detail_steps``  steps of the detail stage after the network's fit, a smoothed free velocity on a finer grid
                (0 = none, the paper)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dipreg import methods
from dipreg.data.pair import as_pairs
from dipreg.experiments.files import atomic_write
from dipreg.experiments.provenance import machine_info, now
from dipreg.jsonutil import finite, jsonable
from dipreg.methods.dip import RegistrationError, check_seed, resolve_config, resolve_device

if TYPE_CHECKING:
    from dipreg.config import RegistrationConfig

ABLATION_AXES: dict[str, list[Any]] = {
    "method": ["dip", "classical-w0", "classical"],
    "depth": [1, 2, 3, 4, 5],
    "width": [0.25, 0.5, 1.0, 2.0],
    "skip": [0, 4, 16],
    "init_std": [0.001, 0.01, 0.1, None],
    "noise_std": [0.01, 0.1, 0.316, 1.0],
    "noise": ["fresh", "fixed"],
    "loss": ["mae", "mse", "lncc"],
    "lr": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
    "iterations": [50, 100, 200, 300, 500],
    "prealign": ["none", "affine"],
    "smooth": [0.0, 3.0, 6.0, 10.0],
    "intensity_match": ["none", "linear", "histogram"],
    "integrate": [0, 7],
    "fold_penalty": [0.0, 10.0, 100.0],
    "volume_penalty": [0.0, 0.1, 1.0],
    "detail_steps": [0, 60],
}
"""Axis name -> values tried, one axis at a time around the base configuration."""
_CONFIG_AXES = ("skip", "init_std", "noise_std", "noise", "loss", "lr", "prealign", "smooth", "intensity_match",
                "integrate", "fold_penalty", "volume_penalty", "detail_steps")
"""Axes whose value is a :class:`RegistrationConfig` field of the same name."""

METHODS = ("dip", "classical-w0", "classical")
METRIC_KEYS = ("ssim_before", "ssim_after", "mae_after", "jac_mean", "jac_std", "jac_min", "folded_fraction",
               "std_log_jac")
THUMB = 64
HISTORY_POINTS = 100
FORMAT = "dipreg-ablation-1"


# ---------------------------------------------------------------------------------------------------------------
# Settings


def axis_default(base: RegistrationConfig, axis: str) -> Any:
    """The value of ``axis`` in the base configuration ``base`` (a :class:`RegistrationConfig`)."""
    if axis == "method":
        return "dip"
    if axis == "depth":
        return len(base.down)
    if axis == "width":
        return 1.0
    if axis in _CONFIG_AXES or axis == "iterations":
        return getattr(base, axis)
    raise ValueError(f"axis: unknown ablation axis {axis!r}; known: {list(ABLATION_AXES)}")


def value_label(axis: str, value: Any) -> str:
    """How a value is shown in widgets, tables and figures."""
    if value is None:
        return "torch default" if axis == "init_std" else "none"
    if axis == "width":
        return f"x{value:g}"
    if axis == "skip":
        return "off" if value == 0 else f"{value} ch"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _scaled(channels: Sequence[int], factor: float) -> tuple[int, ...]:
    return tuple(max(1, int(round(c * factor))) for c in channels)


def _depth(channels: Sequence[int], d: int) -> tuple[int, ...]:
    ch = tuple(channels)
    return ch[:d] if d <= len(ch) else ch + (ch[-1],) * (d - len(ch))


def setting_for(base: RegistrationConfig, axis: str, value: Any, *, iterations: int | None = None,
                base_iterations: int | None = None) -> tuple[str, dict[str, Any]]:
    """``(method, settings)`` of one point of the grid: a DIP config dict or the classical keyword arguments.

    ``base`` is the configuration varied; ``value`` the axis's value (in that axis's units, see
    :data:`ABLATION_AXES`). ``iterations`` (when given) is the iteration count of the run; the ``iterations``
    axis is then scaled by ``iterations / base_iterations``.
    """
    if axis == "method":
        if value not in METHODS:
            raise ValueError(f"method: expected one of {list(METHODS)}, got {value!r}")
        if value != "dip":
            settings = methods.settings("classical")
            if value == "classical-w0":
                settings = settings.replace(weight=0.0)
            if iterations is not None:
                settings = settings.replace(iterations=int(iterations))
            return "classical", settings.to_dict()
        return "dip", base.to_dict()
    if axis == "depth":
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"depth: expected an int >= 1, got {value!r}")
        cfg = base.replace(down=_depth(base.down, int(value)), up=_depth(base.up, int(value)))
    elif axis == "width":
        if not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"width: expected a positive multiplier, got {value!r}")
        cfg = base.replace(down=_scaled(base.down, value), up=_scaled(base.up, value))
    elif axis == "iterations":
        its = int(value)
        if iterations is not None and base_iterations:
            its = max(1, int(round(value * iterations / base_iterations)))
        cfg = base.replace(iterations=its)
    elif axis in _CONFIG_AXES:
        cfg = base.replace(**{axis: value})
    else:
        raise ValueError(f"axis: unknown ablation axis {axis!r}; known: {list(ABLATION_AXES)}")
    return "dip", cfg.to_dict()


def _key(method: str, settings: dict[str, Any]) -> str:
    blob = json.dumps({"method": method, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------------
# The grid file


@dataclass
class AblationGrid:
    """A loaded grid: ``meta`` (base config, pairs, seed, ...), ``axes`` (axis -> list of entries with
    ``value``, ``label``, ``key``, ``default``), ``records`` (key -> numbers of one setting) and the
    thumbnails (``warped``, ``detj``: (n, 64, 64) float16, row ``record["thumb"]``; ``moving``, ``fixed``)."""

    meta: dict[str, Any]
    axes: dict[str, list[dict[str, Any]]]
    records: dict[str, dict[str, Any]]
    warped: np.ndarray
    detj: np.ndarray
    moving: np.ndarray
    fixed: np.ndarray
    path: Path | None = None
    _lookup: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._lookup = {}
        for axis, entries in self.axes.items():
            for e in entries:
                self._lookup[(axis, _vkey(e["value"]))] = e
                self._lookup.setdefault((axis, "label:" + e["label"]), e)

    def __repr__(self) -> str:
        return (f"AblationGrid({len(self.records)} settings, axes={list(self.axes)}, "
                f"pairs={self.meta.get('pairs')}, path={str(self.path) if self.path else None!r})")


def _vkey(value: Any) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return repr(float(value))
    return json.dumps(value, sort_keys=True, default=str)


def _empty_thumbs() -> np.ndarray:
    return np.zeros((0, THUMB, THUMB), np.float16)


def _save(path: Path, grid: AblationGrid) -> None:
    index = {"format": FORMAT, "meta": grid.meta, "axes": grid.axes, "records": grid.records}
    blob = json.dumps(finite(index), default=jsonable)
    with atomic_write(path, "wb") as fh:
        np.savez_compressed(fh, index=np.array(blob), warped=grid.warped.astype(np.float16),
                            detj=grid.detj.astype(np.float16), moving=grid.moving.astype(np.float16),
                            fixed=grid.fixed.astype(np.float16))


def load_grid(path: str | os.PathLike) -> AblationGrid:
    """Read a grid written by :func:`run_grid`.

    Raises:
        FileNotFoundError: no such file. ValueError: not a dipreg ablation grid or a damaged one.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"no ablation grid at {p}")
    try:
        with np.load(p, allow_pickle=False) as z:
            index = json.loads(str(z["index"]))
            arrays = {k: np.asarray(z[k]) for k in ("warped", "detj", "moving", "fixed")}
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise ValueError(f"{p} is not a readable dipreg ablation grid ({type(exc).__name__}: {exc}); move it away "
                         "or pass another path to start a new grid") from exc
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        found = index.get("format") if isinstance(index, dict) else None
        raise ValueError(f"{p} is not a dipreg ablation grid (format {found!r}, expected {FORMAT!r}); move it away "
                         "or pass another path")
    records = index["records"]
    for rec in records.values():  # JSON null -> NaN for numbers
        for k in (*METRIC_KEYS, "seconds"):
            if rec.get(k) is None:
                rec[k] = math.nan
    return AblationGrid(meta=index["meta"], axes=index["axes"], records=records, path=p, **arrays)


def lookup(grid: AblationGrid, axis: str, value: Any) -> dict[str, Any]:
    """The record of ``axis = value`` (a value of the axis or its label): metrics, history and thumbnails.

    Returns a new dict with the record's fields (``ssim_after``, ``jac_mean``, ``jac_std``, ``folded_fraction``,
    ``std_log_jac``, ``seconds``, ``history``, ``history_steps``, ``settings``, ``error``, ...) plus ``axis``,
    ``value``, ``label``, ``default`` and the thumbnails ``warped`` and ``detj`` ((64, 64) float16).

    Raises:
        KeyError: the axis is not in the grid, the value not on the axis, or its run has not finished yet.
    """
    if axis not in grid.axes:
        raise KeyError(f"axis {axis!r} is not in this grid; axes: {list(grid.axes)}")
    entry = grid._lookup.get((axis, _vkey(value)))
    if entry is None and isinstance(value, str):
        entry = grid._lookup.get((axis, "label:" + value))
    if entry is None:
        labels = [e["label"] for e in grid.axes[axis]]
        raise KeyError(f"value {value!r} is not on axis {axis!r}; values: {labels}")
    rec = grid.records.get(entry["key"])
    if rec is None:
        raise KeyError(f"{axis} = {entry['label']} has not been computed yet; run run_grid again to finish the grid")
    out = dict(rec)
    out.update(axis=axis, value=entry["value"], label=entry["label"], default=entry["default"])
    t = rec.get("thumb")
    has = t is not None and 0 <= t < len(grid.warped)
    out["warped"] = grid.warped[t] if has else None
    out["detj"] = grid.detj[t] if has else None
    return out


# ---------------------------------------------------------------------------------------------------------------
# Computing the grid


def _digest(pairs: list[Any]) -> str:
    h = hashlib.sha1()
    for p in pairs:
        for a in (p.moving, p.fixed):
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def _thumb(image: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    from skimage.transform import resize

    a = np.asarray(image, dtype=np.float64)
    if lo is not None or hi is not None:
        a = np.clip(a, lo, hi)
    if a.shape != (THUMB, THUMB):
        a = resize(a, (THUMB, THUMB), order=1, mode="edge", anti_aliasing=True, preserve_range=True)
    return a.astype(np.float16)


def _downsample_history(history: Sequence[float]) -> tuple[list[int], list[float]]:
    n = len(history)
    if n == 0:
        return [], []
    steps = np.unique(np.round(np.linspace(0, n - 1, min(n, HISTORY_POINTS))).astype(int))
    return [int(s) for s in steps], [float(history[s]) for s in steps]


def _run_setting(method: str, settings: dict[str, Any], pairs: list[Any], *, seed: int, device: Any) -> dict[str, Any]:
    run = methods.plan(method, seed=seed, device=device)
    run = replace(run, settings=run.method.from_dict(settings))
    per_pair, results = [], []
    errors: list[str] = []
    for pair in pairs:
        try:
            res = run.run(pair)
        except (RegistrationError, ValueError, RuntimeError) as exc:
            errors.append(f"{pair.id}: {type(exc).__name__}: {exc}".replace("\n", " "))
            continue
        m = res.metrics()
        per_pair.append({"pair": pair.id, **{k: float(m[k]) for k in METRIC_KEYS}, "seconds": float(res.seconds),
                         "iterations": int(res.info.get("iterations", len(res.history)))})
        results.append(res)
    rec: dict[str, Any] = {"method": method, "settings": settings, "per_pair": per_pair,
                           "error": "; ".join(errors) or None, "n_pairs": len(per_pair)}
    for k in (*METRIC_KEYS, "seconds"):
        vals = [p[k] for p in per_pair]
        rec[k] = float(np.mean(vals)) if vals else math.nan
    rec["iterations"] = int(np.mean([p["iterations"] for p in per_pair])) if per_pair else None
    if results:
        first = results[0]
        rec["history_steps"], rec["history"] = _downsample_history(first.history)
        rec["_warped"] = _thumb(first.warped)
        rec["_detj"] = _thumb(first.jacobian_determinant(), -5.0, 5.0)
        rec["device"] = str(first.device)
    else:
        rec["history_steps"], rec["history"] = [], []
    return rec


def run_grid(pair_or_pairs: Any, out_path: str | os.PathLike, *, base: RegistrationConfig | str | None = None,
             axes: Mapping[str, Sequence[Any]] = ABLATION_AXES, iterations: int | None = None, seed: int = 0,
             device: str | None = None, progress: bool = True) -> Path:
    """Run every setting of ``axes`` (one axis at a time around ``base``) and store the results in ``out_path``.

    Args:
        pair_or_pairs: a :class:`dipreg.data.Pair`, a list of Pairs (metrics are averaged over them;
            thumbnails and the loss history come from the first) or a ``(moving, fixed)`` tuple.
        out_path: the ``.npz`` file. If it exists, its finished settings are kept and skipped (resume);
            it must come from the same pairs, base configuration, seed and ``iterations``.
        base: a :class:`dipreg.RegistrationConfig`, a preset name, or ``None`` (the device's default).
        axes: axis name -> values (see :data:`ABLATION_AXES`); a subset or other values are fine.
        iterations: iterations of every run (``None``: the base config's); the ``iterations`` axis is
            scaled by the same factor (its entries hold and are labelled with the steps actually run) and
            the classical method runs this many steps per level.
        seed: seed of every run. device: ``"cpu"``, ``"cuda"`` or ``None``. progress: a progress bar.

    Each setting stores ``ssim_before``, ``ssim_after``, ``mae_after``, ``jac_mean``, ``jac_std``, ``jac_min``,
    ``folded_fraction``, ``std_log_jac``, ``seconds`` (per pair), ``iterations``, the loss history
    (at most 100 points), and 64 x 64 float16 thumbnails of the warped image and the det J map. The file
    is rewritten (atomically) after every setting, so an interrupted grid loses at most the running one.

    Returns:
        ``out_path`` as a Path.
    """
    from dipreg import __version__

    pairs = as_pairs(pair_or_pairs)
    dev = resolve_device(device)
    base_cfg = resolve_config(base, dev, {})
    base_iterations = base_cfg.iterations
    if iterations is not None:
        if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 1:
            raise ValueError(f"iterations: expected a positive int or None, got {iterations!r}")
        base_cfg = base_cfg.replace(iterations=int(iterations))
    if not isinstance(axes, Mapping) or not axes:
        raise ValueError("axes: expected a non-empty dict of axis name -> list of values")
    seed = check_seed(seed)

    # plan: axis entries and the unique settings
    plan: dict[str, tuple[str, dict[str, Any]]] = {}
    axis_entries: dict[str, list[dict[str, Any]]] = {}
    for axis, values in axes.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"axes[{axis!r}]: expected a non-empty list of values, got {values!r}")
        default = axis_default(base_cfg, axis)
        if axis == "iterations" and iterations is not None:
            default = base_iterations
        vals = list(values)
        if not any(_vkey(v) == _vkey(default) for v in vals):
            vals.append(default)
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
                vals.sort()
        entries = []
        for v in vals:
            method, settings = setting_for(base_cfg, axis, v, iterations=iterations, base_iterations=base_iterations)
            k = _key(method, settings)
            plan.setdefault(k, (method, settings))
            shown = settings["iterations"] if axis == "iterations" else v  # the steps run, after scaling
            entries.append({"value": shown, "label": value_label(axis, shown), "key": k,
                            "default": _vkey(v) == _vkey(default)})
        axis_entries[axis] = entries

    meta = {"base": base_cfg.to_dict(), "pairs": [p.id for p in pairs], "shape": list(pairs[0].shape),
            "digest": _digest(pairs), "seed": int(seed), "iterations": iterations, "dipreg_version": __version__,
            "device": str(dev), "thumb": THUMB}
    out = Path(out_path).expanduser()
    if out.exists():
        grid = load_grid(out)
        for k in ("base", "digest", "seed", "iterations"):
            if finite(grid.meta.get(k)) != finite(json.loads(json.dumps(meta[k], default=jsonable))):
                raise ValueError(f"{out} was computed with another {k} ({grid.meta.get(k)!r}, now {meta[k]!r}); "
                                 "run with the same pairs and settings to resume, or move it away / pass another "
                                 "out_path")
        grid.axes.update(axis_entries)
        grid.meta.setdefault("runs", []).append(_run_info(dev))
    else:
        if not out.parent.is_dir():
            raise FileNotFoundError(f"cannot write {out}: folder {out.parent} does not exist")
        first = pairs[0]
        meta["created"] = now()
        meta["runs"] = [_run_info(dev)]
        grid = AblationGrid(meta=meta, axes=axis_entries, records={}, warped=_empty_thumbs(), detj=_empty_thumbs(),
                            moving=_thumb(first.moving), fixed=_thumb(first.fixed), path=out)

    todo = [(k, m, s) for k, (m, s) in plan.items() if k not in grid.records]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plan), initial=len(plan) - len(todo), desc="ablation grid", unit="setting")
    warped, detj = list(grid.warped), list(grid.detj)
    if any(m == "dip" for _, m, _ in todo):  # one short untimed run, so the first setting's seconds hold no start-up
        try:
            methods.plan("dip", seed=seed, device=dev, preset=base_cfg).warm_up(pairs[0])
        except Exception:  # the real run reports any problem
            pass
    try:
        for k, method, settings in todo:
            if bar is not None:
                bar.set_postfix_str(_describe(axis_entries, k), refresh=True)
            start = time.perf_counter()
            rec = _run_setting(method, settings, pairs, seed=seed, device=dev)
            rec["wall_seconds"] = time.perf_counter() - start
            w, d = rec.pop("_warped", None), rec.pop("_detj", None)
            if w is not None:
                rec["thumb"] = len(warped)
                warped.append(w)
                detj.append(d)
            else:
                rec["thumb"] = None
            rec["key"] = k
            grid.records[k] = rec
            grid.warped = np.stack(warped) if warped else _empty_thumbs()
            grid.detj = np.stack(detj) if detj else _empty_thumbs()
            _save(out, grid)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if not todo:
        _save(out, grid)  # the axes may have changed
    return out


def _describe(axis_entries: dict[str, list[dict[str, Any]]], key: str) -> str:
    names = [f"{axis}={e['label']}" for axis, entries in axis_entries.items() for e in entries if e["key"] == key]
    return ", ".join(names[:2])


def _run_info(dev: Any) -> dict[str, Any]:
    return {"date": now(), "device": str(dev), "machine": machine_info()}
