"""Write the student edition of the chapters: the same notebooks without the exercise solutions.

    python scripts/student_notebooks.py               # student/NN_name.ipynb, the committed student edition
    python scripts/student_notebooks.py OUT_DIR       # OUT_DIR/NN_name.ipynb for every chapter
    python scripts/student_notebooks.py --check       # exit 1 when student/ is not what the chapters give

Removed: code cells tagged ``solution``, everything between a ``{solution-start}`` and its
``{solution-end}`` directive (code cells included) and every ``{solution}`` block. Exercises, their stub
cells and the checks stay, so a student can work through a chapter in Jupyter or Colab without the answers
one scroll away. ``bash scripts/build_book.sh --student`` writes them next to the student HTML; the
repository keeps them in ``student/`` so that they open in Colab from the course plan's links.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDENT = ROOT / "student"
FENCE = re.compile(r"^(`{3,}|:{3,})\{(solution|solution-start|solution-end)\}")


def _skip_directive(lines: list[str], i: int, fence: str) -> int:
    """Index just past the directive that opens at ``lines[i]`` (its closing fence line)."""
    j = i + 1
    while j < len(lines) and lines[j].strip() != fence:
        j += 1
    return j + 1


def strip_solutions(nb: dict) -> dict:
    """The notebook without its solutions (see the module docstring); raises ValueError on an unclosed
    ``{solution-start}``."""
    cells, inside = [], False
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            if not inside and "solution" not in cell.get("metadata", {}).get("tags", []):
                cells.append(cell)
            continue
        lines = "".join(cell["source"]).split("\n")
        kept, i = [], 0
        while i < len(lines):
            m = FENCE.match(lines[i])
            if m:
                kind = m.group(2)
                if kind == "solution-start":
                    inside = True
                elif kind == "solution-end":
                    inside = False
                i = _skip_directive(lines, i, m.group(1))
                continue
            if not inside:
                kept.append(lines[i])
            i += 1
        text = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip("\n")
        if text.strip():
            cells.append({**cell, "source": text})
    if inside:
        raise ValueError("a {solution-start} has no {solution-end}")
    return {**nb, "cells": cells}


def student_edition() -> dict[str, str]:
    """``{file name: notebook text}`` of the student edition of every chapter."""
    return {path.name: json.dumps(strip_solutions(json.loads(path.read_text())), indent=1, ensure_ascii=False) + "\n"
            for path in sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))}


def stale(out: Path = STUDENT) -> list[str]:
    """The student notebooks in ``out`` that are missing, out of date or no longer a chapter."""
    want = student_edition()
    have = {p.name for p in out.glob("*.ipynb")} if out.is_dir() else set()
    bad = [name for name, text in want.items() if not (out / name).exists() or (out / name).read_text() != text]
    return sorted(bad + [name for name in have - set(want)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, nargs="?", default=STUDENT,
                        help="folder for the student notebooks (created if missing; default: student/)")
    parser.add_argument("--check", action="store_true", help="only report student notebooks that are out of date")
    args = parser.parse_args(argv)
    if args.check:
        bad = stale(args.out)
        if bad:
            print("student notebooks out of date (run python scripts/student_notebooks.py):", *bad, sep="\n  ")
            return 1
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    want = student_edition()
    for name, text in want.items():
        (args.out / name).write_text(text)
    for extra in set(p.name for p in args.out.glob("*.ipynb")) - set(want):
        (args.out / extra).unlink()
    print(f"student notebooks: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
