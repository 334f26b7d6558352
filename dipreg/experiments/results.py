"""The results file of :func:`dipreg.experiments.runner.reproduce`: its columns, reading it back, writing rows.

Book: chapter "Reproducing the brain MRI results" reads the stored ``results.csv`` files with
:func:`load_results`.

One row per (pair, method), columns :data:`COLUMNS`. Rows are appended one at a time, each flushed and
fsynced (:func:`append_row`); a file that does not fit (another header, a damaged or truncated line) is
refused with a ValueError that says what is wrong and how to start afresh.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dipreg.experiments.files import atomic_write
from dipreg.jsonutil import canonical, changed_settings

if TYPE_CHECKING:
    from dipreg.methods import Planned

RESULTS_FILE = "results.csv"
METRICS = ("ssim_before", "ssim_after", "mae_before", "mae_after", "jac_mean", "jac_std", "jac_min",
           "folded_fraction", "std_log_jac", "dice_before", "dice_after")
"""Per-pair metrics stored in each row (see :func:`dipreg.metrics.summarize`); Dice on the tumour masks."""

COLUMNS = ("pair", "moving_id", "fixed_id", "protocol", "slice", "channel", "size", "method", *METRICS,
           "seconds", "iterations", "device", "preset", "config", "seed", "dipreg_version", "git_commit", "date",
           "error")
"""Header of ``results.csv``, in order."""

_FLOATS = (*METRICS, "seconds")
_INTS = ("iterations", "seed")
# Columns that must agree between the rows already in a file and the run that resumes it.
_RUN_KEYS = ("protocol", "slice", "channel", "size", "seed")


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return "nan" if math.isnan(v) else repr(v)
    return str(value)


def _move_away_hint(path: Path) -> str:
    return (f"move {path} away (or delete it) to start afresh, or pass a new output folder (--out) to start a "
            "separate run")


def load_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a ``results.csv`` written by :func:`reproduce`.

    Returns one dict per row, keys :data:`COLUMNS`: metrics and ``seconds`` as floats (NaN when empty),
    ``iterations`` and ``seed`` as ints (``None`` when empty), everything else as strings (``config``
    is a JSON string; ``error`` is ``""`` for a successful run). A file with only the header gives ``[]``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a dipreg results file (wrong header), an incomplete last line (a run killed while
            writing), a row with the wrong number of fields or a value that is not a number.
    """
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILE
    if not p.exists():
        raise FileNotFoundError(f"no results file at {p}")
    try:
        text = p.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p} is not UTF-8 text (byte {exc.start}: {exc.reason}), so not a results file of "
                         f"dipreg (or a damaged one); {_move_away_hint(p)}") from None
    return _parse_results(text, p)


def _parse_results(text: str, p: Path) -> list[dict[str, Any]]:
    hint = _move_away_hint(p)
    if not text.strip():
        raise ValueError(f"{p} is empty (no header); {hint}")
    try:  # the header first: a file that is not a results file should say so, whatever its last line
        header = next(csv.reader([text.split("\n", 1)[0]]))
    except (csv.Error, StopIteration) as exc:
        raise ValueError(f"{p}: unreadable CSV header ({exc}); {hint}") from exc
    if tuple(header) != COLUMNS:
        missing = [c for c in COLUMNS if c not in header]
        extra = [c for c in header if c not in COLUMNS]
        what = (f"missing columns {missing}" if missing else "") + ("; " if missing and extra else "") + \
               (f"unexpected columns {extra}" if extra else "")
        raise ValueError(f"{p} is not a results file of this dipreg version (header differs: "
                         f"{what or 'columns in another order'}); {hint}")
    if not text.endswith("\n"):
        n_lines = text.count("\n") + 1
        raise ValueError(f"{p}: line {n_lines} is incomplete (no line end; a run was probably killed while writing "
                         f"it). Delete that last line to resume from the rows before it, or {hint}")
    reader = csv.reader(io.StringIO(text, newline=""))
    next(reader)
    rows: list[dict[str, Any]] = []
    try:
        for fields in reader:
            line = reader.line_num
            if not fields:
                continue
            if len(fields) != len(COLUMNS):
                raise ValueError(f"{p}: line {line} has {len(fields)} fields, expected {len(COLUMNS)} (a damaged or "
                                 f"hand-edited row); fix or delete that line, or {hint}")
            row: dict[str, Any] = dict(zip(COLUMNS, fields, strict=True))
            for col in _FLOATS:
                raw = row[col].strip()
                try:
                    row[col] = float(raw) if raw else math.nan
                except ValueError:
                    raise ValueError(f"{p}: line {line}, column {col!r}: {raw!r} is not a number; fix or delete "
                                     f"that line, or {hint}") from None
            for col in _INTS:
                raw = row[col].strip()
                try:
                    row[col] = int(raw) if raw else None
                except ValueError:
                    raise ValueError(f"{p}: line {line}, column {col!r}: {raw!r} is not an integer; fix or delete "
                                     f"that line, or {hint}") from None
            if not row["pair"] or not row["method"]:
                raise ValueError(f"{p}: line {line} has no pair id or method; fix or delete that line, or {hint}")
            rows.append(row)
    except csv.Error as exc:
        raise ValueError(f"{p}: damaged CSV near line {reader.line_num} ({exc}); {hint}") from exc
    return rows


