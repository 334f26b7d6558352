"""Reproduce the paper's brain MRI results: every method on every LGG pair, one CSV row per (pair, method).

Book: chapter "Reproducing the brain MRI results" (``book/09_reproduction.ipynb``).

:func:`reproduce` writes ``results.csv`` row by row (each row flushed and fsynced as soon as its
registration finishes; :mod:`dipreg.experiments.results`) and ``provenance.json`` beside it
(:mod:`dipreg.experiments.provenance`). Started again with the same settings it reads the finished rows
and runs only what is missing, so a killed run loses nothing. A results file that does not fit (another
protocol, slice, size, seed or method configuration, a damaged or truncated line) is never overwritten:
:func:`reproduce` raises a ValueError that says what is wrong. One run at a time may use an output folder
(the lock file ``reproduce.lock``); ``jobs=N`` (``--jobs N``) runs the pairs in N worker processes while
this process alone writes the rows.

Methods (the ``methods`` argument; :mod:`dipreg.methods` runs each):

``"dip"``
    :func:`dipreg.register` with ``preset`` (``None``: the device's default) and ``overrides``.
``"classical"``
    :func:`dipreg.methods.classical.register_classical` with its defaults (``method_options["classical"]``).
``"ants-<name>"``
    :func:`dipreg.methods.ants.register_ants`; ``<name>`` is a key of :data:`dipreg.methods.ants.ANTS_SETTINGS`
    (``"ants-strong"``) or any ANTs ``type_of_transform`` (``"ants-SyN"``, the paper's comparator).
    Needs antspyx; without it the ANTs methods are reported once and skipped.

:func:`dipreg.experiments.results.load_results` reads the file back, :mod:`dipreg.experiments.report`
summarises it.
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dipreg.data.lgg import channel_name
from dipreg.experiments.files import run_lock, say
from dipreg.experiments.provenance import PROVENANCE_FILE, git_commit, now, read_provenance, write_provenance
from dipreg.experiments.results import (
    METRICS,
    RESULTS_FILE,
    append_row,
    check_compatible,
    check_run_keys,
    config_changes,
    load_results,
    row_metrics,
    write_results,
)
from dipreg.jsonutil import canonical
from dipreg.methods import Planned, plan
from dipreg.methods.dip import check_seed, resolve_device

DEFAULT_METHODS = ("dip", "classical", "ants-SyN", "ants-strong")


def _ants_available() -> bool:
    return importlib.util.find_spec("ants") is not None


def plan_methods(methods: Sequence[str] | str, *, preset: str | None, device: Any, seed: int, progress: bool,
                 overrides: dict[str, Any] | None, method_options: dict[str, dict[str, Any]] | None,
                 compile: bool = False) -> list[Planned]:
    """The methods of a run (names, or one comma-separated string) bound to their settings by
    :func:`dipreg.methods.plan`: DIP from ``preset`` and ``overrides``, the others from ``method_options``."""
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
    return [plan(name, seed=seed, device=dev, preset=preset, overrides=overrides, options=options.get(name),
                 progress=progress, compile=compile) for name in methods]


def _probe_size(plan: list[Planned], size: int) -> set[str]:
    """Run each method's warm-up on a random pair of ``size`` x ``size``: a setting that cannot work at that
    size (too many generator scales or pyramid levels) fails here, before any pair, not once per pair.
    Returns the names of the methods warmed up."""
    from dipreg.data.pair import Pair

    rng = np.random.default_rng(0)
    probe = Pair(rng.random((size, size)), rng.random((size, size)))
    warmed = set()
    for method in plan:
        if not method.can_warm_up or method.needs_ants:
            continue
        try:
            method.warm_up(probe)
        except ValueError as exc:
            raise ValueError(f"{method.name} cannot run at --size {size}: {exc}") from None
        warmed.add(method.name)
    return warmed


# ---------------------------------------------------------------------------------------------------------------
# The run


def reproduce(root: str | os.PathLike | None, out_dir: str | os.PathLike, *,
              methods: Sequence[str] | str = DEFAULT_METHODS, protocol: str = "consecutive",
              slice: int | str = "middle",  # same name as dipreg.data.lgg_pairs
              channel: str | None = None, limit: int | None = None, size: int | None = None,
              preset: str | None = None, device: str | None = None, seed: int = 0, progress: bool = True,
              overrides: dict[str, Any] | None = None, method_options: dict[str, dict[str, Any]] | None = None,
              command: str | None = None, on_row: Callable[[dict[str, Any]], None] | None = None,
              compile: bool = False, jobs: int = 1, rerun_changed: bool = False) -> Path:
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
        rerun_changed: rows of a method that ran with another configuration than ``preset``/``overrides`` (or
            ``method_options``) give it now, as after a change of a preset, are removed from ``results.csv`` and
            run again (the regeneration of a stored result, ``scripts/regenerate_stored.py``); without it such a
            file is refused. Rows of methods not in ``methods`` are kept as they are.

    Returns:
        The path of ``results.csv``.

    Resume: finished rows already in ``results.csv`` are skipped; they must come from the same protocol,
    slice, channel, size, seed and method configurations (see ``rerun_changed``), else a ValueError explains
    the mismatch. A failing registration (a RuntimeError such as RegistrationError or an ANTs failure, or a
    ValueError from the method) becomes a row with the message in ``error`` and NaN metrics, and the run goes
    on; so does a pair whose files cannot be read (an ``unreadable data`` row per method). A resumed run
    removes those rows and runs them again.
    With ``size``, every method first runs once on a random pair of that size, so a setting that cannot
    work at that size is refused before the first pair.

    Only one run may use ``out_dir`` at a time: the run holds the lock file ``out_dir/reproduce.lock`` (its
    process id) until it ends; a lock left by a process that is no longer running is taken over.

    Raises:
        ValueError, TypeError, FileNotFoundError: bad arguments, no data, an incompatible results file or a
        damaged provenance.json. FileExistsError: another run holds ``out_dir``.
    """
    from dipreg.data import default_lgg_root, find_root, lgg_pairs

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
    seed = check_seed(seed)
    if isinstance(jobs, bool) or not isinstance(jobs, (int, np.integer)) or jobs < 1:
        raise ValueError(f"jobs: expected an integer >= 1 (worker processes), got {jobs!r}")
    jobs = int(jobs)
    dev = resolve_device(device)
    plan = plan_methods(methods, preset=preset, device=dev, seed=seed, progress=progress, overrides=overrides,
                         method_options=method_options, compile=compile)
    unreadable: list[tuple[str, str, Exception]] = []  # pairs whose files could not be read, not yet recorded
    pairs_iter = lgg_pairs(data_root, protocol=protocol, slice=slice, channel=channel, limit=limit,
                           on_error=lambda m_id, f_id, exc: unreadable.append((m_id, f_id, exc)))

    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir: {out} is a file, not a folder; pass a folder for results.csv")
    out.mkdir(parents=True, exist_ok=True)
    with run_lock(out):
        return _run(out, data_root, pairs_iter, unreadable, plan, dev, jobs=jobs, protocol=protocol, slice=slice,
                    channel=channel, size=size, seed=seed, limit=limit, preset=preset, overrides=overrides,
                    method_options=method_options, command=command, on_row=on_row, compile=compile,
                    progress=progress, rerun_changed=rerun_changed)


