"""Reproduce the paper's brain MRI results: every method on every LGG pair, one CSV row per (pair, method).

Book: chapter "Reproducing the brain MRI results".

:func:`reproduce` writes ``results.csv`` row by row (each row flushed and fsynced as soon as its
registration finishes) and ``provenance.json`` beside it. Started again with the same settings it
reads the finished rows and runs only what is missing, so a killed run loses nothing. A results
file that does not fit (another protocol, slice, size, seed or method configuration, a damaged or
truncated line) is never overwritten: :func:`reproduce` raises a ValueError that says what is wrong.
One run at a time may use an output folder (the lock file ``reproduce.lock``); ``jobs=N`` (``--jobs N``)
runs the pairs in N worker processes while this process alone writes the rows.

Methods (the ``methods`` argument):

``"dip"``
    :func:`dipreg.register` with ``preset`` (``None``: the device's default) and ``overrides``.
``"classical"``
    :func:`dipreg.classical.register_classical` with its defaults (``method_options["classical"]``).
``"ants-<name>"``
    :func:`dipreg.ants.register_ants`; ``<name>`` is a key of :data:`dipreg.ants.ANTS_SETTINGS`
    (``"ants-strong"``) or any ANTs ``type_of_transform`` (``"ants-SyN"``, the paper's comparator).
    Needs antspyx; without it the ANTs methods are reported once and skipped.

:func:`load_results` reads the file back, :func:`summarize_results` gives mean +- SD over pairs per
method (and the pooled per-pixel SD of det J), :func:`paper_table` the paper's Table 1.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import importlib.util
import io
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_FILE = "results.csv"
PROVENANCE_FILE = "provenance.json"
DEFAULT_METHODS = ("dip", "classical", "ants-SyN", "ants-strong")

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


# ---------------------------------------------------------------------------------------------------------------
# Environment


def versions() -> dict[str, str]:
    """Versions of dipreg, Python, torch, numpy and the optional packages (``"-"`` when missing)."""
    import dipreg

    out = {"dipreg": dipreg.__version__, "python": platform.python_version()}
    for mod, dist in (("torch", "torch"), ("numpy", "numpy"), ("scipy", "scipy"), ("skimage", "scikit-image"),
                      ("ants", "antspyx"), ("ipywidgets", "ipywidgets")):
        mod_obj = sys.modules.get(mod)
        ver = getattr(mod_obj, "__version__", None) if mod_obj is not None else None
        if ver is None:
            try:
                from importlib.metadata import version

                ver = version(dist)
            except Exception:
                ver = "-"
        out[dist] = str(ver)
    return out


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), or what :mod:`platform` says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info() -> dict[str, Any]:
    """Where this runs: CPU model and cores, torch threads, the CUDA GPU (if any), OS, Python, torch."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_model(), "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": gpu, "cuda": torch.version.cuda if gpu else None, "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}


def git_commit() -> str:
    """The commit of the repository dipreg is imported from (``+dirty`` when it has changes), or ``""``."""
    repo = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return ""
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------------------------
# Methods


def _ants_available() -> bool:
    return importlib.util.find_spec("ants") is not None


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_jsonable)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (tuple, set, np.ndarray)):
        return list(obj)
    return str(obj)


class _Method:
    """One method of the comparison: its name, the settings it runs with (a JSON-ready dict) and a runner."""

    def __init__(self, name: str, preset: str, config: dict[str, Any], run: Callable[..., Any],
                 needs_ants: bool = False, warmup: Callable[..., Any] | None = None):
        self.name, self.preset, self.config, self.run, self.needs_ants = name, preset, config, run, needs_ants
        self.warmup = warmup

    @property
    def config_json(self) -> str:
        return _canonical(self.config)


