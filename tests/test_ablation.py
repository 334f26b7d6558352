"""Ablation grid on a tiny pair: settings, resume, lookup, tables, figures and the widget callbacks."""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import pytest
import torch

import dipreg
from dipreg import RegistrationConfig
from dipreg.data import sample_pair
from dipreg.experiments import ablation as ab
from dipreg.experiments.ablation import ABLATION_AXES, load_grid, lookup, run_grid, setting_for
from dipreg.teaching.ablation_view import axis_table, make_widgets, plot_axis

BASE = RegistrationConfig(down=(8, 8, 8), up=(8, 8, 8), skip=2, in_channels=4, readout_draws=1, iterations=4)
AXES = {"method": ["dip", "classical-w0", "classical"], "depth": [1, 2], "init_std": [None, 0.1],
        "noise": ["fresh", "fixed"], "iterations": [2, 8]}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pair():
    return sample_pair().resized(64)


@pytest.fixture(scope="module")
def grid_path(pair, tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        path = tmp_path_factory.mktemp("abl") / "grid.npz"
        return run_grid(pair, path, base=BASE, axes=AXES, iterations=2, device="cpu", progress=False)
    finally:
        torch.set_num_threads(n)


def test_axes_cover_the_brief():
    assert {"method", "depth", "width", "skip", "init_std", "noise_std", "noise", "loss", "lr", "iterations"} \
        <= set(ABLATION_AXES)
    # issue 12: the axes from the paper's method to the default, each with the paper's value among its values
    paper = dipreg.presets.get_preset("paper")
    for axis in ("prealign", "smooth", "intensity_match", "integrate", "fold_penalty", "volume_penalty"):
        assert getattr(paper, axis) in ABLATION_AXES[axis], axis
        method, settings = setting_for(dipreg.presets.get_preset("cpu"), axis, getattr(paper, axis))
        assert method == "dip" and settings[axis] == getattr(paper, axis)
    assert set(ABLATION_AXES["method"]) == {"dip", "classical-w0", "classical"}
    assert 0 in ABLATION_AXES["skip"] and set(ABLATION_AXES["loss"]) == {"mae", "mse", "lncc"}
    base = RegistrationConfig()
    assert tuple(setting_for(base, "depth", 3)[1]["down"]) == (16, 32, 64)
    assert tuple(setting_for(base, "depth", 6)[1]["down"]) == (16, 32, 64, 128, 128, 128)
    assert tuple(setting_for(base, "width", 0.5)[1]["up"]) == (8, 16, 32, 64, 64)
    method, kw = setting_for(base, "method", "classical-w0")
    assert method == "classical" and kw["weight"] == 0
    assert setting_for(base, "method", "classical")[1]["weight"] > 0
    assert setting_for(base, "iterations", 100, iterations=30, base_iterations=300)[1]["iterations"] == 10


def test_grid_contents(grid_path):
    grid = load_grid(grid_path)
    # one-at-a-time: dip/depth 3/init 0.01/fresh/iterations 4 (the base, scaled to 2) are one run
    assert set(grid.axes) == set(AXES)
    assert [e["label"] for e in grid.axes["depth"]] == ["1", "2", "3"]  # the base depth is added
    assert [e["default"] for e in grid.axes["depth"]] == [False, False, True]
    assert len(grid.records) == 1 + 2 + 2 + 2 + 1 + 2  # base, classical x2, depth 1-2, init x2, fixed, its 2, 8
    base_key = grid.axes["method"][0]["key"]
    assert all(e["key"] == base_key for a in grid.axes.values() for e in a if e["default"])
    rec = lookup(grid, "depth", 2)
    for k in ("ssim_after", "jac_mean", "jac_std", "folded_fraction", "std_log_jac", "seconds"):
        assert math.isfinite(rec[k]), k
    assert rec["iterations"] == 2 and len(rec["history"]) == 2 and rec["history_steps"] == [0, 1]
    assert rec["warped"].shape == (64, 64) and rec["warped"].dtype == np.float16
    assert rec["detj"].shape == (64, 64)
    assert rec["settings"]["down"] == [8, 8]
    assert lookup(grid, "init_std", None)["label"] == "torch default"
    assert lookup(grid, "init_std", "torch default")["value"] is None
    # the axis [2, 8] plus the base's 4 is scaled by 2 / 4 and shows the steps each run made
    assert [e["label"] for e in grid.axes["iterations"]] == ["1", "2", "4"]
    assert [lookup(grid, "iterations", e["value"])["iterations"] for e in grid.axes["iterations"]] == [1, 2, 4]
    cl0 = lookup(grid, "method", "classical-w0")
    levels = cl0["settings"]["levels"]
    assert cl0["method"] == "classical" and cl0["settings"]["weight"] == 0 and cl0["iterations"] == 2 * levels
    with pytest.raises(KeyError, match="not on axis"):
        lookup(grid, "depth", 7)
    with pytest.raises(KeyError, match="axes"):
        lookup(grid, "width", 1.0)


def test_resume_skips_finished_settings(pair, tmp_path, monkeypatch):
    path = tmp_path / "g.npz"
    calls = []
    real = ab._run_setting
    kill = {"at": 2}

    def counting(method, settings, pairs, **kw):
        calls.append(settings)
        if len(calls) == kill["at"]:
            raise KeyboardInterrupt
        return real(method, settings, pairs, **kw)

    monkeypatch.setattr(ab, "_run_setting", counting)
    axes = {"noise": ["fresh", "fixed"]}
    with pytest.raises(KeyboardInterrupt):
        run_grid(pair, path, base=BASE, axes=axes, iterations=2, device="cpu", progress=False)
    assert len(load_grid(path).records) == 1  # the first setting was saved before the interruption
    calls.clear()
    kill["at"] = None
    run_grid(pair, path, base=BASE, axes={**axes, "depth": [2]}, iterations=2, device="cpu", progress=False)
    assert [c["noise"] for c in calls] == ["fixed", "fresh"]  # the missing noise setting, then depth 2
    assert tuple(calls[1]["down"]) == (8, 8)
    grid = load_grid(path)
    assert len(grid.records) == 3 and set(grid.axes) == {"noise", "depth"}
    calls.clear()
    run_grid(pair, path, base=BASE, axes=axes, iterations=2, device="cpu", progress=False)
    assert calls == []
    with pytest.raises(ValueError, match="another base"):
        run_grid(pair, path, base=BASE.replace(lr=0.5), axes=axes, iterations=2, device="cpu", progress=False)
    with pytest.raises(ValueError, match="another digest"):
        run_grid(pair.resized(48), path, base=BASE, axes=axes, iterations=2, device="cpu", progress=False)


def test_bad_arguments(pair, tmp_path):
    with pytest.raises(ValueError, match="unknown ablation axis"):
        run_grid(pair, tmp_path / "g.npz", base=BASE, axes={"colour": [1]}, iterations=2, progress=False)
    with pytest.raises(TypeError):
        run_grid("pair", tmp_path / "g.npz", base=BASE, axes={"noise": ["fixed"]}, progress=False)
    (tmp_path / "junk.npz").write_bytes(b"nope")
    with pytest.raises(ValueError, match="not a readable"):
        load_grid(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError):
        load_grid(tmp_path / "missing.npz")


def test_tables_and_static_figures(grid_path):
    grid = load_grid(grid_path)
    rows = axis_table(grid, "method")
    assert [r["label"] for r in rows] == ["dip", "classical-w0", "classical"]
    assert rows[0]["default"] and all(math.isfinite(r["ssim_after"]) for r in rows)
    html = axis_table(grid, "depth", html=True)
    assert html.startswith("<table") and html.count("<tr") == 4 and "(default)" in html
    fig = plot_axis(grid, "depth")
    assert len(fig.axes) == 4 + 2 * 3


def test_widgets(grid_path):
    pytest.importorskip("ipywidgets")
    from matplotlib.figure import Figure

    grid = load_grid(grid_path)
    ui = make_widgets(grid)
    assert ui.axis.value == "method" and ui.output.value[:4] == b"\x89PNG"
    start = time.perf_counter()
    fig = ui.on_change("noise", "fixed")
    assert isinstance(fig, Figure) and time.perf_counter() - start < 2.0  # ~0.1-0.3 s here; no computation
    first = ui.output.value
    ui.axis.value = "depth"  # switches the value buttons to the depth values, default selected
    assert [o[0] for o in ui.value.options] == ["1", "2", "3 *"] and ui.value.value == 2
    ui.value.value = 0
    assert ui.output.value != first and ui.output.value[:4] == b"\x89PNG"
    assert "depth = 1" in ui.last_figure.texts[0].get_text()
    assert ui.seconds < 2.0


def test_widgets_need_ipywidgets(grid_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    with pytest.raises(ImportError, match="pip install ipywidgets"):
        make_widgets(load_grid(grid_path))


def test_check_best_setting_diagnoses_the_usual_mistakes():
    from dipreg.teaching.book import stored
    from dipreg.teaching.checks import CheckFailed
    from dipreg.teaching.checks.ablation import best_unfolded, check_best_setting

    grid = load_grid(stored("ablation_sample.npz"))
    rows = [(a, r) for a in grid.axes for r in axis_table(grid, a)]
    axis, label = best_unfolded(grid)
    assert check_best_setting(lambda g: (axis, label), grid)
    assert check_best_setting(lambda g: (axis, lookup(g, axis, label)["value"]), grid)  # a value works too

    def not_yet(g):
        raise NotImplementedError

    assert check_best_setting(not_yet, grid) is False
    folded = max(rows, key=lambda ar: ar[1]["ssim_after"])  # no filter: the best SSIM folds in this grid
    assert folded[1]["folded_fraction"] > 0
    cases = [(lambda g: (folded[0], folded[1]["label"]), "folded_fraction == 0"),
             (lambda g: min(((a, r["label"]) for a, r in rows if r["folded_fraction"] == 0),
                            key=lambda al: lookup(grid, *al)["ssim_after"]), "lowest SSIM"),
             (lambda g: ("lr", "0.0003"), "compare across all axes"),
             (lambda g: None, "return"), (lambda g: "lr", "tuple"), (lambda g: ("colour", "red"), "not an axis"),
             (lambda g: ("lr", "0.5"), "not on axis")]
    for fn, message in cases:
        with pytest.raises(CheckFailed, match=message):
            check_best_setting(fn, grid)
