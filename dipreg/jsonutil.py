"""JSON helpers shared by the command line and the experiments (results file, provenance, ablation grid)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def finite(obj: Any) -> Any:
    """Replace NaN/inf floats (also nested in dicts, lists and tuples) by None, so the JSON is standard."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def jsonable(obj: Any) -> Any:
    """``default=`` for json.dump: numpy scalars and arrays become Python values, sets lists, anything else a
    string."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def canonical(obj: Any) -> str:
    """``obj`` as compact JSON with sorted keys: the same settings always give the same text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=jsonable)


def changed_settings(recorded: dict[str, Any], current: dict[str, Any], defaults: dict[str, Any]) -> list[str]:
    """The keys whose value in ``recorded`` (settings stored with an earlier run) differs from ``current``, sorted.

    A key that ``recorded`` lacks counts with its value in ``defaults``: a field added to the settings after
    the run reproduces, at its default, the behaviour from before it existed. Values are compared as JSON
    (tuples and lists alike).
    """
    old = json.loads(canonical({**defaults, **recorded}))
    new = json.loads(canonical(current))
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
