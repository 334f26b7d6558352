"""The ladder from the paper's method to the default (dipreg.experiments.steps): configs, resume, summary."""

import json

import pytest

import dipreg.experiments.steps as steps
from dipreg.config import RegistrationConfig
from dipreg.data import tissue_pairs
from dipreg.presets import get_preset

TINY = RegistrationConfig(down=(8, 8), up=(8, 8), skip=2, in_channels=4, readout_draws=1, iterations=2)


def test_ladder_starts_at_paper_and_ends_at_the_target():
    ladder = steps.step_configs("cpu")
    assert [n for n, _ in ladder] == [s[0] for s in steps.STEPS]
    assert ladder[0][1] == get_preset("paper")
    last, cpu = ladder[-1][1].to_dict(), get_preset("cpu").to_dict()
    last.pop("preset"), cpu.pop("preset")
    assert last == cpu
    for (_, a), (name, b) in zip(ladder, ladder[1:], strict=False):
        assert a != b, f"rung {name!r} changes nothing"


def test_controls_are_the_target_with_a_part_taken_away():
    configs, cpu = steps.rung_configs("cpu"), get_preset("cpu")
    assert list(configs) == [s[0] for s in steps.STEPS] + [c[0] for c in steps.CONTROLS]
    for name, fields, _ in steps.CONTROLS:
        got, want = configs[name].to_dict(), cpu.replace(**fields).to_dict()
        got.pop("preset"), want.pop("preset")
        assert got == want, name
    assert configs["stage without the network"].iterations == 1 and cpu.detail_steps > 0
    assert configs["affine map alone"].detail_steps == 0 and cpu.prealign == "affine"


def test_names_fit_the_command_line():
    """scripts/paper_to_ours.py --steps takes comma-separated names."""
    assert all("," not in name for name, _, _ in steps.STEPS + steps.CONTROLS)


def test_a_departure_no_rung_names_is_refused(monkeypatch):
    monkeypatch.setattr(steps, "STEPS", tuple(s for s in steps.STEPS if s[0] != "velocity"))
    with pytest.raises(ValueError, match="integrate"):
        steps.step_configs("cpu")


def test_run_resumes_and_summarises(tmp_path, monkeypatch, one_thread):
    ladder = [(s[0], TINY.replace(iterations=1 + i % 2)) for i, s in enumerate(steps.STEPS)]
    names = [s[0] for s in steps.STEPS + steps.CONTROLS]
    monkeypatch.setattr(steps, "step_configs", lambda target="cpu": ladder)
    pairs = [p.resized(32) for p in tissue_pairs("held-out")[:2]]
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="unknown rung"):
        steps.run_steps(pairs, out, steps=["paper", "nonsense"])
    path = steps.run_steps(pairs, out, steps=["fixed border", "paper"])
    rows = steps.load_steps(out)
    assert [(r["step"], r["pair"]) for r in rows] == [(s, p.id) for s in ("fixed border", "paper") for p in pairs]
    assert all(0 <= r["label_dice_after"] <= 1 and r["iterations"] >= 1 for r in rows)
    # a killed run leaves a last line cut short: it is skipped and that row runs again
    path.write_text(path.read_text(encoding="utf-8") + '{"step": "velo', encoding="utf-8")
    assert len(steps.load_steps(out)) == 4
    path.write_text("\n".join(path.read_text(encoding="utf-8").splitlines()[:4]) + "\n", encoding="utf-8")
    steps.run_steps(pairs, out)  # everything: only the missing rows run
    rows = steps.load_steps(path)
    assert len(rows) == len(names) * len(pairs)
    assert len({(r["step"], r["pair"]) for r in rows}) == len(rows)
    prov = json.loads((out / "provenance.json").read_text(encoding="utf-8"))
    assert len(prov["runs"]) == 2 and prov["pairs"] == [p.id for p in pairs] and "finished" in prov["runs"][-1]
    fig = steps.load_figure(out)
    assert set(fig) == {"moving", "fixed", *(f"{n}/{k}" for n, _ in ladder for k in ("warped", "detj"))}
    assert fig["paper/detj"].shape == (32, 32) and fig["moving"].shape == (32, 32)
    summary = steps.summarize_steps(rows)
    assert [s["step"] for s in summary] == names and all(s["n"] == 2 for s in summary)
    dice = [r["label_dice_after"] for r in rows if r["step"] == "paper"]
    assert summary[0]["label_dice_after"] == pytest.approx(sum(dice) / 2)


def test_a_damaged_line_inside_the_file_names_it(tmp_path):
    p = tmp_path / steps.STEPS_FILE
    p.write_text('{"step": "paper", "pair": "a"}\nnot json\n{"step": "paper", "pair": "b"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        steps.load_steps(tmp_path)


def test_rows_of_a_changed_rung_are_refused(tmp_path, monkeypatch, one_thread):
    names = [s[0] for s in steps.STEPS]
    ladder = [(n, TINY) for n in names]
    monkeypatch.setattr(steps, "step_configs", lambda target="cpu": ladder)
    pairs = [tissue_pairs("held-out")[0].resized(32)]
    steps.run_steps(pairs, tmp_path, steps=["paper"])
    ladder[0] = ("paper", TINY.replace(lr=0.5))
    with pytest.raises(ValueError, match="'paper', whose configuration has changed"):
        steps.run_steps(pairs, tmp_path, steps=["velocity"])
    assert [r["step"] for r in steps.load_steps(tmp_path)] == ["paper"]  # nothing added


def test_rerun_changed_runs_a_changed_rung_again(tmp_path, monkeypatch, one_thread, capsys):
    names = [s[0] for s in steps.STEPS]
    ladder = [(n, TINY) for n in names]
    monkeypatch.setattr(steps, "step_configs", lambda target="cpu": ladder)
    pairs = [tissue_pairs("held-out")[0].resized(32)]
    steps.run_steps(pairs, tmp_path, steps=["paper", "velocity", "control grid"])
    kept = steps.load_steps(tmp_path)[1]
    ladder[0] = ("paper", TINY.replace(lr=0.5))
    ladder[1] = ("control grid", TINY.replace(lr=0.4))
    steps.run_steps(pairs, tmp_path, steps=["paper"], rerun_changed=True)
    assert "run ['control grid'] too" in capsys.readouterr().err
    rows = steps.load_steps(tmp_path)
    assert [r["step"] for r in rows] == ["velocity", "paper"] and rows[0] == kept
    prov = json.loads((tmp_path / "provenance.json").read_text(encoding="utf-8"))
    assert not steps.stale_rungs(rows, prov["rungs"], dict(ladder))
    figure = steps.load_figure(tmp_path)
    assert {"paper/warped", "velocity/warped"} <= set(figure) and "control grid/warped" not in figure


def test_a_field_added_later_counts_with_its_default(tmp_path, monkeypatch, one_thread):
    names = [s[0] for s in steps.STEPS]
    monkeypatch.setattr(steps, "step_configs", lambda target="cpu": [(n, TINY) for n in names])
    pairs = [tissue_pairs("held-out")[0].resized(32)]
    steps.run_steps(pairs, tmp_path, steps=["paper"])
    prov_path = tmp_path / "provenance.json"
    prov = json.loads(prov_path.read_text(encoding="utf-8"))
    del prov["rungs"]["paper"]["config"]["volume_penalty"]  # as written before the field existed
    prov_path.write_text(json.dumps(prov), encoding="utf-8")
    steps.run_steps(pairs, tmp_path, steps=["velocity"])
    assert [r["step"] for r in steps.load_steps(tmp_path)] == ["paper", "velocity"]
