"""What the book's chapters share: the run profile (CPU or GPU), the device they use and the results
stored with the package for them (``stored``).

Book: every chapter starts with it (chapter "Preface" explains the profiles).

A chapter starts with ``profile = dipreg.teaching.book.setup()``: it picks the GPU when there is one, says so,
and returns the profile whose sizes the chapter uses. The CPU profile is small enough for the whole
book to build on a 2-core machine; the GPU profile runs the paper's settings. ``DIPREG_PROFILE=cpu``
or ``gpu`` in the environment overrides the choice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from dipreg.config import RegistrationConfig
from dipreg.presets import get_preset


@dataclass(frozen=True)
class BookProfile:
    """Sizes a chapter uses. ``name`` is ``"cpu"`` or ``"gpu"``; ``scale`` multiplies demo iteration counts."""

    name: str
    device: torch.device
    preset: str
    image_size: int
    scale: float

    @property
    def config(self) -> RegistrationConfig:
        """The registration preset of this profile."""
        return get_preset(self.preset)

    def iters(self, n: int) -> int:
        """A demo's iteration count ``n`` (given for the CPU profile) scaled for this profile."""
        return max(1, int(round(n * self.scale)))


def setup(seed: int = 0, verbose: bool = True) -> BookProfile:
    """Pick the device and profile, seed torch and numpy's legacy generator, and say what was chosen."""
    want = os.environ.get("DIPREG_PROFILE", "").lower()
    if want not in ("", "cpu", "gpu"):
        raise ValueError(f"DIPREG_PROFILE: expected 'cpu' or 'gpu', got {want!r}")
    gpu = torch.cuda.is_available() and want != "cpu"
    if want == "gpu" and not gpu:
        raise ValueError("DIPREG_PROFILE=gpu but no CUDA GPU is available")
    torch.manual_seed(seed)
    if gpu:
        prof = BookProfile("gpu", torch.device("cuda"), "gpu", 256, 4.0)
    else:
        prof = BookProfile("cpu", torch.device("cpu"), "cpu", 256, 1.0)
    if verbose:
        n = torch.get_num_threads()
        where = torch.cuda.get_device_name(0) if gpu else f"CPU ({n} thread{'s' if n != 1 else ''})"
        print(f"dipreg {__import__('dipreg').__version__}, torch {torch.__version__}: running on {where}, "
              f"profile '{prof.name}' (registration preset '{prof.preset}').")
    return prof


STORED = Path(__file__).parents[1] / "data" / "book"


def stored(name: str) -> Path:
    """The path of a result stored for the book, e.g. ``"lgg_local_cpu"`` (a ``dipreg reproduce`` output
    folder) or ``"ablation_sample.npz"``. They ship inside the package, so a chapter opened in Colab finds
    them too; ``dipreg/data/book/*.md`` and each run's ``provenance.json`` say how each was made."""
    path = STORED / name
    if not path.exists():
        have = sorted(p.name for p in STORED.iterdir()) if STORED.is_dir() else []
        raise FileNotFoundError(f"no stored book result {name!r} in {STORED}; stored: {have}")
    return path


class _Text:
    """A glued value shown as its text, without the quotes a ``str``'s repr would add."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def glue(name: str, value: object, fmt: str = "") -> str:
    """Make ``value``, formatted with ``fmt`` (e.g. ``".2f"``), available to the chapter's prose as
    ``{glue:text}`name```, so that every number in the text is the one this run computed, on any
    profile. Returns the text. In the book build this is MyST-NB's ``glue`` (nothing is shown); where
    MyST-NB is not installed (Colab) the value is printed instead, so the reader still sees it."""
    text = format(value, fmt)
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        print(f"[{name} = {text}]")
    else:
        myst_glue(name, _Text(text), display=False)
    return text
