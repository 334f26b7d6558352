"""The former home of the reproduction, kept so that code and notebooks importing ``dipreg.reproduce`` run.

Book: chapter "Reproducing the brain MRI results". New code imports from :mod:`dipreg.experiments`:
:mod:`~dipreg.experiments.runner` (the run), :mod:`~dipreg.experiments.results` (the results file),
:mod:`~dipreg.experiments.provenance` and :mod:`~dipreg.experiments.report`.
"""

from dipreg.experiments.provenance import PROVENANCE_FILE, cpu_model, git_commit, machine_info, versions
from dipreg.experiments.report import format_summary, paper_table, provenance_lines, summarize_results
from dipreg.experiments.results import COLUMNS, METRICS, RESULTS_FILE, load_results
from dipreg.experiments.runner import DEFAULT_METHODS, reproduce

__all__ = [
    "COLUMNS",
    "DEFAULT_METHODS",
    "METRICS",
    "PROVENANCE_FILE",
    "RESULTS_FILE",
    "cpu_model",
    "format_summary",
    "git_commit",
    "load_results",
    "machine_info",
    "paper_table",
    "provenance_lines",
    "reproduce",
    "summarize_results",
    "versions",
]