def _plan_methods(methods: Sequence[str], *, preset: str | None, device: Any, seed: int, progress: bool,
                  overrides: dict[str, Any] | None, method_options: dict[str, dict[str, Any]] | None,
                  compile: bool = False) -> list[_Method]:
    from dipreg.register import register, resolve_config, resolve_device

    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    methods = list(methods)
    if not methods:
        raise ValueError("methods: expected at least one of 'dip', 'classical', 'ants-<setting>'")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods: each method may appear once, got {methods}")
    options = dict(method_options or {})
    unknown_opts = sorted(k for k in options if k != "classical" and not str(k).startswith("ants-"))
    if unknown_opts:  # options of a method not run this time are fine (one dict for several runs)
        raise ValueError(f"method_options: {unknown_opts} are not methods with options; expected 'classical' or "
                         "'ants-<setting>' (DIP settings go in overrides)")
    dev = resolve_device(device)
    plan: list[_Method] = []
    for name in methods:
        if not isinstance(name, str):
            raise TypeError(f"methods: expected method names (str), got {type(name).__name__}")
        opts = dict(options.get(name, {}))
        if name == "dip":
            cfg = resolve_config(preset, dev, dict(overrides or {}))

            def run_dip(pair, cfg=cfg):
                return register(pair.moving, pair.fixed, config=cfg, seed=seed, device=dev, progress=progress,
                                compile=compile)

            def warm_dip(pair, cfg=cfg):
                register(pair.moving, pair.fixed, config=cfg.replace(iterations=1, readout_draws=1, patience=0),
                         seed=seed, device=dev, progress=False, compile=compile)

            plan.append(_Method(name, cfg.preset, cfg.to_dict(), run_dip, warmup=warm_dip))
        elif name == "classical":
            from dipreg.classical import DEFAULTS, register_classical

            bad = sorted(set(opts) - set(DEFAULTS))
            if bad:
                raise ValueError(f"method_options['classical']: unknown setting(s) {bad}; valid: {sorted(DEFAULTS)}")
            settings = {**DEFAULTS, **opts}

            def run_classical(pair, settings=settings):
                return register_classical(pair.moving, pair.fixed, seed=seed, device=dev, progress=progress,
                                          **settings)

            def warm_classical(pair, settings=settings):
                register_classical(pair.moving, pair.fixed, device=dev, progress=False,
                                   **{**settings, "iterations": 1})

            plan.append(_Method(name, "default" if not opts else "custom", settings, run_classical,
                                warmup=warm_classical))
        elif name.startswith("ants-") and len(name) > 5:
            setting = name[5:]
            from dipreg.ants import ANTS_SETTINGS, check_ants_seed  # imports no ants itself

            check_ants_seed(seed)  # a seed ANTs cannot take fails here, not once per pair

            kwargs = dict(ANTS_SETTINGS.get(setting, {"type_of_transform": setting}))
            kwargs.update(opts)
            label = setting if setting in ANTS_SETTINGS else "custom"

            def run_ants(pair, kwargs=kwargs):
                from dipreg.ants import register_ants

                return register_ants(pair.moving, pair.fixed, seed=seed, **kwargs)

            plan.append(_Method(name, label, kwargs, run_ants, needs_ants=True))
        else:
            raise ValueError(f"methods: unknown method {name!r}; expected 'dip', 'classical' or 'ants-<setting>' "
                             "(e.g. 'ants-SyN', 'ants-strong')")
    return plan


# ---------------------------------------------------------------------------------------------------------------
# The results file


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


def _append_row(path: Path, row: dict[str, Any]) -> None:
    buf = io.StringIO(newline="")
    csv.writer(buf, lineterminator="\n").writerow([_fmt(row.get(c)) for c in COLUMNS])
    with open(path, "a", encoding="utf-8", newline="") as fh:
        fh.write(buf.getvalue())
        fh.flush()
        os.fsync(fh.fileno())


