"""dipreg.methods.batch.register_many: the results of dipreg.register pair by pair; clear errors; benchmark smoke
tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dipreg
from dipreg.data import sample_pair
from dipreg.methods.batch import register_many

ROOT = Path(__file__).resolve().parents[1]
# tiny: 32 x 32 images, 2 scales of 8 channels, a few steps (the full-resolution "paper" parameterisation)
TINY = dict(config="paper", down=(8, 8), up=(8, 8), in_channels=8, readout_draws=2)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pairs():
    return [sample_pair(name, size=32) for name in ("default", "mean", "coronal")]


def _one_by_one(pairs, seeds, **kw):
    return [dipreg.register(p.moving, p.fixed, seed=s, progress=False, **kw) for p, s in zip(pairs, seeds, strict=True)]


def test_matches_register_after_one_step(pairs):
    """One step: only float32 summation order differs (grouped vs plain conv); |du| < 1e-4 px."""
    kw = dict(TINY, iterations=1)
    batch = register_many(pairs, seed=5, progress=False, **kw)
    alone = _one_by_one(pairs, [5, 6, 7], **kw)
    for b, a in zip(batch, alone, strict=True):
        assert b.info["seed"] == a.info["seed"]
        assert np.abs(b.displacement - a.displacement).max() < 1e-4
        np.testing.assert_allclose(b.history, a.history, rtol=0, atol=1e-6)
        assert np.abs(b.warped - a.warped).max() < 1e-4


def test_matches_register_after_several_steps(pairs):
    """Five steps, fixed-boundary velocity parameterisation (cpu preset family), seeds as a list.

    Adam turns rounding-level gradients (conv biases followed by BatchNorm have an exact gradient of 0)
    into full-size steps, so agreement decays with iterations; the bound is measured, with margin.
    """
    kw = dict(config="cpu", detail_steps=0, down=(8, 8), up=(8, 8), in_channels=8, grid_scale=2, noise="fresh",
              readout_draws=2, iterations=5)  # fresh noise, so that the readout's average over draws is batched too
    seeds = [3, 11]
    batch = register_many(pairs[:2], seed=seeds, progress=False, **kw)
    alone = _one_by_one(pairs[:2], seeds, **kw)
    for b, a in zip(batch, alone, strict=True):
        assert b.info["seed"] == a.info["seed"]
        assert b.info["batch_size"] == 2 and len(b.history) == 5
        assert np.abs(b.displacement - a.displacement).max() < 0.05 * np.abs(a.displacement).max() + 1e-4
        np.testing.assert_allclose(b.history, a.history, rtol=0, atol=1e-3)


def test_accepts_tuples_and_tensors(pairs):
    p = pairs[0]
    res = register_many([(torch.from_numpy(p.moving), p.fixed)], seed=0, progress=False, iterations=1, **{
        k: v for k, v in TINY.items()})
    assert len(res) == 1 and res[0].displacement.shape == (2, 32, 32)


def test_bad_inputs(pairs):
    with pytest.raises(ValueError, match="empty"):
        register_many([], progress=False)
    other = sample_pair(size=48)
    with pytest.raises(ValueError, match="same shape"):
        register_many([pairs[0], other], progress=False, **TINY)
    with pytest.raises(ValueError, match="shape"):
        register_many([(pairs[0].moving, other.fixed)], progress=False, **TINY)
    with pytest.raises(TypeError, match="pairs"):
        register_many(pairs[0], progress=False)
    with pytest.raises(TypeError, match=r"pairs\[0\]"):
        register_many([pairs[0].moving], progress=False)
    with pytest.raises(ValueError, match="seed"):
        register_many(pairs, seed=[1, 2], progress=False, **TINY)
    with pytest.raises(TypeError, match="unknown config field"):
        register_many(pairs, progress=False, bogus=1)


@pytest.mark.parametrize("script", ["bench_step.py", "bench_overhead.py", "bench_time_to_quality.py", "bench_batch.py"])
def test_benchmark_quick(script):
    """Every benchmark script runs end to end with --quick, so the scripts cannot rot."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--threads", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "|" in out.stdout


def test_gpu_check_script_dry_run(tmp_path):
    """benchmarks/gpu_check.sh (the one prepared GPU check) runs every step on the CPU with tiny settings."""
    env = {**os.environ, "DIPREG_CHECK_DEVICE": "cpu", "DIPREG_CHECK_QUICK": "1", "PYTHON": sys.executable}
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    log = (tmp_path / "gpu_check.log").read_text()
    assert out.returncode == 0, log[-3000:]
    assert "0 step(s) failed" in log and "projected 109-pair reproduction" in log
    assert log.count("| speed-up |") == 1 and "torch.compile" in log and "identical True" in log
    assert "autocast bf16" in log and "cudnn.benchmark" in log


def test_fixed_noise_reads_out_each_pairs_best_evaluated_field(pairs):
    """The cpu preset's fixed noise: each pair's field is the one of its own lowest-loss step, as in register."""
    kw = dict(config="cpu", detail_steps=0, down=(8, 8), up=(8, 8), in_channels=8, grid_scale=2, iterations=5, lr=0.03)
    batch = register_many(pairs[:2], seed=[3, 11], progress=False, **kw)
    alone = _one_by_one(pairs[:2], [3, 11], **kw)
    for i, (b, a) in enumerate(zip(batch, alone, strict=True)):
        step = b.info["readout_step"]
        assert step == int(np.argmin(b.history)) == a.info["readout_step"] and step > 0
        assert np.abs(b.displacement - a.displacement).max() < 0.05 * np.abs(a.displacement).max() + 1e-4
        # exactly the field of that step: the weights after `step` steps, read out by readout="last"
        upto = register_many(pairs[:2], seed=[3, 11], progress=False, **{**kw, "iterations": step, "readout": "last"})
        np.testing.assert_array_equal(b.displacement, upto[i].displacement)
