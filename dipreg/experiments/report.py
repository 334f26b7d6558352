"""Reports of a results file: mean +- SD per method, the paper's Table 1 beside it, and the provenance in words.

Book: chapter "Reproducing the brain MRI results" prints these tables from the stored runs.

:func:`summarize_results` gives mean +- SD over pairs per method (and the pooled per-pixel SD of det J),
:func:`format_summary` a Markdown table of it, :func:`paper_table` the paper's Table 1 and
:func:`provenance_lines` a readable account of a ``provenance.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from dipreg.experiments.results import METRICS

_PAPER = {
    "ITK": {"ssim": (0.827, 0.096), "jac": (1.036, 0.254)},
    "ours": {"ssim": (0.913, 0.051), "jac": (1.007, 0.045)},
}


def paper_table() -> dict[str, dict[str, tuple[float, float]]]:
    """Table 1 of Laves et al. (2019): ``{"ITK": {"ssim": (mean, sd), "jac": (mean, sd)}, "ours": {...}}``.

    ``"ssim"`` is SSIM between the fixed and the warped image, ``"jac"`` det J of the deformation, each
    "mean +- SD" over 109 LGG pairs (whether the SD is over pairs or over pixels is not stated).
    """
    return {k: dict(v) for k, v in _PAPER.items()}


def _last_per_key(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        key = (r["pair"], r["method"])
        if key in latest and r.get("error") and not latest[key].get("error"):
            continue  # keep a success over a later failure
        latest[key] = r
    return list(latest.values())


def summarize_results(rows: Iterable[dict[str, Any]], metrics: Sequence[str] = (*METRICS, "seconds")
                      ) -> list[dict[str, Any]]:
    """Per method: mean and SD over pairs of every metric, and the pooled per-pixel SD of det J.

    Returns one dict per method (in order of first appearance) with ``method``, ``n`` (pairs that ran),
    ``n_failed``, and for every metric ``<metric>_mean``, ``<metric>_sd`` (sample SD over the pairs, NaN
    values ignored, ``<metric>_n`` the pairs that count). ``jac_pooled_sd`` is the SD of det J over all
    pixels of all pairs, from the per-pair mean and SD (every pair has the same number of pixels):
    ``sqrt(mean(jac_std**2 + (jac_mean - overall_mean)**2))``. The paper's "±" may be either one.
    """
    rows = _last_per_key(rows)
    methods: list[str] = []
    for r in rows:
        if r["method"] not in methods:
            methods.append(r["method"])
    table = []
    for name in methods:
        mine = [r for r in rows if r["method"] == name]
        ok = [r for r in mine if not r.get("error")]
        entry: dict[str, Any] = {"method": name, "n": len(ok), "n_failed": len(mine) - len(ok)}
        for col in metrics:
            vals = np.array([float(r[col]) for r in ok], dtype=float)
            vals = vals[np.isfinite(vals)]
            entry[f"{col}_mean"] = float(vals.mean()) if vals.size else math.nan
            entry[f"{col}_sd"] = float(vals.std(ddof=1)) if vals.size > 1 else math.nan
            entry[f"{col}_n"] = int(vals.size)
        jm = np.array([float(r["jac_mean"]) for r in ok], dtype=float)
        js = np.array([float(r["jac_std"]) for r in ok], dtype=float)
        keep = np.isfinite(jm) & np.isfinite(js)
        if keep.any():
            overall = jm[keep].mean()
            entry["jac_pooled_sd"] = float(np.sqrt(np.mean(js[keep] ** 2 + (jm[keep] - overall) ** 2)))
        else:
            entry["jac_pooled_sd"] = math.nan
        table.append(entry)
    return table


def format_summary(summary: Sequence[dict[str, Any]], *, paper: bool = True) -> str:
    """A Markdown table of :func:`summarize_results`: SSIM after, det J (± SD over pairs, and pooled per pixel),
    folding, SD log det J, Dice, seconds; with ``paper`` the paper's Table 1 rows below, their "±" as printed
    in the paper (which does not say whether it is over pairs or over pixels), and a note saying so."""

    def pm(entry: dict[str, Any], col: str, digits: int = 3) -> str:
        m, s = entry.get(f"{col}_mean", math.nan), entry.get(f"{col}_sd", math.nan)
        if not math.isfinite(m):
            return "-"
        return f"{m:.{digits}f} ± {s:.{digits}f}" if math.isfinite(s) else f"{m:.{digits}f}"

    head = ("| method | n | SSIM before | SSIM after | mean det J ± SD | det J SD per pixel | % folded | "
            "SD log det J | Dice after | seconds |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for e in summary:
        fold = e.get("folded_fraction_mean", math.nan)
        pooled = e.get("jac_pooled_sd", math.nan)
        failed = f" ({e['n_failed']} failed)" if e.get("n_failed") else ""
        lines.append(f"| {e['method']} | {e['n']}{failed} | {pm(e, 'ssim_before')} | {pm(e, 'ssim_after')} | "
                     f"{pm(e, 'jac_mean')} | {pooled:.3f} | {100 * fold:.2f} | {pm(e, 'std_log_jac')} | "
                     f"{pm(e, 'dice_after')} | {pm(e, 'seconds', 1)} |")
    if paper:
        labels = {"ours": "DIP (Laves et al.)"}
        for name, vals in paper_table().items():
            (sm, ss), (jm, js) = vals["ssim"], vals["jac"]
            lines.append(f"| paper: {labels.get(name, name)} | 109 | - | {sm:.3f} ± {ss:.3f} | {jm:.3f} ± {js:.3f} | "
                         "- | - | - | - | - |")
        lines += ["", "±: in our rows the SD over pairs (of the per-pair means, for det J); in the paper's rows "
                      "the paper's ±, which it does not say is over pairs or over pixels."]
    return "\n".join(lines)


def provenance_lines(prov: dict[str, Any], rows: Sequence[dict[str, Any]] | None = None) -> list[str]:
    """Readable lines from a ``provenance.json`` (as a dict) and, optionally, the rows of its ``results.csv``.

    States the data set, the protocol, how many runs wrote the file and, for each run, its date, device,
    machine, full commit (a ``+dirty`` commit is called out: the run had uncommitted changes, so the commit
    alone does not reproduce it), command and package versions; then each method's preset and configuration
    and, with ``rows``, the dates, devices and commits found in the rows.
    """
    if not prov:
        return ["no provenance.json found"]

    def commit_text(commit: Any) -> str:
        commit = str(commit or "")
        if not commit:
            return "commit unknown (not run from a git checkout)"
        if commit.endswith("+dirty"):
            return (f"commit {commit}: DIRTY, the working tree had uncommitted changes, so this commit alone "
                    "does not reproduce the run")
        return f"commit {commit}"

    data = prov.get("dataset", {})
    lines = [f"data set: {data.get('name')} (read from {data.get('root')})",
             f"protocol: {prov.get('protocol')}, slice: {prov.get('slice')}, channel: {prov.get('channel')}, "
             f"size: {prov.get('size') or 'native'}, seed: {prov.get('seed')}, "
             f"pairs: {'all' if prov.get('limit') is None else 'first ' + str(prov.get('limit'))}"]
    runs = prov.get("runs") if isinstance(prov.get("runs"), list) else []
    if not runs:  # a file from before runs[] existed: whatever sits at the top level
        lines.append("runs: none recorded")
        lines += [f"{key}: {prov[key]}" for key in ("date", "device", "machine", "git_commit", "versions")
                  if key in prov]
    else:
        lines.append(f"written by {len(runs)} run" + ("s (each later run resumed the file and added only "
                                                      "missing rows):" if len(runs) > 1 else ":"))
    for k, run in enumerate(runs, 1):
        m = run.get("machine", {}) or {}
        where = (f"{m.get('cpu')}, {m.get('cpu_cores')} cores, torch threads {m.get('torch_threads')}, "
                 + (f"instruction set {m['cpu_isa']}, " if m.get("cpu_isa") else "")
                 + (f"GPU {m['gpu']} (CUDA {m.get('cuda')})" if m.get("gpu") else "no GPU")
                 + f", {m.get('platform')}")
        done = run.get("rows_already_done")
        lines.append(f"run {k}: {run.get('date')}, device {run.get('device')}"
                     + (", torch.compile" if run.get("dip_compile") else "")
                     + (f", resumed after {done} rows" if done else ""))
        lines.append(f"  machine: {where}")
        lines.append(f"  {commit_text(run.get('git_commit'))}")
        lines.append(f"  command: {run.get('command')}")
        lines.append("  versions: " + ", ".join(f"{name} {v}" for name, v in (run.get("versions") or {}).items()))
    for name, method in prov.get("methods", {}).items():
        lines.append(f"method {name}: preset {method.get('preset')}, config {json.dumps(method.get('config'))}")
    if rows:
        commits = sorted({str(r.get("git_commit") or "") for r in rows})
        known = {str(run.get("git_commit") or "") for run in runs}
        lines.append(f"rows: {len(rows)}; dates " + ", ".join(sorted({str(r.get('date'))[:10] for r in rows}))
                     + "; devices " + ", ".join(sorted({str(r.get('device')) for r in rows}))
                     + ("; commits as in the runs above" if set(commits) <= known else
                        "; " + "; ".join(commit_text(c) for c in commits)))
    return lines
