"""Experiments: running the methods on many pairs and keeping every number with where it came from.

Book: chapters "Reproducing the brain MRI results" (:mod:`dipreg.experiments.runner`) and "Ablations"
(:mod:`dipreg.experiments.ablation`).

* :mod:`~dipreg.experiments.runner`: every method on every LGG pair, resumable (``dipreg reproduce``).
* :mod:`~dipreg.experiments.results`: the ``results.csv`` schema, reading it back and writing rows.
* :mod:`~dipreg.experiments.provenance`: versions, machine, git commit, ``provenance.json``.
* :mod:`~dipreg.experiments.report`: mean +- SD per method, the paper's Table 1, the provenance in words.
* :mod:`~dipreg.experiments.ablation`: one setting changed at a time, stored as a grid.
* :mod:`~dipreg.experiments.steps`: the ladder from the paper's method to the default, one change per rung.
* :mod:`~dipreg.experiments.files`: atomic writes and the lock of an output folder.

The methods themselves come from one registry, :mod:`dipreg.methods`.
"""

from dipreg.experiments.report import format_summary, paper_table, provenance_lines, summarize_results
from dipreg.experiments.results import COLUMNS, METRICS, RESULTS_FILE, load_results
from dipreg.experiments.runner import DEFAULT_METHODS, reproduce

__all__ = [
    "COLUMNS",
    "DEFAULT_METHODS",
    "METRICS",
    "RESULTS_FILE",
    "format_summary",
    "load_results",
    "paper_table",
    "provenance_lines",
    "reproduce",
    "summarize_results",
]
