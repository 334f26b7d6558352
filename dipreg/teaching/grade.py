"""Grade a student's notebook offline: ``python -m dipreg grade NOTEBOOK.ipynb [--json OUT]``.

The grader finds the book's code exercises in the notebook by their labels (``:label: ex-warp-3`` in an
``{exercise}`` block), takes the student's function for each from the notebook's code, and runs the
exercise's check from :mod:`dipreg.teaching.checks` on it, as the chapter does, but collecting a
:class:`dipreg.teaching.checks.CheckResult` (passed, points, diagnosis) instead of printing.

What is run: the notebook's ``import`` statements and its top-level ``def`` and ``class`` statements, in
the order of the cells, so a later definition replaces an earlier one as it would in "Run all". Nothing
else is executed: no registration, no download, no figure, so grading a chapter takes seconds, and a
function that reads a global variable of the notebook (rather than its arguments) fails with a NameError
that the diagnosis names. Cells tagged ``solution`` are skipped, so the instructor's notebooks grade the
functions their stubs define (use ``include_solutions=True`` to grade the solutions themselves).

When the notebook was executed, cells whose stored output is an error are listed too.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

from dipreg.teaching.checks import CheckResult, result


@dataclass(frozen=True)
class Exercise:
    """A code exercise of the book: its label, the function the student writes, its check and points."""

    label: str
    function: str
    check: str  # "module:function" under dipreg.teaching.checks
    points: float
    kwargs: dict[str, Any] = field(default_factory=dict)
    needs: Callable[[], tuple] | None = None  # extra positional arguments of the check after the function

    def run(self, fn: Any) -> CheckResult:
        module, name = self.check.split(":")
        check = getattr(import_module(f"dipreg.teaching.checks.{module}"), name)
        extra = self.needs() if self.needs else ()
        return result(check, fn, *extra, points=self.points, name=self.label, **self.kwargs)


def _ablation_grid() -> tuple:
    from dipreg.experiments.ablation import load_grid
    from dipreg.teaching.book import stored

    return (load_grid(stored("ablation_sample.npz")),)


# Every graded exercise, in book order. Points weigh the work: the core of the method counts more.
EXERCISES: tuple[Exercise, ...] = (
    Exercise("ex-problem-1", "my_lncc", "problem:check_lncc", 2, {"seed": 0}),
    Exercise("ex-warp-1", "bilinear_sample", "warping:check_bilinear_sample", 2, {"seed": 0}),
    Exercise("ex-warp-3", "pixel_to_normalized", "warping:check_pixel_to_normalized", 1, {"seed": 0}),
    Exercise("ex-warp-4", "warp", "warping:check_warp", 3, {"seed": 0}),
    Exercise("ex-warp-5", "ssd_gradient", "warping:check_ssd_gradient", 2, {"seed": 0}),
    Exercise("ex-classical-1", "my_diffusion", "classical:check_diffusion", 2, {"seed": 0}),
    Exercise("ex-classical-2", "my_bending", "classical:check_bending", 2, {"seed": 0}),
    Exercise("ex-dip-psnr", "my_psnr", "prior:check_psnr", 2, {"seed": 0}),
    Exercise("ex-dip-discrepancy", "my_discrepancy_stop", "prior:check_discrepancy_stop", 2, {"seed": 0}),
    Exercise("ex-gen-scale", "my_scale_forward", "generator:check_scale_forward", 3, {"seed": 0}),
    Exercise("ex-gen-rf", "my_receptive_field", "generator:check_receptive_field", 2, {"seed": 0}),
    Exercise("ex-gen-init", "my_init_normal", "generator:check_init_normal", 2, {"seed": 0}),
    Exercise("ex-reg-loss", "my_registration_loss", "dip:check_registration_loss", 2, {"seed": 0}),
    Exercise("ex-reg-expv", "my_integrate_velocity", "dip:check_integrate_velocity", 3, {"seed": 0}),
    Exercise("ex-reg-stop", "my_stopping_iteration", "dip:check_stopping_iteration", 2, {"seed": 0}),
    Exercise("ex-reg-grid", "my_upsample_field", "dip:check_upsample_field", 2, {"seed": 0}),
    Exercise("ex-reg-loop", "my_dip_loop", "dip:check_dip_loop", 3, {"seed": 0}),
    Exercise("ex-eval-detj", "my_jacobian_determinant", "evaluation:check_jacobian_determinant", 2, {"seed": 0}),
    Exercise("ex-eval-fold", "my_folded_fraction", "evaluation:check_folded_fraction", 2, {"seed": 0}),
    Exercise("ex-eval-dice", "my_dice", "evaluation:check_dice", 2, {"seed": 0}),
    Exercise("ex-eval-epe", "my_endpoint_error", "evaluation:check_endpoint_error", 2, {"seed": 0}),
    Exercise("ex-abl-1", "best_setting", "ablation:check_best_setting", 1, {}, _ablation_grid),
)
BY_LABEL = {e.label: e for e in EXERCISES}

LABEL = re.compile(r"^:label:\s*(\S+)", re.M)
EXERCISE_BLOCK = re.compile(r"^(`{3,}|:{3,})\{exercise\}[^\n]*\n(.*?)^\1\s*$", re.M | re.S)


@dataclass
class Report:
    """The grade of one notebook: one :class:`CheckResult` per exercise found, and the notebook's errors."""

    notebook: str
    results: list[CheckResult]
    errors: list[str]

    @property
    def points(self) -> float:
        return sum(r.points for r in self.results)

    @property
    def max_points(self) -> float:
        return sum(r.max_points for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {"notebook": self.notebook, "points": self.points, "max_points": self.max_points,
                "results": [r.to_dict() for r in self.results], "errors": self.errors}

    def table(self) -> str:
        """The report as text, one line per exercise and its diagnosis below a failed one."""
        lines = [f"{self.notebook}: {self.points:g} / {self.max_points:g} points"]
        for r in self.results:
            lines.append(f"  {r.name:20s} {r.points:g}/{r.max_points:g}  {r.status}")
            if not r.passed:
                lines.append(f"      {r.diagnosis}")
        if not self.results:
            lines.append("  (no graded exercise found in this notebook)")
        for e in self.errors:
            lines.append(f"  note: {e}")
        return "\n".join(lines)


def exercise_labels(nb: dict) -> list[str]:
    """The labels of the ``{exercise}`` blocks in the notebook's Markdown cells, in order."""
    labels = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            for block in EXERCISE_BLOCK.finditer(_source(cell)):
                m = LABEL.search(block.group(2))
                if m:
                    labels.append(m.group(1))
    return labels


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def definitions(nb: dict, include_solutions: bool = False) -> tuple[dict[str, Any], list[str]]:
    """Execute the notebook's imports, functions and classes (see the module docstring) and return the
    namespace and the problems met (a cell that does not parse, an import that fails)."""
    namespace: dict[str, Any] = {"__name__": "__graded__"}
    problems: list[str] = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        if not include_solutions and "solution" in cell.get("metadata", {}).get("tags", []):
            continue
        # IPython magics and shell escapes are not Python: `pass` in their place keeps blocks and line numbers
        code = "\n".join(line[: len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("%", "!"))
                         else line for line in _source(cell).split("\n"))
        try:
            tree = ast.parse(code)
        except SyntaxError as exc:
            problems.append(f"cell {i} does not parse: {exc.msg} (line {exc.lineno})")
            continue
        for node in tree.body:
            if not isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)):
                continue
            module = ast.Module(body=[node], type_ignores=[])
            try:
                with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    exec(compile(module, f"<cell {i}>", "exec"), namespace)
            except Exception as exc:
                problems.append(f"cell {i}: {type(exc).__name__}: {exc}")
    return namespace, problems