def _rewrite(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replace ``path`` with the header and ``rows``, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    _write_header(tmp)
    for row in rows:
        _append_row(tmp, row)
    tmp.replace(path)


def _check_size(plan: list[_Method], size: int) -> set[str]:
    """Run each method's warm-up on a random pair of ``size`` x ``size``: a setting that cannot work at that
    size (too many generator scales or pyramid levels) fails here, before any pair, not once per pair.
    Returns the names of the methods warmed up."""
    from dipreg.data.pair import Pair

    rng = np.random.default_rng(0)
    probe = Pair(rng.random((size, size)), rng.random((size, size)))
    warmed = set()
    for method in plan:
        if method.warmup is None or method.needs_ants:
            continue
        try:
            method.warmup(probe)
        except ValueError as exc:
            raise ValueError(f"{method.name} cannot run at --size {size}: {exc}") from None
        warmed.add(method.name)
    return warmed


def _write_header(path: Path) -> None:
    buf = io.StringIO(newline="")
    csv.writer(buf, lineterminator="\n").writerow(COLUMNS)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(buf.getvalue())
        fh.flush()
        os.fsync(fh.fileno())


def _check_compatible(rows: list[dict[str, Any]], expected: dict[str, str], plan: list[_Method], path: Path) -> None:
    hint = _move_away_hint(path)
    configs = {m.name: m.config_json for m in plan}
    for i, row in enumerate(rows):
        line = i + 2
        for key in _RUN_KEYS:
            have = "" if row[key] is None else str(row[key])
            if have != expected[key]:
                raise ValueError(f"{path}: line {line} was made with {key}={have!r}, this run has {key}="
                                 f"{expected[key]!r}; rows of different runs cannot share a results file. Run with "
                                 f"the same settings to resume, or {hint}")
        want = configs.get(row["method"])
        if want is not None and row["config"] != want:
            try:
                old, new = json.loads(row["config"]), json.loads(want)
                diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                detail = "; ".join(f"{k}: {old.get(k)!r} in the file, {new.get(k)!r} now" for k in diff[:4])
            except (ValueError, AttributeError):
                detail = "the file's config is not valid JSON"
            raise ValueError(f"{path}: line {line} ran method {row['method']!r} with another configuration ({detail}). "
                             f"Run with the same settings to resume, or {hint}")


LOCK_FILE = "reproduce.lock"


@contextlib.contextmanager
def _run_lock(out: Path) -> Iterator[Path]:
    """Hold ``out/reproduce.lock`` (created exclusively, holding this process id) while the body runs.

    A lock whose process is still running refuses the run (FileExistsError); one left by a process that
    no longer runs (killed) is taken over, with a message.
    """
    lock = out / LOCK_FILE
    for attempt in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                holder = lock.read_text(encoding="utf-8").strip()
            except OSError:
                holder = ""
            if attempt or not holder.isdigit() or _pid_running(int(holder)):
                who = f"process {holder}" if holder.isdigit() else "a run whose process id it does not hold"
                raise FileExistsError(
                    f"{out} is in use by another dipreg reproduce ({who}, lock file {lock}); two runs on one "
                    f"folder would both write every row. Wait for it to end, or pass another --out. If no run "
                    f"is using it, delete {lock}") from None
            _say(f"taking over {lock}: the run that left it (process {holder}) is no longer running")
            lock.unlink(missing_ok=True)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(f"{os.getpid()}\n")
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)


