"""reproduce(): rows, provenance, resume after an interruption, damaged results files, missing ANTs, summaries."""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from dipreg.cli import main
from dipreg.experiments import runner as rp
from dipreg.experiments.report import format_summary, paper_table, summarize_results
from dipreg.experiments.results import COLUMNS, load_results, write_results
from dipreg.experiments.runner import reproduce
from dipreg.methods.dip import RegistrationError

PATIENTS = ("TCGA_AA_0001_20000101", "TCGA_BB_0002_20000202", "TCGA_CC_0003_20000303")
TINY_DIP = {"iterations": 2, "readout_draws": 1, "down": (8, 8, 8), "up": (8, 8, 8), "in_channels": 4}
TINY_CLASSICAL = {"iterations": 2, "levels": 2}
KW = dict(size=64, device="cpu", progress=False, overrides=TINY_DIP,
          method_options={"classical": TINY_CLASSICAL})


pytestmark = pytest.mark.usefixtures("one_thread")


def write_lgg(base: Path) -> Path:
    """kaggle_3m/ with 3 patients x 3 slices of 256 x 256 x 3 uint8: an ellipse 'head' that shifts and
    stretches per patient and slice, a bright 'tumour' blob (and its mask) in some slices only."""
    root = base / "kaggle_3m"
    rr, cc = np.mgrid[:256, :256].astype(float)
    rng = np.random.default_rng(0)
    for p, pid in enumerate(PATIENTS):
        d = root / pid
        d.mkdir(parents=True)
        for n in range(1, 4):
            a, b = 80 + 6 * p + 2 * n, 62 - 4 * p
            r0, c0 = 128 + 5 * p, 128 - 4 * p
            head = ((rr - r0) / a) ** 2 + ((cc - c0) / b) ** 2 < 1
            inner = ((rr - r0) / (0.5 * a)) ** 2 + ((cc - c0 - 10) / (0.4 * b)) ** 2 < 1
            img = np.zeros((256, 256, 3), np.float64)
            for ch in range(3):
                img[..., ch] = 90 * head + 70 * inner + 20 * ch * head + rng.normal(0, 4, (256, 256))
            mask = np.zeros((256, 256), np.uint8)
            if p != 2:  # the last patient has no tumour: Dice is NaN for pairs with it
                tumour = (rr - r0 + 30) ** 2 + (cc - c0 - 20) ** 2 < (12 + 2 * n) ** 2
                img[tumour, 1] += 60
                mask[tumour] = 255
            tifffile.imwrite(d / f"{pid}_{n}.tif", np.clip(img, 0, 255).astype(np.uint8))
            tifffile.imwrite(d / f"{pid}_{n}_mask.tif", mask)
    return root


@pytest.fixture(scope="module")
def lgg(tmp_path_factory) -> Path:
    return write_lgg(tmp_path_factory.mktemp("lgg"))


def test_rows_and_provenance(lgg, tmp_path):
    path = reproduce(lgg, tmp_path / "run", methods=("dip", "classical"), **KW)
    assert path == tmp_path / "run" / "results.csv"
    with open(path, newline="") as fh:
        header = next(csv.reader(fh))
    assert tuple(header) == COLUMNS
    rows = load_results(path)
    assert [(r["moving_id"].split("_")[1], r["method"]) for r in rows] == [
        ("AA", "dip"), ("AA", "classical"), ("BB", "dip"), ("BB", "classical")]
    for r in rows:
        assert r["protocol"] == "consecutive" and r["slice"] == "middle" and r["channel"] == "flair"
        assert r["size"] == "64" and r["seed"] == 0 and r["error"] == ""
        assert r["pair"] == f"{r['moving_id']}->{r['fixed_id']}"
        for k in ("ssim_before", "ssim_after", "jac_mean", "jac_std", "jac_min", "folded_fraction", "std_log_jac",
                  "seconds"):
            assert math.isfinite(r[k]), k
        assert r["device"] == "cpu" and r["dipreg_version"] and r["date"]
        json.loads(r["config"])
    assert json.loads(rows[0]["config"])["down"] == [8, 8, 8]
    assert rows[0]["iterations"] == 2 and rows[1]["iterations"] == 4  # classical: 2 levels x 2 steps
    # pair AA -> BB: both have a tumour; BB -> CC: CC has none, so no Dice
    assert 0 <= rows[0]["dice_after"] <= 1 and 0 <= rows[0]["dice_before"] <= 1
    assert math.isnan(rows[2]["dice_after"]) and math.isnan(rows[2]["dice_before"])
    prov = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert prov["protocol"] == "consecutive" and prov["dataset"]["root"] == str(lgg.resolve())
    run = prov["runs"][-1]
    assert run["command"] and run["machine"]["cpu_cores"] and run["machine"]["torch"] == torch.__version__
    assert "cpu" in run["machine"] and "gpu" in run["machine"]
    assert set(prov["methods"]) == {"dip", "classical"}
    assert run["dip_compile"] is False


