"""The book's shape: every chapter in the ToC, install cell first, no outputs, exercises present."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import student_notebooks  # noqa: E402
import sync_notebooks  # noqa: E402

CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))


def toc_files() -> list[str]:
    return re.findall(r"(?:root|file):\s*(\S+)", (ROOT / "_toc.yml").read_text())


def test_toc_lists_every_chapter_and_files_exist():
    listed = toc_files()
    for nb in CHAPTERS:
        assert f"book/{nb.stem}" in listed, nb.name
    for entry in listed:
        assert list(ROOT.glob(entry + ".*")), f"_toc.yml names {entry}, which does not exist"
    assert len(CHAPTERS) >= 8


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_notebook_starts_with_install_cell_and_has_no_outputs(path):
    nb = json.loads(path.read_text())
    first = nb["cells"][0]
    assert first["cell_type"] == "code" and "google.colab" in "".join(first["source"])
    assert "".join(first["source"]) == sync_notebooks.install_source()
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name} carries outputs"


@pytest.mark.parametrize("path", [p for p in CHAPTERS if "02" <= p.name[:2] <= "08"], ids=lambda p: p.name)
def test_teaching_chapters_have_two_exercises_with_solutions(path):
    text = path.read_text()
    assert len(re.findall(r"\{exercise\}", text)) >= 2, path.name
    assert len(re.findall(r"\{solution(-start)?\}", text)) >= 2, path.name


def test_sync_check_passes():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "sync_notebooks.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_sync_gives_every_cell_a_unique_id():
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "a"},
                    {"cell_type": "code", "id": "cell-1", "metadata": {}, "outputs": [1], "source": "b"},
                    {"cell_type": "code", "metadata": {}, "outputs": [], "source": "c"}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 4}
    out = sync_notebooks.normalise(nb, "pass")
    ids = [c["id"] for c in out["cells"]]
    assert ids == ["colab-install", "cell-1-1", "cell-1", "cell-3"]
    assert out["nbformat_minor"] == 5 and out["cells"][2]["outputs"] == []
    sol = {"cell_type": "code", "id": "s", "metadata": {"tags": ["solution"]}, "outputs": [], "source": "x = 1"}
    hidden = sync_notebooks.normalise({"cells": [sol], "metadata": {}}, "pass")["cells"][1]["metadata"]
    assert hidden["jupyter"] == {"source_hidden": True} and hidden["cellView"] == "form"
    assert "jupyter" not in out["cells"][2]["metadata"]  # other code cells stay open


def test_build_config_fails_on_cell_errors():
    cfg = (ROOT / "_config.yml").read_text()
    assert "nb_execution_raise_on_error: true" in cfg
    assert re.search(r"branch:\s*main", cfg)
    assert "colab_url" in cfg and "sphinx_exercise" in cfg


def _one_page_book(tmp_path: Path, cells: list, hide_solutions: bool) -> Path:
    import shutil

    import nbformat

    cfg = (ROOT / "_config.yml").read_text()
    cfg = re.sub(r"bibtex_bibfiles:\n(  - .*\n)+", "", cfg)
    cfg = cfg.replace("hide_solutions: false", f"hide_solutions: {str(hide_solutions).lower()}")
    (tmp_path / "_config.yml").write_text(cfg)
    shutil.copytree(ROOT / "book" / "_ext", tmp_path / "book" / "_ext")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: page\n")
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "page.ipynb")
    return tmp_path


@pytest.mark.parametrize("hide", [False, True])
def test_student_build_drops_gated_solutions(tmp_path, hide):
    import shutil

    import nbformat

    jb = shutil.which("jupyter-book") or str(Path(sys.executable).with_name("jupyter-book"))
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    cells = [md("# Page"), md("```{exercise}\n:label: ex-one\nAdd one.\n```"),
             md("```{solution-start} ex-one\n:class: dropdown\n```"), code("print('SECRET' + 'ANSWER')"),
             md("```{solution-end}\n```"), md("After the solution.")]
    book = _one_page_book(tmp_path, cells, hide)
    proc = subprocess.run([jb, "build", str(book)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    html = (book / "_build" / "html" / "page.html").read_text()
    assert "Add one." in html and "After the solution." in html
    assert ("SECRETANSWER" in html) is (not hide)


def test_a_failing_cell_fails_the_build(tmp_path):
    """Build a one-page book with the project's _config.yml and a cell that raises: the build must fail."""
    import shutil

    import nbformat

    jb = shutil.which("jupyter-book") or str(Path(sys.executable).with_name("jupyter-book"))
    cells = [nbformat.v4.new_markdown_cell("# Broken"), nbformat.v4.new_code_cell("raise RuntimeError('boom')")]
    book = _one_page_book(tmp_path, cells, hide_solutions=False)
    proc = subprocess.run([jb, "build", str(book)], capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "boom" in proc.stdout + proc.stderr


def _md(text):
    return {"cell_type": "markdown", "metadata": {}, "source": text}


def _code(text, tags=()):
    return {"cell_type": "code", "metadata": {"tags": list(tags)}, "outputs": [], "source": text}


def test_student_edition_drops_every_form_of_solution():
    nb = {"cells": [
        _md("intro\n\n```{exercise}\n:label: a\n\nDo it.\n```\n\n```{solution-start} a\n:class: dropdown\n```"),
        _code("answer = 1"),
        _md("The answer explained."),
        _md("```{solution-end}\n```\n\nBetween.\n\n```{solution} b\n:class: dropdown\n\nSecret.\n```\n\nAfter."),
        _code("stub()"), _code("tagged_answer()", tags=["solution", "hide-input"])], "metadata": {}}
    out = student_notebooks.strip_solutions(nb)
    texts = ["".join(c["source"]) for c in out["cells"]]
    assert texts == ["intro\n\n```{exercise}\n:label: a\n\nDo it.\n```", "Between.\n\nAfter.", "stub()"]
    with pytest.raises(ValueError, match="solution-end"):
        student_notebooks.strip_solutions({"cells": [_md("```{solution-start} a\n```")], "metadata": {}})


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_student_chapters_keep_exercises_and_stubs_but_no_solutions(path):
    nb = json.loads(path.read_text())
    out = student_notebooks.strip_solutions(nb)
    text = json.dumps(out)
    assert "{solution" not in text and not any("solution" in c["metadata"].get("tags", []) for c in out["cells"])
    assert text.count("{exercise}") == json.dumps(nb).count("{exercise}")
    stubs = [c for c in nb["cells"] if c["cell_type"] == "code" and "NotImplementedError" in "".join(c["source"])
             and "solution" not in c["metadata"].get("tags", [])]
    assert all(c in out["cells"] for c in stubs)