def _stored_errors(nb: dict) -> list[str]:
    found = []
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            if out.get("output_type") == "error":
                found.append(f"cell {i} ended with {out.get('ename', 'an error')}: {out.get('evalue', '')}"[:300])
    return found


def grade_notebook(path: str | Path, include_solutions: bool = False) -> Report:
    """Grade the notebook at ``path`` (see the module docstring)."""
    path = Path(path)
    nb = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(nb, dict) or "cells" not in nb:
        raise ValueError(f"{path} is not a Jupyter notebook")
    labels = [label for label in exercise_labels(nb) if label in BY_LABEL]
    namespace, problems = definitions(nb, include_solutions) if labels else ({}, [])
    results = []
    for label in labels:
        ex = BY_LABEL[label]
        fn = namespace.get(ex.function)
        if fn is None:
            results.append(CheckResult(label, False, 0.0, float(ex.points),
                                       f"no function named {ex.function!r} in the notebook: keep the stub's "
                                       "name and signature", "missing"))
            continue
        results.append(ex.run(fn))
    return Report(str(path), results, problems + _stored_errors(nb))


def main(notebooks: list[str], json_out: str | None = None, include_solutions: bool = False) -> int:
    """The ``grade`` command: print each notebook's report; write them all as JSON to ``json_out``."""
    reports = [grade_notebook(nb, include_solutions) for nb in notebooks]
    for rep in reports:
        print(rep.table())
    if json_out:
        data = [r.to_dict() for r in reports]
        Path(json_out).write_text(json.dumps(data[0] if len(data) == 1 else data, indent=1) + "\n")
    return 0