def ident(row):
    return row["pair"], row["method"], row["date"], row["seconds"], row["ssim_after"]


def test_resume_after_interruption(lgg, tmp_path):
    out = tmp_path / "run"
    seen = []

    def kill_after_first(row):
        seen.append(row)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reproduce(lgg, out, methods=("dip", "classical"), on_row=kill_after_first, **KW)
    first = load_results(out / "results.csv")
    assert len(first) == 1 and first[0]["method"] == "dip"
    reproduce(lgg, out, methods=("dip", "classical"), **KW)
    rows = load_results(out / "results.csv")
    keys = [(r["pair"], r["method"]) for r in rows]
    assert len(keys) == 4 and len(set(keys)) == 4
    assert ident(rows[0]) == ident(first[0])  # kept as it was, not rerun
    assert len(json.loads((out / "provenance.json").read_text())["runs"]) == 2
    # a third run has nothing left to do
    reproduce(lgg, out, methods=("dip", "classical"), **KW)
    assert [ident(r) for r in load_results(out / "results.csv")] == [ident(r) for r in rows]
    # a larger limit / another method extends the same file
    reproduce(lgg, out, methods=("classical",), **KW)
    assert len(load_results(out / "results.csv")) == 4
    # a run of one method keeps the configuration of the other on record: its rows are still in the file
    prov = json.loads((out / "provenance.json").read_text())
    assert set(prov["methods"]) == {"dip", "classical"} and prov["methods"]["dip"]["config"]["down"] == [8, 8, 8]


def _classical_run(lgg, out, **kw):
    args = dict(KW)
    args.update(kw)
    return reproduce(lgg, out, methods=("classical",), **args)


@pytest.mark.parametrize("damage, message", [
    ("header", "header"),
    ("truncated", "incomplete"),
    ("number", "not a number"),
    ("fields", "fields"),
    ("protocol", "protocol"),
    ("size", "size"),
    ("config", "another configuration"),
])
def test_damaged_results_are_reported(lgg, tmp_path, damage, message):
    out = tmp_path / "run"
    path = _classical_run(lgg, out, limit=1)
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    if damage == "header":
        text = "a,b,c\n" + "".join(lines[1:])
    elif damage == "truncated":
        text = text[:-20]
    elif damage == "number":
        i = COLUMNS.index("ssim_after")
        row = next(csv.reader([lines[1]]))
        row[i] = "0.5x"
        text = lines[0] + ",".join(f'"{v}"' if "," in v or '"' in v else v for v in
                                   [c.replace('"', '""') for c in row]) + "\n"
    elif damage == "fields":
        text = text + "x,y\n"
    path.write_text(text)
    before = path.read_bytes()
    kwargs = {}
    if damage == "protocol":
        kwargs = {"protocol": "adjacent-slices"}
    elif damage == "size":
        kwargs = {"size": 32}
    elif damage == "config":
        kwargs = {"method_options": {"classical": {**TINY_CLASSICAL, "weight": 0.5}}}
    with pytest.raises(ValueError, match=message) as info:
        _classical_run(lgg, out, limit=1, **kwargs)
    assert "--out" in str(info.value) or "delete" in str(info.value)
    assert path.read_bytes() == before  # never overwritten