def _pid_running(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _row_metrics(result: Any, pair: Any) -> dict[str, float]:
    both_tumour = (pair.moving_mask is not None and pair.fixed_mask is not None
                   and pair.moving_mask.any() and pair.fixed_mask.any())
    if both_tumour:
        m = result.metrics(pair.moving_mask, pair.fixed_mask)
    else:
        m = result.metrics()
    return {k: float(m.get(k, math.nan)) for k in METRICS}


def _say(msg: str) -> None:
    print(f"dipreg reproduce: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# The run


def reproduce(root: str | os.PathLike | None, out_dir: str | os.PathLike, *,
              methods: Sequence[str] | str = DEFAULT_METHODS, protocol: str = "consecutive",
              slice: int | str = "middle",  # same name as dipreg.data.lgg_pairs
              channel: str | None = None, limit: int | None = None, size: int | None = None,
              preset: str | None = None, device: str | None = None, seed: int = 0, progress: bool = True,
              overrides: dict[str, Any] | None = None, method_options: dict[str, dict[str, Any]] | None = None,
              command: str | None = None, on_row: Callable[[dict[str, Any]], None] | None = None,
              compile: bool = False, jobs: int = 1) -> Path:
    """Run every method on every LGG pair and append one row per (pair, method) to ``out_dir/results.csv``.

    Args:
        root: the LGG data (any folder :func:`dipreg.data.find_root` accepts); ``None`` looks where
            :func:`dipreg.data.default_lgg_root` looks.
        out_dir: folder for ``results.csv`` and ``provenance.json`` (created if missing).
        methods: names (or one comma-separated string): ``"dip"``, ``"classical"``, ``"ants-<setting>"``.
        protocol, slice, channel, limit: passed to :func:`dipreg.data.lgg_pairs` (``"consecutive"``:
            patient i -> i + 1, the middle FLAIR slice).
        size: resample every pair to ``size`` x ``size`` pixels first (``None``: the native 256 x 256).
        preset, overrides: the DIP configuration (a preset name or ``None`` for the device's default, then
            config fields to change, e.g. ``{"iterations": 100}``).
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available), for DIP and the classical method.
        seed: seed of every method, the same for every pair.
        progress: progress bars (the pairs and each registration).
        method_options: keyword arguments per method other than DIP, e.g. ``{"classical": {"weight": 0.1}}``
            or ``{"ants-SyN": {"reg_iterations": (40, 20, 0)}}``.
        command: how the run was started, for ``provenance.json`` (default: ``sys.argv``).
        on_row: called with each row dict right after it is written.
        compile: DIP through ``torch.compile`` (:func:`dipreg.register`); compiled in the untimed warm-up
            run before the first pair, so ``seconds`` holds no compilation. Recorded in the run's provenance.
        jobs: run the pairs in this many worker processes (``"spawn"``ed, one torch thread each, every
            method warmed up once per process); 1 (default) runs them here, one after the other. The rows
            are the same as a serial run with one torch thread (``seconds`` and ``date`` aside), written by
            this process one at a time in the same order; on an interrupt the rows already finished are
            written and the runs in flight are lost. Recorded in the run's provenance.

    Returns:
        The path of ``results.csv``.

    Resume: finished rows already in ``results.csv`` are skipped; they must come from the same protocol,
    slice, channel, size, seed and method configurations, else a ValueError explains the mismatch. A
    failing registration (a RuntimeError such as RegistrationError or an ANTs failure, or a ValueError from
    the method) becomes a row with the message in ``error`` and NaN metrics, and the run goes on; so does a
    pair whose files cannot be read (an ``unreadable data`` row per method). A resumed run removes those rows
    and runs them again.
    With ``size``, every method first runs once on a random pair of that size, so a setting that cannot
    work at that size is refused before the first pair.

    Only one run may use ``out_dir`` at a time: the run holds the lock file ``out_dir/reproduce.lock`` (its
    process id) until it ends; a lock left by a process that is no longer running is taken over.

    Raises:
        ValueError, TypeError, FileNotFoundError: bad arguments, no data, an incompatible results file or a
        damaged provenance.json. FileExistsError: another run holds ``out_dir``.
    """
    from dipreg.data import default_lgg_root, find_root, lgg_pairs
    from dipreg.register import resolve_device

    if root is None:
        found = default_lgg_root()
        if found is None:
            raise FileNotFoundError("no LGG data found; pass its folder (--data ROOT) or set DIPREG_LGG_ROOT "
                                    "(dipreg.data.download_lgg fetches it)")
        data_root = found
    else:
        data_root = find_root(root)
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
            raise TypeError(f"size: expected an int (a square size in pixels) or None, got {size!r}")
        if size < 8:
            raise ValueError(f"size: expected at least 8 pixels, got {size}")
        size = int(size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")
    seed = int(seed)
    if isinstance(jobs, bool) or not isinstance(jobs, (int, np.integer)) or jobs < 1:
        raise ValueError(f"jobs: expected an integer >= 1 (worker processes), got {jobs!r}")
    jobs = int(jobs)
    dev = resolve_device(device)
    plan = _plan_methods(methods, preset=preset, device=dev, seed=seed, progress=progress, overrides=overrides,
                         method_options=method_options, compile=compile)
    unreadable: list[tuple[str, str, Exception]] = []  # pairs whose files could not be read, not yet recorded
    pairs_iter = lgg_pairs(data_root, protocol=protocol, slice=slice, channel=channel, limit=limit,
                           on_error=lambda m_id, f_id, exc: unreadable.append((m_id, f_id, exc)))

    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir: {out} is a file, not a folder; pass a folder for results.csv")
    out.mkdir(parents=True, exist_ok=True)
    with _run_lock(out):
        return _run(out, data_root, pairs_iter, unreadable, plan, dev, jobs=jobs, protocol=protocol, slice=slice,
                    channel=channel, size=size, seed=seed, limit=limit, preset=preset, overrides=overrides,
                    method_options=method_options, command=command, on_row=on_row, compile=compile,
                    progress=progress)


def _run(out: Path, data_root: Path, pairs_iter: Iterable[Any], unreadable: list[tuple[str, str, Exception]],
         plan: list[_Method], dev: Any, *, jobs: int, protocol: str, slice: int | str,
         channel: str | int | None, size: int | None, seed: int, limit: int | None, preset: str | None,
         overrides: dict[str, Any] | None, method_options: dict[str, dict[str, Any]] | None, command: str | None,
         on_row: Callable[[dict[str, Any]], None] | None, compile: bool, progress: bool) -> Path:
    """The body of :func:`reproduce` once its output folder is locked."""
    from dipreg import __version__
    from dipreg.data.lgg import channel_name

    results = out / RESULTS_FILE
    previous = _read_provenance(out / PROVENANCE_FILE)  # a damaged one is refused before anything is written
    if results.exists() and results.stat().st_size > 0:
        rows = load_results(results)
    else:
        rows = None
    if protocol == "pre-post":
        channel_label = "t1_pre->t1_post"
    else:  # the channel's name, also when it was given as an index
        channel_label = channel_name("flair" if channel is None else channel)
    expected = {"protocol": protocol, "slice": str(slice), "channel": channel_label,
                "size": "" if size is None else str(int(size)), "seed": str(seed)}
    warmed = _check_size(plan, size) if size is not None else set()
    if rows is not None:
        _check_compatible(rows, expected, plan, results)
        failed = [r for r in rows if r["error"]]
        if failed:  # rerun them: the cause may be gone (a fixed file, another setting of the same method)
            rows = [r for r in rows if not r["error"]]
            _rewrite(results, rows)
            _say(f"{len(failed)} failed row(s) of {results} removed; they run again")
    else:
        _write_header(results)
        rows = []
    done = {(r["pair"], r["method"]) for r in rows}

    available = [m for m in plan if not m.needs_ants or _ants_available()]
    skipped = [m.name for m in plan if m not in available]
    if skipped:
        _say(f"antspyx is not installed, so {skipped} will be skipped (pip install antspyx to run them)")

    commit = git_commit()
    _write_provenance(out, previous, data_root=data_root, expected=expected, limit=limit, plan=plan,
                      skipped=skipped, preset=preset, overrides=overrides, device=dev, command=command,
                      commit=commit, resumed=len(rows), compile=compile, jobs=jobs)
    if rows:
        _say(f"resuming {results}: {len(rows)} finished row(s) kept")

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="reproduce", unit="run", total=_count_pairs(data_root, protocol, limit) * len(available))

    def work() -> Iterator[tuple[_Method | None, Any]]:
        """``(method, pair)`` for every run still to do, in order; ``(None, row)`` for the error row of each
        method on a pair whose files cannot be read (so the run goes on to the next pair)."""
        def unreadable_rows() -> Iterator[tuple[None, dict[str, Any]]]:
            while unreadable:
                m_id, f_id, exc = unreadable.pop(0)
                _say(f"cannot read the pair {m_id} -> {f_id}: {exc}")
                for method in list(available):
                    if (f"{m_id}->{f_id}", method.name) in done:
                        continue
                    row = _row_base(method, m_id, f_id, expected, dev, commit, __version__)
                    row.update({k: math.nan for k in METRICS}, seconds=math.nan, iterations=None, date=_now(),
                               error=f"unreadable data: {type(exc).__name__}: {exc}".replace("\n", " "))
                    yield None, row

        for pair in pairs_iter:
            yield from unreadable_rows()
            if size is not None:
                pair = pair.resized(int(size))
            for method in list(available):
                if (pair.id, method.name) in done:
                    if bar is not None:
                        bar.update(1)
                    continue
                yield method, pair
        yield from unreadable_rows()

    def write(method: _Method | None, row: dict[str, Any] | None) -> None:
        """Append one finished row (the parent process only), or drop a method whose ants vanished."""
        if row is None:
            if method in available:
                _say(f"antspyx could not be imported, so {method.name} is skipped")
                available.remove(method)
            return
        _append_row(results, row)
        done.add((row["pair"], row["method"]))
        if bar is not None:
            bar.update(1)
        if on_row is not None:
            on_row(row)

    try:
        if jobs == 1:
            for method, item in work():
                if method is None:
                    write(None, item)
                    continue
                if bar is not None:
                    bar.set_postfix_str(f"{method.name} {item.moving_id.split(':')[0]}", refresh=True)
                if method.warmup is not None and method.name not in warmed:
                    warmed.add(method.name)  # one short untimed run: the first timing then holds no start-up cost
                    _warm_up(method, item)
                write(method, _run_one(method, item, expected, dev, commit, __version__))
        else:
            worker = {"methods": [m.name for m in available], "preset": preset, "device": str(dev), "seed": seed,
                      "overrides": overrides, "method_options": method_options, "compile": compile,
                      "expected": expected, "commit": commit}
            _run_parallel(work(), jobs, worker, write, results)
    finally:
        if bar is not None:
            bar.close()
    return results


def _warm_up(method: _Method, pair: Any) -> None:
    try:
        method.warmup(pair)
    except Exception:  # the real run reports any problem
        pass


# State of a worker process of ``reproduce(jobs > 1)``: its plan of methods and what each row records.
_WORKER: dict[str, Any] = {}


def _worker_init(spec: dict[str, Any]) -> None:
    """Set up a worker process: one torch thread, Ctrl-C left to the parent, the methods built here."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the workers
    torch.set_num_threads(1)
    from dipreg.register import resolve_device

    dev = resolve_device(spec["device"])
    plan = _plan_methods(spec["methods"], preset=spec["preset"], device=dev, seed=spec["seed"], progress=False,
                         overrides=spec["overrides"], method_options=spec["method_options"], compile=spec["compile"])
    _WORKER.update(spec, plan={m.name: m for m in plan}, dev=dev, warmed=set())


def _worker_run(name: str, pair: Any) -> dict[str, Any] | None:
    """One (pair, method) run in a worker process: the row :func:`_run_one` makes (``None``: ants vanished)."""
    from dipreg import __version__

    method = _WORKER["plan"][name]
    if method.warmup is not None and name not in _WORKER["warmed"]:
        _WORKER["warmed"].add(name)  # each process warms up once, untimed, as the serial run does
        _warm_up(method, pair)
    return _run_one(method, pair, _WORKER["expected"], _WORKER["dev"], _WORKER["commit"], __version__)


def _run_parallel(work: Iterator[tuple[_Method | None, Any]], jobs: int, spec: dict[str, Any],
                  write: Callable[[_Method | None, dict[str, Any] | None], None], results: Path) -> None:
    """Run ``work`` in ``jobs`` spawned worker processes; the parent writes the rows in the order of ``work``.

    At most ``2 * jobs`` items are in flight. On an interrupt or an error the rows already finished are written
    (without ``on_row``), the others are dropped and the workers are stopped, so a resumed run redoes only those.
    """
    import multiprocessing
    from collections import deque
    from concurrent.futures import Future, ProcessPoolExecutor

    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                               initargs=(spec,))
    queue: deque[tuple[_Method | None, Any]] = deque()
    finished = False
    try:
        exhausted = False
        while True:
            while not exhausted and len(queue) < 2 * jobs:
                method, item = next(work, (None, None))
                if item is None:
                    exhausted = True
                elif method is None:
                    queue.append((None, item))
                else:
                    queue.append((method, pool.submit(_worker_run, method.name, item)))
            if not queue:
                break
            method, item = queue.popleft()
            write(method, item.result() if isinstance(item, Future) else item)
        finished = True
    finally:
        if not finished:
            for _, item in queue:
                ready = not isinstance(item, Future) or (item.done() and not item.cancelled()
                                                         and item.exception() is None)
                row = (item.result() if isinstance(item, Future) else item) if ready else None
                if row is not None:
                    _append_row(results, row)
            for proc in list((getattr(pool, "_processes", None) or {}).values()):  # do not wait for long runs
                proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


def _count_pairs(root: Path, protocol: str, limit: int | None) -> int:
    from dipreg.data import list_patients

    n = len(list_patients(root)) - (1 if protocol == "consecutive" else 0)
    return max(0, n if limit is None else min(n, int(limit)))


def _row_base(method: _Method, moving_id: str, fixed_id: str, expected: dict[str, str], dev: Any, commit: str,
              version: str) -> dict[str, Any]:
    return {"pair": f"{moving_id}->{fixed_id}", "moving_id": moving_id, "fixed_id": fixed_id, **expected,
            "method": method.name, "preset": method.preset, "config": method.config_json,
            "dipreg_version": version, "git_commit": commit, "error": "",
            "device": "cpu" if method.needs_ants else str(dev)}


def _run_one(method: _Method, pair: Any, expected: dict[str, str], dev: Any, commit: str,
             version: str) -> dict[str, Any] | None:
    row = _row_base(method, pair.moving_id, pair.fixed_id, expected, dev, commit, version)
    start = time.perf_counter()
    try:
        result = method.run(pair)
    except ImportError:
        if method.needs_ants:
            return None
        raise
    except (RuntimeError, ValueError, FloatingPointError) as exc:  # RegistrationError, an ANTs failure, ...
        row.update({k: math.nan for k in METRICS})
        row.update(seconds=time.perf_counter() - start, iterations=len(getattr(exc, "history", []) or []) or None,
                   error=f"{type(exc).__name__}: {exc}".replace("\n", " "), date=_now())
        _say(f"{method.name} failed on {pair.id}: {row['error']}")
        return row
    row.update(_row_metrics(result, pair))
    row.update(seconds=float(result.seconds), device=str(result.device), date=_now(),
               iterations=int(result.info.get("iterations", len(result.history))))
    return row


def _read_provenance(path: Path) -> dict[str, Any]:
    """The ``provenance.json`` at ``path`` (``{}`` if there is none); a damaged one raises a ValueError."""
    if not path.exists():
        return {}
    try:
        prov = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        prov = exc
    if not isinstance(prov, dict):
        why = f"{type(prov).__name__}: {prov}" if isinstance(prov, Exception) else "not a JSON object"
        raise ValueError(f"{path} is damaged ({why}); it records the earlier runs of the results beside it, so "
                         f"it is not replaced. Repair it, or move it away (the results are kept; this run starts "
                         f"a new record), or pass a new output folder (--out) to start a separate run")
    return prov


def _write_provenance(out: Path, previous: dict[str, Any], *, data_root: Path, expected: dict[str, str],
                      limit: int | None, plan: list[_Method], skipped: list[str], preset: str | None,
                      overrides: dict[str, Any] | None, device: Any, command: str | None, commit: str, resumed: int,
                      compile: bool, jobs: int) -> None:
    from dipreg import __version__

    path = out / PROVENANCE_FILE
    run = {
        "date": _now(),
        "command": command if command is not None else " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "rows_already_done": resumed,
        "dip_compile": compile,
        "jobs": jobs,
        "machine": machine_info(),
        "versions": versions(),
        "git_commit": commit,
        "device": str(device),
    }
    runs = list(previous.get("runs", [])) if isinstance(previous.get("runs"), list) else []
    runs.append(run)
    prov = {
        "dataset": {"name": "LGG Segmentation Dataset (Kaggle mateuszbuda/lgg-mri-segmentation)",
                    "root": str(data_root),
                    "citation": "Buda et al., Comput. Biol. Med. 2019; Mazurowski et al., J. Neuro-Oncol. 2017; "
                                "images: TCIA TCGA-LGG"},
        "protocol": expected["protocol"], "slice": expected["slice"], "channel": expected["channel"],
        "size": int(expected["size"]) if expected["size"] else None, "seed": int(expected["seed"]),
        "limit": limit,
        "methods": {m.name: {"preset": m.preset, "config": m.config} for m in plan},
        "skipped_methods": skipped,
        "dip_preset_argument": preset,
        "dip_overrides": dict(overrides or {}),
        "dipreg_version": __version__,
        "results": RESULTS_FILE,
        "columns": list(COLUMNS),
        "runs": runs,
    }
    _write_json_atomic(path, prov)


# ---------------------------------------------------------------------------------------------------------------
# Summaries


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
