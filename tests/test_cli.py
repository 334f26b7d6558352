"""Command line end to end: register on PNG / NPY / NIfTI files, overwrite protection, bad input, info."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from dipreg.cli import main, parse_value
from dipreg.data import read_displacement, read_image, sample_pair, write_image
from dipreg.methods.dip import resolve_device
from dipreg.presets import default_config, get_preset
from dipreg.transform import warp

# A tiny generator so that each registration takes a fraction of a second.
TINY = ["--iterations", "2", "--set", "readout_draws=1", "--set", "down=8,8,8", "--set", "up=8,8,8",
        "--set", "in_channels=4", "--no-progress", "--device", "cpu"]
AFFINE = np.array([[0.9, 0, 0, -10], [0, 0.9, 0, 5], [0, 0, 3.0, 1], [0, 0, 0, 1]])


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the test machine is shared; one thread is faster here than two
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def pair():
    return sample_pair().resized(64)


def write_pair(folder: Path, pair, ext: str) -> tuple[Path, Path]:
    m, f = folder / f"moving{ext}", folder / f"fixed{ext}"
    write_image(m, pair.moving)
    write_image(f, pair.fixed, AFFINE if ext.startswith(".nii") else None)
    return m, f


@pytest.mark.parametrize("ext", [".png", ".npy", ".nii.gz"])
def test_register_writes_outputs(tmp_path, pair, ext, capsys):
    m, f = write_pair(tmp_path, pair, ext)
    out = tmp_path / "out"
    assert main(["register", str(m), str(f), "--out", str(out), *TINY]) == 0
    assert "SSIM" in capsys.readouterr().out
    warped = out / f"warped{ext}"
    for p in (warped, out / "displacement.nii.gz", out / "displacement.npy", out / "metrics.json"):
        assert p.is_file(), p
    report = json.loads((out / "metrics.json").read_text())
    for key in ("ssim_before", "ssim_after", "jac_mean", "jac_std", "folded_fraction", "std_log_jac"):
        assert np.isfinite(report["metrics"][key])
    assert report["config"]["iterations"] == 2 and report["config"]["down"] == [8, 8, 8]
    assert report["device"] == "cpu" and report["seconds"] > 0
    assert {"dipreg", "torch", "numpy", "python"} <= set(report["versions"])
    img, aff = read_image(warped)
    assert img.shape == (64, 64)
    u_nii, u_aff = read_displacement(out / "displacement.nii.gz")
    u_npy, _ = read_displacement(out / "displacement.npy")
    np.testing.assert_allclose(u_nii, u_npy)
    if ext == ".nii.gz":  # the fixed image's affine is kept
        np.testing.assert_allclose(aff, AFFINE)
        np.testing.assert_allclose(u_aff, AFFINE)


def test_register_compile_flag_reaches_register(tmp_path, pair, monkeypatch):
    module = sys.modules["dipreg.methods.dip"]
    real, seen = module.register, []

    def spy(*args, compile=False, **kwargs):  # runs eagerly; compilation is tested in test_register
        seen.append(compile)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "register", spy)
    m, f = write_pair(tmp_path, pair, ".npy")
    assert main(["register", str(m), str(f), "--out", str(tmp_path / "a"), *TINY]) == 0
    assert main(["register", str(m), str(f), "--out", str(tmp_path / "b"), "--compile", *TINY]) == 0
    assert seen == [False, True]


def test_register_masks_and_jpeg_fallback(tmp_path, pair):
    import imageio.v3 as iio

    m, f = tmp_path / "m.jpg", tmp_path / "f.jpg"
    iio.imwrite(m, np.round(pair.moving * 255).astype(np.uint8))
    iio.imwrite(f, np.round(pair.fixed * 255).astype(np.uint8))
    write_image(tmp_path / "mm.png", pair.moving_mask.astype(float))
    write_image(tmp_path / "fm.png", pair.fixed_mask.astype(float))
    out = tmp_path / "out"
    code = main(["register", str(m), str(f), "--out", str(out), "--moving-mask", str(tmp_path / "mm.png"),
                 "--fixed-mask", str(tmp_path / "fm.png"), *TINY])
    assert code == 0
    assert (out / "warped.nii.gz").is_file()  # JPEG is not written: NIfTI instead
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert 0 < metrics["dice_before"] <= 1 and 0 < metrics["dice_after"] <= 1


def test_register_warns_about_a_mask_that_is_not_binary(tmp_path, pair, capsys):
    m, f = write_pair(tmp_path, pair, ".npy")
    np.save(tmp_path / "mm.npy", pair.moving)  # an image given as a mask
    np.save(tmp_path / "fm.npy", pair.fixed_mask.astype(float))
    capsys.readouterr()
    assert main(["register", str(m), str(f), "--out", str(tmp_path / "o"), "--moving-mask", str(tmp_path / "mm.npy"),
                 "--fixed-mask", str(tmp_path / "fm.npy"), *TINY]) == 0
    err = capsys.readouterr().err
    assert "--moving-mask" in err and "other than 0 and 1" in err and "--fixed-mask" not in err


def test_register_refuses_overwrite(tmp_path, pair, capsys):
    m, f = write_pair(tmp_path, pair, ".npy")
    out = tmp_path / "out"
    assert main(["register", str(m), str(f), "--out", str(out), *TINY]) == 0
    before = (out / "metrics.json").read_bytes()
    capsys.readouterr()
    assert main(["register", str(m), str(f), "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err
    assert "--force" in err and "Traceback" not in err
    assert (out / "metrics.json").read_bytes() == before
    assert main(["register", str(m), str(f), "--out", str(out), "--force", "--seed", "3", *TINY]) == 0
    assert json.loads((out / "metrics.json").read_text())["seed"] == 3


@pytest.mark.parametrize("case", ["missing", "shape", "field", "preset", "device", "syntax", "notimage", "constant"])
def test_register_bad_input(tmp_path, pair, case, capsys):
    m, f = write_pair(tmp_path, pair, ".npy")
    args = ["register", str(m), str(f), "--out", str(tmp_path / "out"), *TINY]
    if case == "missing":
        args[1] = str(tmp_path / "nope.png")
    elif case == "shape":
        np.save(f, np.random.default_rng(0).random((40, 64)))
    elif case == "field":
        args += ["--set", "widths=3"]
    elif case == "preset":
        args += ["--preset", "fastest"]
    elif case == "device":
        if torch.cuda.is_available():
            pytest.skip("a CUDA GPU is present")
        args += ["--device", "cuda"]
    elif case == "syntax":
        args += ["--set", "lr"]
    elif case == "notimage":
        (tmp_path / "bad.png").write_text("not a png")
        args[2] = str(tmp_path / "bad.png")
    elif case == "constant":
        np.save(m, np.ones((64, 64)))
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err and "Traceback" not in err
    assert not (tmp_path / "out" / "metrics.json").exists()
    if case != "syntax":  # argparse prints its usage first; ours is one line
        assert len(err.splitlines()) == 1 and err.startswith("dipreg register: error:")


def test_module_entry_point_bad_input_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dipreg", "register", str(tmp_path / "a.png"),
                           str(tmp_path / "b.png"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "no such file" in proc.stderr and "Traceback" not in proc.stderr


def test_info(capsys):
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    for word in ("dipreg", "torch", "numpy", "python", "default preset", "antspyx", "LGG data"):
        assert word in text
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["default_preset"]["name"] == default_config(resolve_device(None)).preset
    assert "iterations" in info["default_preset"]["fields"]
    assert isinstance(info["optional"]["antspyx"], bool)


def test_help_and_usage_errors(capsys):
    assert main(["--help"]) == 0
    assert main([]) == 2
    assert main(["register"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_parse_value():
    assert parse_value("1e-3") == 0.001
    assert parse_value("16,32,64") == [16, 32, 64]
    assert parse_value("[8, 8]") == [8, 8]
    assert parse_value("None") is None and parse_value("true") is True
    assert parse_value("lncc") == "lncc"


def outputs_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def no_staging_left(*folders: Path) -> bool:
    return not any(p.name.startswith(".") and "dipreg" in p.name for f in folders for p in f.iterdir())


def test_register_force_replaces_every_output_even_a_read_only_one(tmp_path, pair):
    m, f = write_pair(tmp_path, pair, ".npy")
    out = tmp_path / "out"
    assert main(["register", str(m), str(f), "--out", str(out), *TINY]) == 0
    (out / "warped.npy").chmod(0o444)
    before = outputs_bytes(out)
    assert main(["register", str(m), str(f), "--out", str(out), "--force", "--seed", "3", *TINY]) == 0
    after = outputs_bytes(out)
    assert set(after) == set(before) and all(after[k] != before[k] for k in after)  # all four from the new run
    u, _ = read_displacement(out / "displacement.npy")
    np.testing.assert_allclose(np.load(out / "warped.npy"), warp(pair.moving, u), atol=1e-9)
    assert no_staging_left(out, tmp_path)


@pytest.mark.parametrize("stage", ["writing", "moving into place"])
def test_register_failure_keeps_the_old_outputs_whole(tmp_path, pair, monkeypatch, stage, capsys):
    m, f = write_pair(tmp_path, pair, ".npy")
    out = tmp_path / "out"
    assert main(["register", str(m), str(f), "--out", str(out), *TINY]) == 0
    before = outputs_bytes(out)
    if stage == "writing":
        def fail(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr("dipreg.data.io.write_displacement", fail)
    else:
        import os

        real, calls = os.replace, []

        def replace(src, dst):
            calls.append(dst)
            if len(calls) == 6:  # the 4 old files moved aside, then the second new one fails
                raise OSError(5, "Input/output error")
            return real(src, dst)

        monkeypatch.setattr(os, "replace", replace)
    capsys.readouterr()
    assert main(["register", str(m), str(f), "--out", str(out), "--force", "--seed", "3", *TINY]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert outputs_bytes(out) == before
    assert no_staging_left(out, tmp_path)


def test_register_new_folder_is_complete_or_absent(tmp_path, pair, monkeypatch):
    m, f = write_pair(tmp_path, pair, ".npy")

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("dipreg.data.io.write_displacement", fail)
    assert main(["register", str(m), str(f), "--out", str(tmp_path / "new"), *TINY]) == 2
    assert not (tmp_path / "new").exists() and no_staging_left(tmp_path)


def test_register_force_refuses_a_link_out_of_the_folder(tmp_path, pair, capsys):
    m, f = write_pair(tmp_path, pair, ".npy")
    out = tmp_path / "out"
    assert main(["register", str(m), str(f), "--out", str(out), *TINY]) == 0
    elsewhere = tmp_path / "precious.json"
    elsewhere.write_text("keep me")
    (out / "metrics.json").unlink()
    (out / "metrics.json").symlink_to(elsewhere)
    capsys.readouterr()
    assert main(["register", str(m), str(f), "--out", str(out), "--force", *TINY]) == 2
    err = capsys.readouterr().err
    assert "metrics.json" in err and "symbolic link" in err and str(elsewhere) in err
    assert elsewhere.read_text() == "keep me" and (out / "metrics.json").is_symlink()


@pytest.fixture
def no_registration(monkeypatch):
    """Fail the test if the CLI starts a registration."""
    def forbidden(*args, **kwargs):
        raise AssertionError("the registration ran before the input was checked")

    monkeypatch.setattr(sys.modules["dipreg.methods.dip"], "register", forbidden)


def test_register_refuses_a_singular_affine_before_registering(tmp_path, pair, no_registration, capsys,
                                                              write_singular_nifti):
    m, f = write_pair(tmp_path, pair, ".nii.gz")
    write_singular_nifti(f, pair.fixed)
    assert main(["register", str(m), str(f), "--out", str(tmp_path / "out"), *TINY]) == 2
    err = capsys.readouterr().err
    assert str(f) in err and "invertible" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["under a file", "read-only"])
def test_register_unwritable_out_is_found_before_registering(tmp_path, pair, no_registration, monkeypatch, case,
                                                             capsys):
    m, f = write_pair(tmp_path, pair, ".npy")
    if case == "under a file":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "out"
    else:  # chmod does not stop root, so the refusal of the file system is simulated
        out = tmp_path / "out"
        out.mkdir()

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    assert main(["register", str(m), str(f), "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "cannot" in err and "Traceback" not in err


def test_register_refuses_complex_input(tmp_path, pair, no_registration, capsys):
    m, f = write_pair(tmp_path, pair, ".npy")
    np.save(m, pair.moving + 1j * pair.fixed)
    assert main(["register", str(m), str(f), "--out", str(tmp_path / "out"), *TINY]) == 2
    err = capsys.readouterr().err
    assert str(m) in err and "complex" in err and "np.abs" in err


def test_register_ctrl_c_writes_the_field_reached(tmp_path, pair, monkeypatch, capsys):
    module = sys.modules["dipreg.methods.dip"]
    real = module.register

    def interrupted(*args, **kwargs):
        res = real(*args, **kwargs)
        res.info["stopped"] = "interrupted"
        raise module.RegistrationInterrupted(res.history, res)

    monkeypatch.setattr(module, "register", interrupted)
    m, f = write_pair(tmp_path, pair, ".npy")
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["register", str(m), str(f), "--out", str(out), *TINY]) == 130
    err = capsys.readouterr().err
    detail = get_preset("cpu").detail_steps
    assert f"interrupted after {2 + detail} iteration(s) (2 of the network, {detail} of the detail stage)" in err
    assert str(out) in err
    report = json.loads((out / "metrics.json").read_text())
    assert report["stopped"] == "interrupted" and report["iterations"] == 2 and report["detail_steps"] == detail
    assert (out / "displacement.npy").is_file() and (out / "warped.npy").is_file()


def test_sigterm_is_an_interrupt_that_keeps_the_field(tmp_path, pair, capsys):
    """``kill`` (SIGTERM) during a registration ends it like Ctrl-C: exit code 130 and the field reached,
    marked as interrupted; the process's own SIGTERM handler is back afterwards."""
    m, f = write_pair(tmp_path, pair, ".npy")
    out = tmp_path / "out"
    caught = []

    def late(*args):  # a signal after main() returned must not end pytest
        caught.append(args)

    previous = signal.signal(signal.SIGTERM, late)
    try:
        timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM))
        timer.start()
        args = [a if a != "2" else "1000000" for a in TINY]  # far more iterations than 1.5 s allow
        code = main(["register", str(m), str(f), "--out", str(out), *args, "--set", "patience=0"])
        timer.join()
        assert signal.getsignal(signal.SIGTERM) is late  # main put back the handler it found
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 130 and not caught
    report = json.loads((out / "metrics.json").read_text())
    assert report["stopped"] == "interrupted" and 0 < report["iterations"] < 1000000
    assert (out / "displacement.npy").is_file()
    assert "interrupted" in capsys.readouterr().err