def test_missing_ants_is_skipped_once(lgg, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(rp, "_ants_available", lambda: False)
    path = reproduce(lgg, tmp_path / "run", methods=("classical", "ants-SyN", "ants-strong"), **KW)
    rows = load_results(path)
    assert {r["method"] for r in rows} == {"classical"} and len(rows) == 2
    err = capsys.readouterr().err
    assert err.count("antspyx is not installed") == 1 and "ants-strong" in err


def test_failing_pair_is_recorded(lgg, tmp_path, monkeypatch):
    reg_module = sys.modules["dipreg.methods.dip"]
    real = reg_module.register
    calls = []

    def flaky(moving, fixed, **kw):
        if kw["config"].iterations > 1:  # not a warm-up run
            calls.append(kw["config"].iterations)
            if len(calls) == 1:  # the first real run
                raise RegistrationError("the loss became nan at iteration 1", [0.5])
        return real(moving, fixed, **kw)

    monkeypatch.setattr(reg_module, "register", flaky)
    path = reproduce(lgg, tmp_path / "run", methods=("dip",), **KW)
    rows = load_results(path)
    assert len(rows) == 2
    assert "RegistrationError" in rows[0]["error"] and math.isnan(rows[0]["ssim_after"])
    assert rows[1]["error"] == "" and math.isfinite(rows[1]["ssim_after"])
    summary = summarize_results(rows)
    assert summary[0]["n"] == 1 and summary[0]["n_failed"] == 1
    # a resumed run drops the failed row and runs that pair again; the finished one is kept as it was
    finished_line = path.read_text().splitlines()[2]
    reproduce(lgg, tmp_path / "run", methods=("dip",), **KW)
    again = load_results(path)
    assert len(again) == 2 and all(r["error"] == "" for r in again) and len(calls) == 3
    assert path.read_text().splitlines()[1] == finished_line and again[1]["pair"] == rows[0]["pair"]


def test_a_size_too_small_for_a_method_fails_before_any_pair(lgg, tmp_path):
    with pytest.raises(ValueError, match="dip cannot run at --size 8"):
        reproduce(lgg, tmp_path / "small", methods=("dip",), **{**KW, "size": 8})
    assert not (tmp_path / "small" / "results.csv").exists()


def test_channel_given_as_an_index_is_recorded_by_name(lgg, tmp_path):
    path = reproduce(lgg, tmp_path / "ch", methods=("classical",), channel=0, **{**KW, "limit": 1})
    row = load_results(path)[0]
    assert row["channel"] == "t1_pre" and row["moving_id"].endswith(":t1_pre")


def test_bad_arguments(lgg, tmp_path):
    with pytest.raises(ValueError, match="unknown method"):
        reproduce(lgg, tmp_path / "a", methods=("dip", "voxelmorph"), **KW)
    with pytest.raises(FileNotFoundError):
        reproduce(tmp_path / "nowhere", tmp_path / "b", **KW)
    with pytest.raises(ValueError, match="protocol"):
        reproduce(lgg, tmp_path / "c", methods=("classical",), **{**KW, "protocol": "random"})
    with pytest.raises(TypeError, match="unknown config field"):
        reproduce(lgg, tmp_path / "d", methods=("dip",), **{**KW, "overrides": {"depth": 3}})


def test_ants_row(lgg, tmp_path):
    pytest.importorskip("ants")
    path = reproduce(lgg, tmp_path / "run", methods=("ants-SyN",), limit=1, **KW)
    (row,) = load_results(path)
    assert row["method"] == "ants-SyN" and row["error"] == "" and row["ssim_after"] > row["ssim_before"] - 0.05
    assert json.loads(row["config"]) == {"type_of_transform": "SyN"}


def test_summary_pooled_sd_and_paper_table():
    rng = np.random.default_rng(1)
    maps = [rng.normal(1.0 + 0.1 * k, 0.2 + 0.05 * k, size=(16, 16)) for k in range(3)]
    rows = []
    for k, m in enumerate(maps):
        row = {c: "" for c in COLUMNS}
        row.update({c: math.nan for c in rp.METRICS}, pair=f"p{k}", method="dip", seconds=1.0 + k, error="",
                   jac_mean=float(m.mean()), jac_std=float(m.std()), ssim_after=0.8 + 0.01 * k)
        rows.append(row)
    (s,) = summarize_results(rows)
    assert s["n"] == 3
    np.testing.assert_allclose(s["jac_pooled_sd"], np.concatenate([m.ravel() for m in maps]).std())
    np.testing.assert_allclose(s["jac_mean_mean"], np.mean([m.mean() for m in maps]))
    np.testing.assert_allclose(s["ssim_after_sd"], np.std([0.8, 0.81, 0.82], ddof=1))
    assert math.isnan(s["dice_after_mean"]) and s["dice_after_n"] == 0
    table = format_summary([s])
    assert "| dip | 3 |" in table and "0.827 ± 0.096" in table and "1.007 ± 0.045" in table
    paper = paper_table()
    assert paper["ITK"] == {"ssim": (0.827, 0.096), "jac": (1.036, 0.254)}
    assert paper["ours"] == {"ssim": (0.913, 0.051), "jac": (1.007, 0.045)}


def test_cli_reproduce_and_summarize(lgg, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["reproduce", "--data", str(lgg), "--out", str(out), "--methods", "classical", "--size", "64",
            "--classical-set", "iterations=2", "--classical-set", "levels=2", "--no-progress", "--device", "cpu"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "| classical | 2 |" in text and "paper: ITK" in text
    assert main(["summarize", str(out / "results.csv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["method"] == "classical"
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["runs"][0]["command"].startswith("dipreg reproduce --data")
    # a changed setting on the same folder: exit 2 with the reason, file untouched
    before = (out / "results.csv").read_bytes()
    assert main([*args[:-2], "--device", "cpu", "--classical-set", "weight=1"]) == 2
    err = capsys.readouterr().err
    assert "another configuration" in err and "Traceback" not in err
    assert (out / "results.csv").read_bytes() == before
    assert main(["reproduce", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "x")]) == 2


def test_cli_compile_reaches_every_dip_run(lgg, tmp_path, monkeypatch):
    """--compile is passed to the untimed warm-up (where the compilation happens) and to every timed run,
    and the run's provenance records it. (The spy runs eagerly: compilation itself is tested elsewhere.)"""
    module = sys.modules["dipreg.methods.dip"]
    real, seen = module.register, []

    def spy(*args, compile=False, **kwargs):
        seen.append((compile, kwargs["config"].iterations))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "register", spy)
    out = tmp_path / "run"
    args = ["reproduce", "--data", str(lgg), "--out", str(out), "--methods", "dip", "--size", "64", "--compile",
            "--no-progress", "--device", "cpu", "--iterations", "2", "--set", "down=8,8", "--set", "up=8,8"]
    assert main(args) == 0
    assert seen == [(True, 1), (True, 2), (True, 2)]  # warm-up, then the two pairs
    assert json.loads((out / "provenance.json").read_text())["runs"][-1]["dip_compile"] is True


def test_cli_interrupt_says_how_to_resume(lgg, tmp_path, monkeypatch, capsys):
    real = rp.reproduce

    def interrupted(*args, **kwargs):
        kwargs["on_row"] = lambda row: (_ for _ in ()).throw(KeyboardInterrupt)
        return real(*args, **kwargs)

    monkeypatch.setattr(rp, "reproduce", interrupted)
    out = tmp_path / "run"
    code = main(["reproduce", "--data", str(lgg), "--out", str(out), "--methods", "classical", "--size", "64",
                 "--classical-set", "iterations=2", "--classical-set", "levels=2", "--no-progress"])
    assert code == 130
    err = capsys.readouterr().err
    assert "1 finished row(s)" in err and "again to resume" in err
    assert len(load_results(out / "results.csv")) == 1


def test_provenance_lines_reads_the_runs_of_the_stored_results():
    from dipreg.experiments.report import provenance_lines
    from dipreg.teaching.book import stored

    for name in ("lgg_local_cpu", "lgg_local_cpu_adjacent", "lgg_local_cpu_prepost"):
        folder = stored(name)
        prov = json.loads((folder / "provenance.json").read_text(encoding="utf-8"))
        rows = load_results(folder / "results.csv")
        text = "\n".join(provenance_lines(prov, rows))
        runs = prov["runs"]
        assert f"written by {len(runs)} run" in text
        for run in runs:
            assert run["date"] in text and run["command"] in text
            dirty = run["git_commit"].endswith("+dirty")                    # full commit, never truncated
            assert f"commit {run['git_commit']}" + (": DIRTY" if dirty else "\n") in text + "\n"
            assert f"{run['machine']['cpu']}, {run['machine']['cpu_cores']} cores" in text
            assert f"torch {run['versions']['torch']}" in text and f"dipreg {run['versions']['dipreg']}" in text
        assert f"rows: {len(rows)}" in text and "method dip: preset cpu" in text
    assert provenance_lines({}) == ["no provenance.json found"]


def test_provenance_lines_flags_a_dirty_commit_and_counts_runs():
    from dipreg.experiments.report import provenance_lines

    run = {"date": "2026-01-01T00:00:00+00:00", "command": "dipreg reproduce --out x", "device": "cuda",
           "rows_already_done": 0, "machine": {"cpu": "c", "cpu_cores": 4, "torch_threads": 4, "gpu": "g"},
           "versions": {"torch": "2"}, "git_commit": "a" * 40}
    dirty = {**run, "git_commit": "b" * 40 + "+dirty", "rows_already_done": 3}
    lines = provenance_lines({"protocol": "consecutive", "runs": [run, dirty]},
                             rows=[{"date": "2026-01-01", "device": "cuda", "git_commit": "c" * 40}])
    text = "\n".join(lines)
    assert "written by 2 runs" in text and "resumed after 3 rows" in text and "GPU g" in text
    assert f"commit {'a' * 40}\n" in text + "\n" and f"commit {'b' * 40}+dirty: DIRTY" in text
    assert f"commit {'c' * 40}" in text                                             # a row's commit no run names


def test_a_file_that_is_not_a_results_file_says_so(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("just some text without a line end")
    with pytest.raises(ValueError, match="not a results file"):
        load_results(notes)


def test_an_unreadable_slice_costs_its_pair_only_and_is_retried_on_resume(tmp_path):
    root = write_lgg(tmp_path / "data")
    damaged = root / PATIENTS[2] / f"{PATIENTS[2]}_2.tif"  # the middle slice of the last patient
    good = damaged.read_bytes()
    damaged.write_bytes(good[:300])
    path = reproduce(root, tmp_path / "run", methods=("dip",), **KW)
    rows = load_results(path)
    assert [r["error"] == "" for r in rows] == [True, False]
    assert rows[1]["error"].startswith("unreadable data")
    assert rows[1]["pair"] == f"{PATIENTS[1]}:flair->{PATIENTS[2]}:flair"
    damaged.write_bytes(good)
    again = load_results(reproduce(root, tmp_path / "run", methods=("dip",), **KW))
    assert [r["error"] for r in again] == ["", ""] and again[1]["fixed_id"] == f"{PATIENTS[2]}_2:flair"


def test_an_ants_failure_becomes_an_error_row(lgg, tmp_path, monkeypatch):
    import dipreg.methods.ants

    def broken(moving, fixed, **kwargs):
        raise RuntimeError("Registration failed with error code 1")

    monkeypatch.setattr(rp, "_ants_available", lambda: True)
    monkeypatch.setattr(dipreg.methods.ants, "register_ants", broken)
    rows = load_results(reproduce(lgg, tmp_path / "run", methods=("classical", "ants-SyN"), **KW))
    assert [r["method"] for r in rows] == ["classical", "ants-SyN"] * 2
    assert all(r["error"] == "RuntimeError: Registration failed with error code 1" for r in rows[1::2])
    assert all(r["error"] == "" for r in rows[::2])


def test_a_seed_ants_cannot_take_is_refused_before_any_pair(lgg, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["reproduce", "--data", str(lgg), "--out", str(out), "--methods", "ants-SyN", "--seed",
                 "2147483647", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "2**31 - 2" in err and "Traceback" not in err and not (out / "results.csv").exists()


def test_a_second_run_on_the_same_folder_is_refused(lgg, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "reproduce.lock").write_text(f"{os.getpid()}\n")  # a running process holds it
    with pytest.raises(FileExistsError, match=f"in use by another dipreg reproduce \\(process {os.getpid()}"):
        _classical_run(lgg, out, limit=1)
    assert not (out / "results.csv").exists() and (out / "reproduce.lock").exists()
    assert main(["reproduce", "--data", str(lgg), "--out", str(out), "--methods", "classical", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "reproduce.lock" in err and "another --out" in err and "Traceback" not in err


def test_a_stale_lock_is_taken_over_and_the_lock_is_removed_at_the_end(lgg, tmp_path, capsys):
    import subprocess

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "run"
    out.mkdir()
    (out / "reproduce.lock").write_text(f"{dead.pid}\n")
    seen = []
    _classical_run(lgg, out, limit=1, on_row=lambda row: seen.append((out / "reproduce.lock").read_text()))
    assert seen == [f"{os.getpid()}\n"]  # held by this run while it ran
    assert f"process {dead.pid}) is no longer running" in capsys.readouterr().err
    assert not (out / "reproduce.lock").exists() and len(load_results(out / "results.csv")) == 1


def test_the_lock_is_released_when_a_run_fails(lgg, tmp_path):
    out = tmp_path / "run"
    _classical_run(lgg, out, limit=1)
    with pytest.raises(ValueError, match="size"):
        _classical_run(lgg, out, limit=1, size=32)
    assert not (out / "reproduce.lock").exists()


def test_a_damaged_provenance_is_refused_not_replaced(lgg, tmp_path):
    out = tmp_path / "run"
    path = _classical_run(lgg, out, limit=1)
    prov = out / "provenance.json"
    prov.write_text('{"runs": [')
    results = path.read_bytes()
    with pytest.raises(ValueError, match="provenance.json is damaged") as info:
        _classical_run(lgg, out)
    assert "move it away" in str(info.value)
    assert prov.read_text() == '{"runs": [' and path.read_bytes() == results


def test_a_results_file_that_is_not_utf8_names_the_file_and_the_fix(tmp_path):
    bad = tmp_path / "results.csv"
    bad.write_bytes(b"pair,moving_id\n\xff\xfe broken\n")
    with pytest.raises(ValueError, match="not UTF-8") as info:
        load_results(bad)
    assert str(bad) in str(info.value) and "--out" in str(info.value)


VALUES = [c for c in COLUMNS if c not in ("seconds", "date")]


def test_jobs_gives_the_rows_of_a_serial_run_and_resumes(lgg, tmp_path):
    """Two worker processes: the same rows as a serial run with one thread (bit for bit), in the same order;
    an interrupted parallel run keeps its finished rows and a resumed one adds the rest, no duplicates."""
    serial = load_results(reproduce(lgg, tmp_path / "serial", methods=("dip", "classical"), **KW))

    def stop(row):
        raise KeyboardInterrupt

    out = tmp_path / "par"
    with pytest.raises(KeyboardInterrupt):
        reproduce(lgg, out, methods=("dip", "classical"), jobs=2, on_row=stop, **KW)
    first = load_results(out / "results.csv")
    assert 1 <= len(first) <= 4 and not (out / "reproduce.lock").exists()
    reproduce(lgg, out, methods=("dip", "classical"), jobs=2, **KW)
    rows = load_results(out / "results.csv")
    keys = [(r["pair"], r["method"]) for r in rows]
    assert len(keys) == len(set(keys)) == 4
    by_key = {(r["pair"], r["method"]): r for r in rows}
    for r in serial:
        other = by_key[(r["pair"], r["method"])]
        for col in VALUES:
            assert other[col] == r[col] or (isinstance(r[col], float) and math.isnan(r[col])
                                            and math.isnan(other[col])), col
    prov = json.loads((out / "provenance.json").read_text())
    assert [run["jobs"] for run in prov["runs"]] == [2, 2]
    # an uninterrupted parallel run writes the serial order
    fresh = load_results(reproduce(lgg, tmp_path / "par2", methods=("dip", "classical"), jobs=2, **KW))
    assert [(r["pair"], r["method"]) for r in fresh] == [(r["pair"], r["method"]) for r in serial]


def test_cli_jobs_reaches_reproduce(tmp_path, monkeypatch, capsys):
    seen = []

    def spy(root, out, **kwargs):
        seen.append(kwargs["jobs"])
        Path(out).mkdir(parents=True, exist_ok=True)
        write_results(Path(out) / "results.csv")
        return Path(out) / "results.csv"

    monkeypatch.setattr(rp, "reproduce", spy)
    base = ["reproduce", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(base) == 0 and main([*base, "--jobs", "3"]) == 0
    assert seen == [1, 3]
    assert main([*base, "--jobs", "0"]) == 2 and "positive integer" in capsys.readouterr().err


def test_rows_from_before_a_new_settings_field_still_resume(lgg, tmp_path):
    """A row written before a settings field existed (here the classical method's intensity_background) counts
    with the field's default, which reproduces the old behaviour; another value of the field is refused."""
    out = tmp_path / "run"
    path = _classical_run(lgg, out, limit=1)
    field = '""intensity_background"":""darkest"",'
    assert field in path.read_text()
    path.write_text(path.read_text().replace(field, ""))
    before = path.read_bytes()
    _classical_run(lgg, out, limit=1)  # nothing left to do, no error
    assert path.read_bytes() == before
    with pytest.raises(ValueError, match="intensity_background: 'darkest' in the file, 'border' now"):
        _classical_run(lgg, out, limit=1,
                       method_options={"classical": {**TINY_CLASSICAL, "intensity_background": "border"}})


def test_rerun_changed_runs_again_only_the_rows_of_a_changed_configuration(lgg, tmp_path, capsys):
    """After a preset changes, rerun_changed replaces the rows of that method and keeps every other row."""
    out = tmp_path / "run"
    path = reproduce(lgg, out, methods=("dip", "classical"), limit=2, **KW)
    before = path.read_text().splitlines()
    changed = dict(KW, overrides={**TINY_DIP, "lr": 2e-3})
    with pytest.raises(ValueError, match="--rerun-changed"):
        reproduce(lgg, out, methods=("dip",), limit=2, **changed)
    assert path.read_text().splitlines() == before  # refused: nothing touched
    reproduce(lgg, out, methods=("dip",), limit=2, rerun_changed=True, **changed)
    assert "2 row(s)" in capsys.readouterr().err
    after = path.read_text().splitlines()
    assert len(after) == len(before) == 5
    assert [x for x in after if ",classical," in x] == [x for x in before if ",classical," in x]
    dip = [r for r in load_results(path) if r["method"] == "dip"]
    assert len(dip) == 2 and all(json.loads(r["config"])["lr"] == 2e-3 for r in dip)
    reproduce(lgg, out, methods=("dip", "classical"), limit=2, rerun_changed=True, **changed)  # nothing to do
    assert path.read_text().splitlines() == after
    # another protocol is refused before any row is removed, also when every row's configuration changed
    other = dict(changed, overrides={**TINY_DIP, "lr": 1e-3})
    for methods in (("dip",), ("dip", "classical")):
        with pytest.raises(ValueError, match="protocol='consecutive'"):
            reproduce(lgg, out, methods=methods, limit=2, protocol="adjacent-slices", rerun_changed=True, **other)
        assert path.read_text().splitlines() == after
    # a damaged config is refused, not rerun
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[1].replace('"{', '"{{', 1) + "".join(lines[2:]))
    with pytest.raises(ValueError, match="line 2 .* not valid JSON"):
        reproduce(lgg, out, methods=("dip", "classical"), limit=2, rerun_changed=True, **other)


def test_regenerate_stored_reruns_what_a_preset_change_affects_in_the_stage_only(lgg, tmp_path, monkeypatch,
                                                                                regenerate_stored):
    """scripts/regenerate_stored.py: a stored run is copied to the stage and only the rows of the changed
    preset run again there; the stored run itself is not touched, and a second call has nothing to do."""
    import dipreg.presets

    regen = regenerate_stored
    book, stage = tmp_path / "book", tmp_path / "stage"
    stored = reproduce(lgg, book / "lgg_local_x", methods=("dip",), limit=2, **dict(KW, method_options=None))
    before = stored.read_text()
    monkeypatch.setattr(regen, "BOOK", book)
    monkeypatch.setenv("DIPREG_LGG_ROOT", str(lgg))
    assert regen.pending("lgg_local_x") == "nothing"
    regen.regenerate_lgg("lgg_local_x", stage, None, jobs=1)
    assert (stage / "lgg_local_x" / "results.csv").read_text().splitlines()[1:] == before.splitlines()[1:]
    monkeypatch.setitem(dipreg.presets.PRESETS, "cpu", dipreg.presets.PRESETS["cpu"].replace(lr=2e-3))
    assert regen.pending("lgg_local_x") == "2 rows"
    regen.regenerate_lgg("lgg_local_x", stage, None, jobs=1)
    rows = load_results(stage / "lgg_local_x" / "results.csv")
    assert len(rows) == 2 and all(json.loads(r["config"])["lr"] == 2e-3 for r in rows)
    assert stored.read_text() == before


def test_changed_settings_counts_a_field_added_later_at_its_default():
    """The rule shared by resuming a results file and by the ladder's stale rungs."""
    from dipreg.jsonutil import changed_settings

    assert changed_settings({"a": 1}, {"a": 1, "b": 2}, {"b": 2}) == []
    assert changed_settings({"a": 1}, {"a": 1, "b": 3}, {"b": 2}) == ["b"]
    assert changed_settings({"a": [1, 2]}, {"a": (1, 2)}, {}) == []
    assert changed_settings({"a": 1, "c": 0}, {"a": 2}, {}) == ["a", "c"]
