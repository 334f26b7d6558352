"""Ablations: change one setting of the DIP registration at a time and keep every number and a thumbnail.

Book: chapter "Ablations". :func:`run_grid` computes the grid once (slow: one registration per
setting and pair) into a compressed ``.npz``; everything else reads that file, so the chapter's
widgets answer instantly and the static HTML shows the same results as figures and tables.

Axes (:data:`ABLATION_AXES`), each varied alone around the base configuration (one at a time, not
a factorial design; the base value is added to an axis that lacks it):

``method``      ``"dip"`` vs direct optimisation of the field (:func:`dipreg.classical.register_classical`)
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
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dipreg._json import finite, jsonable

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from dipreg.config import RegistrationConfig

ABLATION_AXES: dict[str, list[Any]] = {
    "method": ["dip", "classical-w0", "classical"],
    "depth": [1, 2, 3, 4, 5],
    "width": [0.25, 0.5, 1.0, 2.0],
    "skip": [0, 4],
    "init_std": [0.001, 0.01, 0.1, None],
    "noise_std": [0.01, 0.1, 0.316, 1.0],
    "noise": ["fresh", "fixed"],
    "loss": ["mae", "mse", "lncc"],
    "lr": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
    "iterations": [50, 100, 200, 300, 500],
}
"""Axis name -> values tried, one axis at a time around the base configuration."""

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
    if axis in ("skip", "init_std", "noise_std", "noise", "loss", "lr", "iterations"):
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
    from dipreg.classical import DEFAULTS

    if axis == "method":
        if value not in METHODS:
            raise ValueError(f"method: expected one of {list(METHODS)}, got {value!r}")
        if value != "dip":
            settings = dict(DEFAULTS)
            if value == "classical-w0":
                settings["weight"] = 0.0
            if iterations is not None:
                settings["iterations"] = int(iterations)
            return "classical", settings
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
    elif axis in ("skip", "init_std", "noise_std", "noise", "loss", "lr"):
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
    tmp = path.with_name(path.name + ".tmp.npz")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, index=np.array(blob), warped=grid.warped.astype(np.float16),
                            detj=grid.detj.astype(np.float16), moving=grid.moving.astype(np.float16),
                            fixed=grid.fixed.astype(np.float16))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


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


def _as_pairs(pair_or_pairs: Any) -> list[Any]:
    from dipreg.data import Pair

    if isinstance(pair_or_pairs, Pair):
        return [pair_or_pairs]
    if isinstance(pair_or_pairs, tuple) and len(pair_or_pairs) == 2 and not isinstance(pair_or_pairs[0], Pair):
        return [Pair(moving=pair_or_pairs[0], fixed=pair_or_pairs[1])]
    if isinstance(pair_or_pairs, Sequence) and not isinstance(pair_or_pairs, (str, bytes)):
        pairs = list(pair_or_pairs)
        if pairs and all(isinstance(p, Pair) for p in pairs):
            return pairs
    raise TypeError("pair_or_pairs: expected a dipreg.data.Pair, a list of Pairs or a (moving, fixed) tuple, got "
                    f"{type(pair_or_pairs).__name__}")


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
    from dipreg.config import RegistrationConfig
    from dipreg.register import RegistrationError, register

    per_pair, results = [], []
    errors: list[str] = []
    for pair in pairs:
        try:
            if method == "dip":
                cfg = RegistrationConfig(**{**settings, "down": tuple(settings["down"]), "up": tuple(settings["up"])})
                res = register(pair.moving, pair.fixed, config=cfg, seed=seed, device=device, progress=False)
            else:
                from dipreg.classical import register_classical

                res = register_classical(pair.moving, pair.fixed, seed=seed, device=device, progress=False, **settings)
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
    from dipreg.register import resolve_config, resolve_device

    pairs = _as_pairs(pair_or_pairs)
    dev = resolve_device(device)
    base_cfg = resolve_config(base, dev, {})
    base_iterations = base_cfg.iterations
    if iterations is not None:
        if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 1:
            raise ValueError(f"iterations: expected a positive int or None, got {iterations!r}")
        base_cfg = base_cfg.replace(iterations=int(iterations))
    if not isinstance(axes, Mapping) or not axes:
        raise ValueError("axes: expected a non-empty dict of axis name -> list of values")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")

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
        meta["created"] = _now()
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
        from dipreg.register import register

        try:
            register(pairs[0].moving, pairs[0].fixed, config=base_cfg.replace(iterations=1, readout_draws=1),
                     seed=int(seed), device=dev, progress=False)
        except Exception:  # the real run reports any problem
            pass
    try:
        for k, method, settings in todo:
            if bar is not None:
                bar.set_postfix_str(_describe(axis_entries, k), refresh=True)
            start = time.perf_counter()
            rec = _run_setting(method, settings, pairs, seed=int(seed), device=dev)
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
    from dipreg.reproduce import machine_info

    return {"date": _now(), "device": str(dev), "machine": machine_info()}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


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
