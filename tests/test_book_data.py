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
    from dipreg.experiments.steps import load_steps, rung_configs, stale_rungs

    folder = ROOT / "dipreg" / "data" / "book" / "paper_steps"
    prov = json.loads((folder / "provenance.json").read_text())
    rows = load_steps(folder)
    assert rows and {r["pair"] for r in rows} <= set(prov["pairs"])
    stale = stale_rungs(rows, prov["rungs"], rung_configs(prov["target"]))
    assert not stale, f"stale rungs {stale}: run python scripts/regenerate_stored.py (README, 'Layout')"
    assert not (folder / "reproduce.lock").exists()
    for rung in rung_configs(prov["target"]):  # only the expensive paper rung may lack pairs
        if rung != "paper":
            assert {r["pair"] for r in rows if r["step"] == rung} == set(prov["pairs"]), rung


def test_ladder_regeneration_finds_new_and_unfinished_rungs(regenerate_stored, tmp_path):
    """A rung or control new on the ladder, or on fewer pairs than the ladder's, is run again; the paper's rung
    (hours a pair) only when a killed run left it on fewer pairs, not when a finished run did."""
    import shutil

    folder = tmp_path / "paper_steps"
    shutil.copytree(ROOT / "dipreg" / "data" / "book" / "paper_steps", folder)
    prov_path, steps_path = folder / "provenance.json", folder / "steps.jsonl"
    prov, lines = json.loads(prov_path.read_text()), steps_path.read_text().splitlines()
    assert regenerate_stored._ladder_stale(folder)[1] == {}

    del prov["rungs"]["fixed input"]  # as if the rung had been added to the ladder after the run
    prov_path.write_text(json.dumps(prov))
    steps_path.write_text("\n".join(x for x in lines if json.loads(x)["step"] != "fixed input") + "\n")
    assert regenerate_stored._ladder_stale(folder)[1] == {"fixed input": "that are new on the ladder"}

    prov = json.loads((ROOT / "dipreg" / "data" / "book" / "paper_steps" / "provenance.json").read_text())
    prov_path.write_text(json.dumps(prov))
    for name, why in (("velocity", "that lack pairs"), ("affine map alone", "that lack pairs")):
        rows = [x for x in lines if json.loads(x)["step"] == name]
        steps_path.write_text("\n".join(x for x in lines if x not in rows[3:]) + "\n")
        assert regenerate_stored._ladder_stale(folder)[1] == {name: why}  # finished run or not
    paper = [x for x in lines if json.loads(x)["step"] == "paper"]
    steps_path.write_text("\n".join(x for x in lines if x not in paper[3:]) + "\n")
    prov["runs"][-1]["steps"] = ["paper"]
    prov_path.write_text(json.dumps(prov))
    assert regenerate_stored._ladder_stale(folder)[1] == {}  # the run finished: fewer pairs on purpose
    del prov["runs"][-1]["finished"]  # killed during the rung
    prov_path.write_text(json.dumps(prov))
    assert regenerate_stored._ladder_stale(folder)[1] == {"paper": "that an interrupted run left on fewer pairs"}


def test_every_stored_result_is_up_to_date_with_the_presets(regenerate_stored):
    """scripts/regenerate_stored.py --dry-run finds nothing to run again: the LGG runs, the ladder and the ablation
    grid (whose base must be today's cpu preset) all ran the configurations the presets give now."""
    regen = regenerate_stored
    names = regen.stored_names()
    assert len(names) >= 10 and regen.ABLATION in names and "paper_steps" in names
    for name in names:
        assert regen.pending(name) == "nothing", f"{name}: python scripts/regenerate_stored.py --only {name}"