def test_register_ctrl_c_without_a_field_writes_nothing(tmp_path, pair, monkeypatch):
    module = sys.modules["dipreg.methods.dip"]

    def interrupted(*args, **kwargs):
        raise module.RegistrationInterrupted([0.5], None)

    monkeypatch.setattr(module, "register", interrupted)
    m, f = write_pair(tmp_path, pair, ".npy")
    assert main(["register", str(m), str(f), "--out", str(tmp_path / "out"), *TINY]) == 130
    assert not (tmp_path / "out").exists() and no_staging_left(tmp_path)


def test_register_records_threads_machine_and_the_warning(tmp_path, pair, monkeypatch, capsys):
    module = sys.modules["dipreg.methods.dip"]
    real = module.register

    def warns(*args, **kwargs):
        res = real(*args, **kwargs)
        res.info["warning"] = "the registration ended worse than the unregistered pair"
        return res

    m, f = write_pair(tmp_path, pair, ".npy")
    assert main(["register", str(m), str(f), "--out", str(tmp_path / "a"), *TINY]) == 0
    report = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert report["torch_threads"] == torch.get_num_threads() == 1
    assert report["machine"]["cpu_cores"] and report["warning"] is None
    assert report["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert report["machine"]["cpu_isa"] in ("avx512", "avx2", "avx", "other", None)
    monkeypatch.setattr(module, "register", warns)
    capsys.readouterr()
    assert main(["register", str(m), str(f), "--out", str(tmp_path / "b"), *TINY]) == 0
    assert "dipreg register: warning: the registration ended worse" in capsys.readouterr().err
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["warning"].startswith("the registration")
