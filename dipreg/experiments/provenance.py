"""Where and how an experiment ran: package versions, the machine, the git commit, and ``provenance.json``.

Book: chapter "Reproducing the brain MRI results" states the provenance of every stored result.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dipreg.experiments.files import write_json
from dipreg.experiments.results import COLUMNS, RESULTS_FILE

if TYPE_CHECKING:
    from dipreg.methods import Planned

PROVENANCE_FILE = "provenance.json"


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


ISA_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")
"""Environment variables that limit the instruction set PyTorch's CPU kernels use."""


def cpu_vector_isa() -> str | None:
    """The widest x86 vector instruction set the CPU offers, ``"avx512"``, ``"avx2"`` or ``"avx"`` (from
    /proc/cpuinfo's flags; ``"other"`` when none of them, ``None`` when there is no /proc/cpuinfo). oneDNN, which
    runs PyTorch's CPU convolutions, picks its kernels by it, so the last digits of a CPU result differ with it
    unless :data:`ISA_VARIABLES` limit it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            flags = next((set(line.split(":", 1)[1].split()) for line in fh if line.startswith("flags")), set())
    except OSError:
        return None
    return next((name for name, flag in (("avx512", "avx512f"), ("avx2", "avx2"), ("avx", "avx")) if flag in flags),
                "other")


def machine_info() -> dict[str, Any]:
    """Where this runs: CPU model, the widest vector instruction set it offers (:func:`cpu_vector_isa`), the one
    PyTorch's own kernels use (``cpu_capability``), any :data:`ISA_VARIABLES` set, cores, torch threads, the CUDA
    GPU (if any), OS, Python, torch. The instruction set changes the last digits of a CPU result."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_model(), "cpu_isa": cpu_vector_isa(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "isa_limits": {k: os.environ[k] for k in ISA_VARIABLES if k in os.environ},
            "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": gpu, "cuda": torch.version.cuda if gpu else None, "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}


def git_commit() -> str:
    """The commit of the repository dipreg is imported from (``+dirty`` when it has changes), or ``""``."""
    repo = Path(__file__).resolve().parents[2]
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


def now() -> str:
    """The local date and time with its UTC offset, to the second (ISO 8601)."""
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")

def read_provenance(path: Path) -> dict[str, Any]:
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


def write_provenance(out: Path, previous: dict[str, Any], *, data_root: Path, expected: dict[str, str],
                     limit: int | None, plan: list[Planned], skipped: list[str], preset: str | None,
                     overrides: dict[str, Any] | None, device: Any, command: str | None, commit: str, resumed: int,
                     compile: bool, jobs: int) -> None:
    """Write ``out/provenance.json``: the data set, the protocol, each method's preset and configuration (those of
    ``previous`` runs kept, this run's replacing them), and the runs so far (``previous["runs"]``, from
    :func:`read_provenance`) with this one appended."""
    from dipreg import __version__

    path = out / PROVENANCE_FILE
    run = {
        "date": now(),
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
        # the methods of earlier runs stay recorded: a resumed run may run only some of them
        "methods": {**(previous.get("methods") if isinstance(previous.get("methods"), dict) else {}),
                    **{m.name: {"preset": m.label, "config": m.config} for m in plan}},
        "skipped_methods": skipped,
        "dip_preset_argument": preset,
        "dip_overrides": dict(overrides or {}),
        "dipreg_version": __version__,
        "results": RESULTS_FILE,
        "columns": list(COLUMNS),
        "runs": runs,
    }
    write_json(path, prov)
