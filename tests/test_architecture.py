"""The package's layers (dipreg/__init__.py): each module imports only from its own layer or the ones before it,
and no module is longer than 500 lines (issue 14)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dipreg"
LAYERS = ("core", "data", "methods", "experiments", "teaching", "cli")
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "data/book" not in p.as_posix())


def layer(module: str) -> str:
    """The layer of a dotted module name inside dipreg; ``dipreg`` itself, the public API, counts as a method."""
    parts = module.split(".")
    if module == "dipreg":
        return "methods"
    if parts[1:2] and parts[1] in LAYERS:
        return parts[1]
    return "core"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every dipreg module that ``path`` imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("dipreg")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dipreg") and not node.level:
            names.add(node.module)
            if node.module == "dipreg":  # from dipreg import data, methods
                names |= {f"dipreg.{a.name}" for a in node.names}
    return names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_a_module_imports_only_its_own_layer_and_the_ones_before(path):
    name = module_name(path)
    if name in ("dipreg", "dipreg.__main__"):
        return  # the package's front door and ``python -m dipreg`` import from every layer
    own = LAYERS.index(layer(name))
    later = sorted(m for m in imported(path) if LAYERS.index(layer(m)) > own)
    assert not later, f"{name} (layer {layer(name)}) imports from a later layer: {later}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_module_is_over_500_lines(path):
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 500
