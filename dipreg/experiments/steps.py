"""From the paper's method to the default, one change at a time: a cumulative ladder of configurations.

Book: chapter "Ablations" (``book/10_ablations.ipynb``), section "From the paper's method, one step at a time".

Where :mod:`dipreg.experiments.ablation` removes one step from the default at a time ("what does the default
lose without it?"), this module starts at the ``paper`` preset and adds the default's departures in a fixed
order, each rung keeping every change before it ("what does each step add to what came before?"). The values
come from the target preset itself, so the last rung *is* that preset; a departure that no rung names raises.

:func:`run_steps` runs every rung on every pair (resumable, one JSON line per rung and pair in
``steps.jsonl`` beside a ``provenance.json``, and the warped image and det J of the first pair per rung in
``figure.npz``); :func:`summarize_steps` pools the lines per rung, :func:`load_figure` reads the pictures.
Beside the ladder it runs :data:`CONTROLS`, the target with a part taken away (the network), which the ladder
cannot show because each rung keeps everything before it.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dipreg.config import RegistrationConfig
from dipreg.experiments.files import atomic_write, run_lock, say, write_json
from dipreg.experiments.provenance import PROVENANCE_FILE, git_commit, machine_info, now, read_provenance, versions
from dipreg.jsonutil import changed_settings

STEPS_FILE = "steps.jsonl"
FIGURE_FILE = "figure.npz"
FIGURE_SIZE = 128
"""Pixels a side of the pictures kept for the figure pair (block averages of the 256 px images)."""

STEPS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("paper", (), "the `paper` preset: eq. 2 with the choices the paper leaves open filled in"),
    ("control grid", ("down", "up", "grid_scale", "output_scale"),
     "a smaller network (fewer scales, narrower) on a grid coarser than the image, its output scaled to pixels, "
     "upsampled to a field"),
    ("fixed input", ("noise", "readout"), "one noise draw kept as the input of every step (Ulyanov et al.'s DIP) "
     "instead of a fresh draw each step, and the field of the step with the lowest loss read out"),
    ("velocity", ("integrate", "integrate_refine"), "the output is a stationary velocity, integrated by scaling and "
     "squaring, the last squarings on a grid twice as fine"),
    ("fixed border", ("boundary",), "the network's field held at zero on the image border"),
    ("fold barrier", ("fold_penalty",), "a penalty that acts only where det J falls below 0.1"),
    ("robust intensities", ("intensity_clip", "intensity_match"),
     "winsorised intensities, the moving image brought to the fixed image's scale"),
    ("early stopping", ("lr", "iterations", "patience", "min_delta"),
     "a larger learning rate, the preset's budget of steps, and a stop when the loss no longer falls"),
    ("affine pre-alignment", ("prealign", "prealign_finest"), "a global affine map fitted first, coarse to fine down "
     "to half the image's resolution"),
    ("volume regulariser", ("volume_penalty",), "an explicit penalty on the variance of log det J"),
    ("network detail", ("skip", "upsample"), "wider skip branches and nearest-neighbour upsampling inside the "
     "generator: finer detail in the field for a few per cent more time"),
    ("detail stage", ("detail_steps", "detail_lr", "detail_sigma"), "after the network's fit, a short stage that fits "
     "a Gaussian-smoothed free velocity on a grid twice as fine, composed before the network's field: a classical "
     "prior for the detail the network's coarse grid cannot hold"),
)
"""The rungs, in order: (name, config fields set to the target preset's values, what the step is)."""

CONTROLS: tuple[tuple[str, dict[str, Any], str], ...] = (
    ("affine map alone", {"iterations": 1, "detail_steps": 0},
     "control, not a rung: the target with the network's steps cut to one and no detail stage, so what is left "
     "is the affine pre-alignment and the untrained network's field, close to zero"),
    ("stage without the network", {"iterations": 1},
     "control, not a rung: the target with the network's steps cut to one, so its field is the untrained "
     "network's, close to zero, then the detail stage: the affine map and a smoothed velocity, a classical "
     "registration"),
    ("longer stage without the network", {"iterations": 1, "detail_steps": 200},
     "control, not a rung: the same with 200 steps of the stage instead of the target's 60, for about the "
     "target's time"),
)
"""Controls run beside the ladder: (name, config fields changed from the target, what it is). Each is the target
preset with those fields changed (not cumulative): where the affine map alone gets, and how much of the target's
accuracy its detail stage reaches without the network."""

_METRIC_KEYS = ("label_dice_before", "label_dice_after", "ssim_before", "ssim_after", "std_log_jac",
                "folded_fraction", "jac_mean", "jac_min")


def step_configs(target: str = "cpu") -> list[tuple[str, RegistrationConfig]]:
    """The ladder from ``paper`` to preset ``target``: ``[(rung name, config)]``, each config keeping every change of
    the rungs before it; the last equals ``target`` in every field. Raises a ValueError naming a field in which
    ``target`` departs from ``paper`` that no rung of :data:`STEPS` sets."""
    from dipreg.presets import differences, get_preset

    goal = get_preset(target)
    named = {f for _, fields, _ in STEPS for f in fields}
    missing = sorted(set(differences(target)) - named)
    if missing:
        raise ValueError(f"target {target!r} departs from 'paper' in {missing}, which no rung of "
                         f"dipreg.experiments.steps.STEPS sets; add a rung for it")
    cfg = get_preset("paper")
    ladder = []
    for name, fields, _ in STEPS:
        cfg = cfg.replace(**{f: getattr(goal, f) for f in fields})
        ladder.append((name, cfg))
    return ladder


def rung_configs(target: str = "cpu") -> dict[str, RegistrationConfig]:
    """Every configuration :func:`run_steps` runs, by name: the ladder of :func:`step_configs`, then the
    :data:`CONTROLS`, each the ladder's last configuration with its fields changed."""
    ladder = step_configs(target)
    top = ladder[-1][1]
    return {**dict(ladder), **{name: top.replace(**fields) for name, fields, _ in CONTROLS}}


def _described() -> list[tuple[str, list[str], str]]:
    """(name, fields, what) of every rung and control, in order."""
    return [(n, list(f), w) for n, f, w in STEPS] + [(n, sorted(f), w) for n, f, w in CONTROLS]


def _key(step: str, pair_id: str) -> str:
    return f"{step}\t{pair_id}"


def load_steps(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a ``steps.jsonl`` (a file or the folder holding it). A last line cut short by a killed run is
    skipped; a damaged line elsewhere raises a ValueError naming the file and the line."""
    p = Path(path)
    if p.is_dir():
        p = p / STEPS_FILE
    if not p.exists():
        return []
    lines = p.read_text(encoding="utf-8").splitlines()
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            if i == len(lines):  # cut short by a kill: that row runs again
                continue
            raise ValueError(f"{p}: line {i} is not JSON; repair or delete that line (its rung and pair then run "
                             f"again)") from None
    return rows


def load_figure(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The pictures of the figure pair in ``figure.npz`` (a file or the folder holding it): ``"moving"``,
    ``"fixed"``, and per rung ``"<rung>/warped"`` and ``"<rung>/detj"`` (float32, :data:`FIGURE_SIZE` a side);
    ``{}`` when there is no file."""
    p = Path(path)
    if p.is_dir():
        p = p / FIGURE_FILE
    if not p.exists():
        return {}
    with np.load(p, allow_pickle=False) as npz:
        return {k: npz[k].astype(np.float32) for k in npz.files}


def _small(image: np.ndarray) -> np.ndarray:
    """Block average down to at most :data:`FIGURE_SIZE` pixels a side (a whole factor), as float16."""
    f = max(1, max(image.shape) // FIGURE_SIZE)
    h, w = (image.shape[0] // f) * f, (image.shape[1] // f) * f
    return image[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3)).astype(np.float16)


def run_steps(pairs: Sequence[Any], out_dir: str | os.PathLike, *, target: str = "cpu",
              steps: Iterable[str] | None = None, seed: int = 0, device: Any = "cpu",
              rerun_changed: bool = False) -> Path:
    """Register every pair with every configuration of :func:`rung_configs` (the ladder's rungs and the controls;
    or only those named in ``steps``, in that order), one JSON line per (rung, pair) appended to
    ``out_dir/steps.jsonl``; rows already there are kept and not run again. For the first pair, each rung's
    warped image and det J also go to ``out_dir/figure.npz``.
    ``pairs``: :class:`dipreg.data.Pair` objects with ``moving_labels``/``fixed_labels`` (label Dice) or without.
    Rows of a :func:`stale_rungs` rung (no longer on the ladder, or run with another configuration than it has
    now, as after a change of a preset) are refused (ValueError), or with ``rerun_changed`` removed; the rungs
    of this run among them then run again.
    Returns the path of ``steps.jsonl``."""
    import dipreg

    ladder = rung_configs(target)
    order = list(ladder) if steps is None else list(steps)
    unknown = [s for s in order if s not in ladder]
    if unknown:
        raise ValueError(f"steps: unknown rung(s) {unknown}; the rungs are {list(ladder)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / STEPS_FILE
    with run_lock(out):
        prov_path = out / PROVENANCE_FILE
        prov = read_provenance(prov_path)
        existing = load_steps(path)
        stale = stale_rungs(existing, prov.get("rungs", {}), ladder)
        if stale and rerun_changed:  # the figure first: its pictures of a stale rung must not outlive the rows
            figure = {k: v for k, v in load_figure(out).items() if k.split("/")[0] not in stale}
            if figure:
                with atomic_write(out / FIGURE_FILE, "wb") as fh:
                    np.savez_compressed(fh, **{k: _small(v) for k, v in figure.items()})
            existing = [r for r in existing if r["step"] not in stale]
            with atomic_write(path, encoding="utf-8") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in existing)
            later = [s for s in ladder if s in stale and s not in order]
            say(f"rows of {sorted(stale)} removed from {path} ("
                + "; ".join(f"{name}: {why}" for name, why in sorted(stale.items())) + ")"
                + (f"; run {later} too, they are not among the rungs of this run" if later else ""),
                program="paper_to_ours")
        elif stale:
            name, why = next(iter(stale.items()))
            raise ValueError(f"{path} holds rows of rung {name!r}, {why}; delete those lines (they run again with "
                             f"the current configuration), pass rerun_changed=True (--rerun-changed) or pass "
                             f"another output folder")
        runs = prov.get("runs", [])
        runs.append({"started": now(), "commit": git_commit(), "machine": machine_info(), "versions": versions(),
                     "steps": order})
        prov = {"target": target, "seed": seed, "pairs": [p.id for p in pairs],
                "rungs": {name: {"fields": fields, "what": what, "config": ladder[name].to_dict()}
                          for name, fields, what in _described()},
                "runs": runs}
        write_json(prov_path, prov)
        done = {_key(r["step"], r["pair"]) for r in existing}
        rungs = {name for name, _, _ in STEPS}
        figure = load_figure(out)
        if pairs and not figure:
            figure = {"moving": pairs[0].moving, "fixed": pairs[0].fixed}
        for step in order:
            for pair in pairs:
                if _key(step, pair.id) in done:
                    continue
                say(f"{step}: {pair.id}", program="paper_to_ours")
                t0 = time.perf_counter()
                res = dipreg.register(pair.moving, pair.fixed, config=ladder[step], seed=seed, device=device,
                                      progress=False)
                seconds = time.perf_counter() - t0
                m = res.metrics(moving_labels=pair.moving_labels, fixed_labels=pair.fixed_labels) \
                    if pair.moving_labels is not None else res.metrics()
                row = {"step": step, "pair": pair.id, **{k: float(m[k]) for k in _METRIC_KEYS if k in m},
                       "iterations": int(res.info.get("iterations", len(res.history))), "seconds": seconds,
                       "commit": runs[-1]["commit"]}
                with path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                if pair is pairs[0] and step in rungs:  # the figure shows the ladder, not the controls
                    from dipreg.metrics import jacobian_determinant

                    figure[f"{step}/warped"] = res.warped
                    figure[f"{step}/detj"] = jacobian_determinant(res.displacement)
                    with atomic_write(out / FIGURE_FILE, "wb") as fh:
                        np.savez_compressed(fh, **{k: _small(np.asarray(v)) for k, v in figure.items()})
        runs[-1]["finished"] = now()
        write_json(prov_path, prov)
    return path


def stale_rungs(rows: Iterable[dict[str, Any]], recorded: dict[str, Any],
                ladder: dict[str, RegistrationConfig]) -> dict[str, str]:
    """The rungs among ``rows`` that may not be extended or shown under their name, each with the reason: no longer
    a rung of ``ladder``, or run (``recorded``: provenance ``"rungs"``) with another configuration than the ladder
    gives it now (a preset changed), so a table would mix two methods under one name. A field added to the
    configuration after a row ran counts with its default value, which reproduces the behaviour from before it
    existed."""
    defaults = RegistrationConfig().to_dict()
    stale = {}
    for name in sorted({r["step"] for r in rows}):
        config = recorded.get(name, {}).get("config")
        if name not in ladder:
            stale[name] = "that is no longer a rung of the ladder"
        elif config is None or changed_settings(config, ladder[name].to_dict(), defaults):
            stale[name] = "whose configuration has changed since they ran"
    return stale


def summarize_steps(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per rung of :data:`STEPS` and control of :data:`CONTROLS` that has rows, in that order: ``n`` pairs and the
    mean of each metric (``<metric>`` keys, NaN when no row has it), ``seconds`` the mean wall time per pair."""
    by_step: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_step.setdefault(r["step"], []).append(r)
    out = []
    for name, _, _ in _described():
        group = by_step.get(name)
        if not group:
            continue
        entry: dict[str, Any] = {"step": name, "n": len(group)}
        for k in (*_METRIC_KEYS, "iterations", "seconds"):
            v = [float(r[k]) for r in group if k in r and math.isfinite(float(r[k]))]
            entry[k] = float(np.mean(v)) if v else math.nan
        out.append(entry)
    return out


def format_steps(summary: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of :func:`summarize_steps`: one line per rung with what it adds, the pairs it ran on, label
    Dice, SD of log det J, % folded pixels, mean det J (the paper's column), SSIM, steps and seconds per pair."""
    what = {name: text for name, _, text in _described()}

    def f(v: float, fmt: str) -> str:
        return format(v, fmt) if math.isfinite(v) else "-"

    lines = ["| rung | adds | pairs | label Dice | SD log det J | % folded | mean det J | SSIM | steps | s / pair |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['step']} | {what.get(s['step'], '')} | {s['n']} | {f(s['label_dice_after'], '.3f')} | "
                     f"{f(s['std_log_jac'], '.2f')} | {f(100 * s['folded_fraction'], '.2f')} | "
                     f"{f(s['jac_mean'], '.3f')} | {f(s['ssim_after'], '.3f')} | {f(s['iterations'], '.0f')} | "
                     f"{f(s['seconds'], '.0f')} |")
    return "\n".join(lines)