def _run(out: Path, data_root: Path, pairs_iter: Iterable[Any], unreadable: list[tuple[str, str, Exception]],
         plan: list[Planned], dev: Any, *, jobs: int, protocol: str, slice: int | str,
         channel: str | int | None, size: int | None, seed: int, limit: int | None, preset: str | None,
         overrides: dict[str, Any] | None, method_options: dict[str, dict[str, Any]] | None, command: str | None,
         on_row: Callable[[dict[str, Any]], None] | None, compile: bool, progress: bool,
         rerun_changed: bool) -> Path:
    """The body of :func:`reproduce` once its output folder is locked."""
    from dipreg import __version__

    results = out / RESULTS_FILE
    previous = read_provenance(out / PROVENANCE_FILE)  # a damaged one is refused before anything is written
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
    warmed = _probe_size(plan, size) if size is not None else set()
    if rows is not None:
        if rerun_changed:
            check_run_keys(rows, expected, results)  # before anything is removed: another protocol is refused
            changed = config_changes(rows, plan, results)
            if changed:  # ran with a configuration that a preset no longer has: they run again
                methods = sorted({rows[i]["method"] for i in changed})
                rows = [r for i, r in enumerate(rows) if i not in changed]
                write_results(results, rows)
                say(f"{len(changed)} row(s) of {results} ran {methods} with another configuration than now; "
                    "removed, they run again")
        else:
            check_compatible(rows, expected, plan, results)
        failed = [r for r in rows if r["error"]]
        if failed:  # rerun them: the cause may be gone (a fixed file, another setting of the same method)
            rows = [r for r in rows if not r["error"]]
            write_results(results, rows)
            say(f"{len(failed)} failed row(s) of {results} removed; they run again")
    else:
        write_results(results)
        rows = []
    done = {(r["pair"], r["method"]) for r in rows}

    available = [m for m in plan if not m.needs_ants or _ants_available()]
    skipped = [m.name for m in plan if m not in available]
    if skipped:
        say(f"antspyx is not installed, so {skipped} will be skipped (pip install antspyx to run them)")

    commit = git_commit()
    write_provenance(out, previous, data_root=data_root, expected=expected, limit=limit, plan=plan,
                      skipped=skipped, preset=preset, overrides=overrides, device=dev, command=command,
                      commit=commit, resumed=len(rows), compile=compile, jobs=jobs)
    if rows:
        say(f"resuming {results}: {len(rows)} finished row(s) kept")

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="reproduce", unit="run", total=_count_pairs(data_root, protocol, limit) * len(available))

    def work() -> Iterator[tuple[Planned | None, Any]]:
        """``(method, pair)`` for every run still to do, in order; ``(None, row)`` for the error row of each
        method on a pair whose files cannot be read (so the run goes on to the next pair)."""
        def unreadable_rows() -> Iterator[tuple[None, dict[str, Any]]]:
            while unreadable:
                m_id, f_id, exc = unreadable.pop(0)
                say(f"cannot read the pair {m_id} -> {f_id}: {exc}")
                for method in list(available):
                    if (f"{m_id}->{f_id}", method.name) in done:
                        continue
                    row = _row_base(method, m_id, f_id, expected, dev, commit, __version__)
                    row.update({k: math.nan for k in METRICS}, seconds=math.nan, iterations=None, date=now(),
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

    def write(method: Planned | None, row: dict[str, Any] | None) -> None:
        """Append one finished row (the parent process only), or drop a method whose ants vanished."""
        if row is None:
            if method in available:
                say(f"antspyx could not be imported, so {method.name} is skipped")
                available.remove(method)
            return
        append_row(results, row)
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
                if method.can_warm_up and method.name not in warmed:
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


def _warm_up(method: Planned, pair: Any) -> None:
    try:
        method.warm_up(pair)
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
    dev = resolve_device(spec["device"])
    plan = plan_methods(spec["methods"], preset=spec["preset"], device=dev, seed=spec["seed"], progress=False,
                         overrides=spec["overrides"], method_options=spec["method_options"], compile=spec["compile"])
    _WORKER.update(spec, plan={m.name: m for m in plan}, dev=dev, warmed=set())


def _worker_run(name: str, pair: Any) -> dict[str, Any] | None:
    """One (pair, method) run in a worker process: the row :func:`_run_one` makes (``None``: ants vanished)."""
    from dipreg import __version__

    method = _WORKER["plan"][name]
    if method.can_warm_up and name not in _WORKER["warmed"]:
        _WORKER["warmed"].add(name)  # each process warms up once, untimed, as the serial run does
        _warm_up(method, pair)
    return _run_one(method, pair, _WORKER["expected"], _WORKER["dev"], _WORKER["commit"], __version__)


def _run_parallel(work: Iterator[tuple[Planned | None, Any]], jobs: int, spec: dict[str, Any],
                  write: Callable[[Planned | None, dict[str, Any] | None], None], results: Path) -> None:
    """Run ``work`` in ``jobs`` spawned worker processes; the parent writes the rows in the order of ``work``.

    At most ``2 * jobs`` items are in flight. On an interrupt or an error the rows already finished are written
    (without ``on_row``), the others are dropped and the workers are stopped, so a resumed run redoes only those.
    """
    import multiprocessing
    from collections import deque
    from concurrent.futures import Future, ProcessPoolExecutor

    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                               initargs=(spec,))
    queue: deque[tuple[Planned | None, Any]] = deque()
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
                    append_row(results, row)
            for proc in list((getattr(pool, "_processes", None) or {}).values()):  # do not wait for long runs
                proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


def _count_pairs(root: Path, protocol: str, limit: int | None) -> int:
    from dipreg.data import list_patients

    n = len(list_patients(root)) - (1 if protocol == "consecutive" else 0)
    return max(0, n if limit is None else min(n, int(limit)))


def _row_base(method: Planned, moving_id: str, fixed_id: str, expected: dict[str, str], dev: Any, commit: str,
              version: str) -> dict[str, Any]:
    return {"pair": f"{moving_id}->{fixed_id}", "moving_id": moving_id, "fixed_id": fixed_id, **expected,
            "method": method.name, "preset": method.label, "config": canonical(method.config),
            "dipreg_version": version, "git_commit": commit, "error": "",
            "device": "cpu" if method.needs_ants else str(dev)}


def _run_one(method: Planned, pair: Any, expected: dict[str, str], dev: Any, commit: str,
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
                   error=f"{type(exc).__name__}: {exc}".replace("\n", " "), date=now())
        say(f"{method.name} failed on {pair.id}: {row['error']}")
        return row
    row.update(row_metrics(result, pair))
    row.update(seconds=float(result.seconds), device=str(result.device), date=now(),
               iterations=int(result.info.get("iterations", len(result.history))))
    return row
