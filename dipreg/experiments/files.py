"""Files of the experiments written safely: atomically replaced files and the lock of an output folder.

Book: chapter "Reproducing the brain MRI results" (a killed run loses nothing and resumes).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from dipreg.jsonutil import jsonable


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Write ``path`` through a file handle, all or nothing: the body writes ``path.tmp``, which is flushed,
    fsynced and then renamed over ``path``; on an error the temporary file is removed and ``path`` is left
    as it was. ``mode`` and ``open_kwargs`` go to :func:`open` (``"wb"`` for binary files)."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    try:
        with open(tmp, mode, **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON (numpy values as Python ones), atomically (:func:`atomic_write`)."""
    with atomic_write(path, encoding="utf-8") as fh:
        fh.write(json.dumps(obj, indent=2, default=jsonable) + "\n")


LOCK_FILE = "reproduce.lock"


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[Path]:
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
            if attempt or not holder.isdigit() or pid_running(int(holder)):
                who = f"process {holder}" if holder.isdigit() else "a run whose process id it does not hold"
                raise FileExistsError(
                    f"{out} is in use by another dipreg reproduce ({who}, lock file {lock}); two runs on one "
                    f"folder would both write every row. Wait for it to end, or pass another --out. If no run "
                    f"is using it, delete {lock}") from None
            say(f"taking over {lock}: the run that left it (process {holder}) is no longer running")
            lock.unlink(missing_ok=True)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(f"{os.getpid()}\n")
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)


def pid_running(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (another user's counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def say(msg: str, program: str = "dipreg reproduce") -> None:
    """A message of ``program`` (a long run: ``dipreg reproduce``, ``paper_to_ours.py``) on stderr."""
    print(f"{program}: {msg}", file=sys.stderr, flush=True)
