"""Keep the book's notebooks in shape: the Colab install cell first, no outputs, solution code collapsed.

The install cell is tagged ``remove-cell``: it runs first in Colab and in the build, but the HTML page
starts with the chapter's title.

    python scripts/sync_notebooks.py          # rewrite book/*.ipynb in place
    python scripts/sync_notebooks.py --check  # exit 1 and name the notebooks that would change

The install cell is generated from ``repository.url`` and ``repository.branch`` in ``_config.yml``,
so the repository address is configured once.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TAG = "colab-install"
HIDE = "remove-cell"  # MyST-NB executes the cell but leaves it out of the HTML page
SOLUTION = "solution"


def install_source(config: Path = ROOT / "_config.yml") -> str:
    """The source of the first cell of every chapter."""
    text = config.read_text()
    url = re.search(r"^\s+url:\s*(\S+)", text, re.M).group(1)
    branch = re.search(r"^\s+branch:\s*(\S+)", text, re.M).group(1)
    return (
        "# Colab only: install dipreg from the repository (torch is already there). Elsewhere this does nothing:\n"
        "# install the project with the README's commands instead.\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        f'    %pip install -q "dipreg @ git+{url}@{branch}"'
    )


def normalise(nb: dict, install: str) -> dict:
    """Return the notebook with the install cell first (hidden in the HTML), every output stripped, solution
    code cells collapsed (Jupyter's ``source_hidden``, Colab's form view) and every cell given an id
    (nbformat 4.5 requires one; a missing id gets ``cell-<index>``, unique within the notebook)."""
    cells = [c for c in nb["cells"] if TAG not in c.get("metadata", {}).get("tags", [])]
    first = {"cell_type": "code", "execution_count": None, "id": "colab-install",
             "metadata": {"tags": [TAG, HIDE]}, "outputs": [], "source": install.splitlines(keepends=True)}
    taken = {c["id"] for c in cells if "id" in c} | {first["id"]}
    for i, c in enumerate(cells, start=1):
        if c["cell_type"] == "code":
            c["outputs"], c["execution_count"] = [], None
            if SOLUTION in c.get("metadata", {}).get("tags", []):  # collapsed in Jupyter and Colab
                c["metadata"].update(jupyter={"source_hidden": True}, cellView="form")
        if "id" not in c:
            cid, k = f"cell-{i}", 0
            while cid in taken:
                k += 1
                cid = f"cell-{i}-{k}"
            c["id"] = cid
            taken.add(cid)
    nb["nbformat"], nb["nbformat_minor"] = 4, max(5, nb.get("nbformat_minor", 5))
    nb["cells"] = [first] + cells
    nb.setdefault("metadata", {})["kernelspec"] = {"display_name": "Python 3", "language": "python",
                                                   "name": "python3"}
    nb["metadata"].setdefault("accelerator", "GPU")
    nb["metadata"].setdefault("colab", {"provenance": []})
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report notebooks that are out of shape")
    args = parser.parse_args(argv)
    install = install_source()
    stale = []
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        before = path.read_text()
        after = json.dumps(normalise(json.loads(before), install), indent=1, ensure_ascii=False) + "\n"
        if after != before:
            stale.append(path.relative_to(ROOT))
            if not args.check:
                path.write_text(after)
    if args.check and stale:
        print("out of shape (run python scripts/sync_notebooks.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