def _line(values: Sequence[Any]) -> str:
    buf = io.StringIO(newline="")
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append ``row`` (a dict with the keys of :data:`COLUMNS`) to the results file ``path``, flushed and fsynced,
    so that a run killed right after loses nothing."""
    with open(path, "a", encoding="utf-8", newline="") as fh:
        fh.write(_line([_fmt(row.get(c)) for c in COLUMNS]))
        fh.flush()
        os.fsync(fh.fileno())


def write_results(path: Path, rows: Sequence[dict[str, Any]] = ()) -> None:
    """Replace ``path`` with the header and ``rows``, atomically (:func:`dipreg.experiments.files.atomic_write`)."""
    with atomic_write(path, encoding="utf-8", newline="") as fh:
        fh.write(_line(COLUMNS))
        for row in rows:
            fh.write(_line([_fmt(row.get(c)) for c in COLUMNS]))


def config_changes(rows: list[dict[str, Any]], plan: list[Planned], path: Path) -> dict[int, str]:
    """The rows of a method of ``plan`` that ran with another configuration than it has now (a preset changed):
    ``{index in rows: what differs}``. A field added to a method's settings after a row ran counts with its
    default value, which reproduces the behaviour from before it existed. A row whose configuration is not
    valid JSON is damage, not a change: ValueError naming ``path`` and the line."""
    configs = {m.name: canonical(m.config) for m in plan}
    defaults = {m.name: json.loads(canonical(type(m.settings)().to_dict())) for m in plan
                if dataclasses.is_dataclass(m.settings)}
    changes = {}
    for i, row in enumerate(rows):
        want = configs.get(row["method"])
        if want is None or row["config"] == want:
            continue
        new = json.loads(want)
        try:
            old = json.loads(row["config"])
            diff = changed_settings(old, new, defaults.get(row["method"], {}))
        except (ValueError, AttributeError, TypeError):
            raise ValueError(f"{path}: line {i + 2} (method {row['method']!r}) holds a config that is not valid "
                             f"JSON; repair or delete that line (its run then runs again)") from None
        if diff:
            old = {**defaults.get(row["method"], {}), **old}  # for the message: the old values as they acted
            changes[i] = "; ".join(f"{k}: {old.get(k)!r} in the file, {new.get(k)!r} now" for k in diff[:4])
    return changes


def check_run_keys(rows: list[dict[str, Any]], expected: dict[str, str], path: Path) -> None:
    """Refuse (ValueError) to resume the results ``rows`` of ``path`` with another protocol, slice, channel, size
    or seed than this run's (``expected``)."""
    for i, row in enumerate(rows):
        for key in _RUN_KEYS:
            have = "" if row[key] is None else str(row[key])
            if have != expected[key]:
                raise ValueError(f"{path}: line {i + 2} was made with {key}={have!r}, this run has {key}="
                                 f"{expected[key]!r}; rows of different runs cannot share a results file. Run with "
                                 f"the same settings to resume, or {_move_away_hint(path)}")


def check_compatible(rows: list[dict[str, Any]], expected: dict[str, str], plan: list[Planned], path: Path) -> None:
    """Refuse (ValueError) to resume the results ``rows`` of ``path`` with another protocol, slice, channel, size,
    seed (:func:`check_run_keys`) or method configuration (:func:`config_changes`) than this run's."""
    check_run_keys(rows, expected, path)
    for i, detail in config_changes(rows, plan, path).items():
        raise ValueError(f"{path}: line {i + 2} ran method {rows[i]['method']!r} with another configuration "
                         f"({detail}). Run with the same settings to resume, rerun_changed=True (--rerun-changed) "
                         f"to run such rows again, or {_move_away_hint(path)}")


def row_metrics(result: Any, pair: Any) -> dict[str, float]:
    """The :data:`METRICS` of ``result`` on ``pair`` (Dice when both images have a tumour mask)."""
    both_tumour = (pair.moving_mask is not None and pair.fixed_mask is not None
                   and pair.moving_mask.any() and pair.fixed_mask.any())
    if both_tumour:
        m = result.metrics(pair.moving_mask, pair.fixed_mask)
    else:
        m = result.metrics()
    return {k: float(m.get(k, math.nan)) for k in METRICS}
