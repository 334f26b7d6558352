"""The results stored for the book (dipreg/data/book/lgg_*) come from the current version of the preset they name.

Chapter 9 prints these files. When a preset changes, this test fails until they are regenerated with the
command their provenance.json records, so the book cannot describe one method and show another's numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import dipreg.teaching.book
from dipreg.config import RegistrationConfig
from dipreg.experiments.results import load_results
from dipreg.jsonutil import changed_settings
from dipreg.presets import get_preset

ROOT = Path(__file__).resolve().parents[1]
STORED = sorted(p.parent for p in (ROOT / "dipreg" / "data" / "book").glob("lgg_*/provenance.json"))


def test_the_book_has_its_stored_runs():
    assert {p.name for p in STORED} >= {"lgg_local_cpu", "lgg_local_cpu_adjacent", "lgg_local_cpu_prepost"}


@pytest.mark.parametrize("folder", STORED, ids=lambda p: p.name)
def test_stored_run_used_the_current_preset(folder):
    prov = json.loads((folder / "provenance.json").read_text())
    # the preset with the run's --set overrides (e.g. loss=lncc for the pre/post run that says so in its title)
    current = get_preset(prov["methods"]["dip"]["preset"]).replace(**prov.get("dip_overrides", {})).to_dict()
    # a field added after the run counts with its default, which reproduces the old behaviour
    defaults = RegistrationConfig().to_dict()
    fix = f"python scripts/regenerate_stored.py --only {folder.name} (README, 'Layout')"
    assert not changed_settings(prov["methods"]["dip"]["config"], current, defaults), fix
    rows = load_results(folder / "results.csv")
    dip = [r for r in rows if r["method"] == "dip"]
    assert dip and all(not r["error"] for r in rows)
    assert not any(changed_settings(json.loads(r["config"]), current, defaults) for r in dip), fix
    assert {r["protocol"] for r in rows} == {prov["protocol"]}


def test_stored_finds_the_book_results_and_names_the_choices():
    assert (dipreg.teaching.book.stored("lgg_local_cpu") / "results.csv").is_file()
    assert dipreg.teaching.book.stored("ablation_sample.npz").is_file()
    with pytest.raises(FileNotFoundError, match="ablation_sample.npz"):
        dipreg.teaching.book.stored("no_such_run")


def test_stored_ladder_used_the_current_rungs():
    """Chapter 10's table from the paper's method to the default (dipreg/data/book/paper_steps): every rung with
    rows ran the configuration the ladder gives it now, so the table cannot show an older default."""
    from dipreg.experiments.steps import load_steps, stale_rungs, step_configs

    folder = ROOT / "dipreg" / "data" / "book" / "paper_steps"
    prov = json.loads((folder / "provenance.json").read_text())
    rows = load_steps(folder)
    assert rows and {r["pair"] for r in rows} <= set(prov["pairs"])
    stale = stale_rungs(rows, prov["rungs"], dict(step_configs(prov["target"])))
    assert not stale, f"stale rungs {stale}: run python scripts/regenerate_stored.py (README, 'Layout')"
    assert not (folder / "reproduce.lock").exists()


def test_every_stored_result_is_up_to_date_with_the_presets(regenerate_stored):
    """scripts/regenerate_stored.py --dry-run finds nothing to run again: the LGG runs, the ladder and the ablation
    grid (whose base must be today's cpu preset) all ran the configurations the presets give now."""
    regen = regenerate_stored
    names = regen.stored_names()
    assert len(names) >= 10 and regen.ABLATION in names and "paper_steps" in names
    for name in names:
        assert regen.pending(name) == "nothing", f"{name}: python scripts/regenerate_stored.py --only {name}"
