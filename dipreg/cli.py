"""Command line: ``python -m dipreg`` (or ``dipreg``) ``register | info | reproduce | summarize``.

Examples::

    python -m dipreg register moving.nii.gz fixed.nii.gz --out result/ --iterations 300
    python -m dipreg register a.png b.png --out out/ --preset paper --set lr=3e-4 --set grid_scale=2
    python -m dipreg info
    python -m dipreg reproduce --data ~/lgg-mri-segmentation --out runs/lgg --methods dip,ants-SyN --limit 10
    python -m dipreg summarize runs/lgg/results.csv

Exit codes: 0 success, 2 bad input (a one-line message on stderr, no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dipreg.jsonutil import finite, jsonable

EXIT_OK, EXIT_INPUT, EXIT_INTERRUPTED = 0, 2, 130


class CLIError(Exception):
    """A problem the user can fix; reported as one line and exit code 2."""


def parse_value(text: str) -> Any:
    """``--set`` values: ``none``/``null``, ``true``/``false``, JSON numbers and lists, ``a,b,c`` lists, else text."""
    raw = text.strip()
    low = raw.lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    try:
        return json.loads(raw)
    except ValueError:
        pass
    if "," in raw:
        return [parse_value(part) for part in raw.split(",") if part.strip()]
    return raw


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value (e.g. lr=0.001 or down=16,32,64), got {text!r}")
    return key.strip(), parse_value(raw)


def positive_int(text: str) -> int:
    """``argparse`` type: a whole number of at least 1, else an error naming what was given."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _slice_arg(text: str) -> int | str:
    if text == "middle":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'middle' or an integer slice index, got {text!r}") from None


def _channel_arg(text: str) -> int | str:
    """A channel index ("0", "1", "2") as an int; a name (t1_pre, flair, t1_post) as given."""
    return int(text) if text.isdigit() else text


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m dipreg``."""
    from dipreg import __version__

    parser = argparse.ArgumentParser(
        prog="dipreg", description="Deformable image registration with a randomly initialised CNN as the prior "
                                   "(Laves et al., MIDL 2019).")
    parser.add_argument("--version", action="version", version=f"dipreg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    reg = sub.add_parser("register", help="register MOVING onto FIXED and write the results",
                         description="Register MOVING onto FIXED (2D NIfTI, PNG, TIFF, JPEG or .npy) and write "
                                     "warped.<ext of FIXED> (.nii.gz for JPEG), displacement.nii.gz and .npy (pixels, "
                                     "[row, col], pull-back) and metrics.json into --out.")
    reg.add_argument("moving", help="moving image file")
    reg.add_argument("fixed", help="fixed image file (its affine is kept for NIfTI outputs)")
    reg.add_argument("--out", required=True, help="output folder (created if missing)")
    reg.add_argument("--preset", help="configuration preset (default: 'gpu' on CUDA, 'cpu' otherwise)")
    reg.add_argument("--iterations", type=positive_int,
                     help="number of the network's optimisation steps (a detail stage, detail_steps, follows)")
    reg.add_argument("--seed", type=_nonneg_int, default=0, help="random seed (default 0)")
    reg.add_argument("--device", help="'cpu', 'cuda', 'cuda:1', ... (default: CUDA when available)")
    reg.add_argument("--set", dest="overrides", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                     help="change a config field, e.g. --set lr=3e-4 --set down=16,32,64 (repeatable)")
    reg.add_argument("--channel", type=_channel_arg,
                     help="channel of colour images: 0, 1, 2 or t1_pre, flair, t1_post")
    reg.add_argument("--moving-mask", help="optional mask of MOVING (for Dice in metrics.json)")
    reg.add_argument("--fixed-mask", help="optional mask of FIXED (for Dice in metrics.json)")
    reg.add_argument("--force", action="store_true",
                     help="replace existing outputs (all four together: on any failure the old ones stay)")
    reg.add_argument("--no-progress", action="store_true", help="no progress bar")
    reg.add_argument("--compile", action="store_true",
                     help="run the optimisation through torch.compile (a one-off compile, then faster steps)")

    info = sub.add_parser("info", help="versions, device, default preset, optional packages, data location")
    info.add_argument("--json", action="store_true", help="print JSON")

    rep = sub.add_parser("reproduce", help="run the methods on the LGG pairs (the paper's Table 1)",
                         description="Run every method on every LGG pair, one row per (pair, method) in "
                                     "OUT/results.csv. Run the same command again to resume.")
    rep.add_argument("--data", help="LGG data folder (default: DIPREG_LGG_ROOT or ../shared/data/...)")
    rep.add_argument("--out", required=True, help="output folder for results.csv and provenance.json")
    rep.add_argument("--methods", default="dip,classical,ants-SyN,ants-strong",
                     help="comma-separated: dip, classical, ants-<setting> (default: %(default)s)")
    rep.add_argument("--protocol", default="consecutive",
                     help="consecutive, adjacent-slices or pre-post (two contrasts of one subject: consider "
                          "--set loss=lncc --set detail_steps=0)")
    rep.add_argument("--slice", type=_slice_arg, default="middle", help="'middle' or a 0-based slice index")
    rep.add_argument("--channel", type=_channel_arg, help="t1_pre, flair (default) or t1_post (or 0, 1, 2)")
    rep.add_argument("--limit", type=_nonneg_int, help="at most this many pairs")
    rep.add_argument("--size", type=positive_int, help="resample pairs to SIZE x SIZE pixels first")
    rep.add_argument("--preset", help="DIP preset (default: 'gpu' on CUDA, 'cpu' otherwise)")
    rep.add_argument("--iterations", type=positive_int, help="DIP network steps (the detail stage follows)")
    rep.add_argument("--set", dest="overrides", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                     help="change a DIP config field (repeatable)")
    rep.add_argument("--classical-set", dest="classical", action="append", type=_key_value, default=[],
                     metavar="KEY=VALUE", help="change a setting of the classical method, e.g. weight=0.1")
    rep.add_argument("--seed", type=_nonneg_int, default=0, help="random seed (default 0)")
    rep.add_argument("--device", help="'cpu', 'cuda', ... (default: CUDA when available)")
    rep.add_argument("--no-progress", action="store_true", help="no progress bars")
    rep.add_argument("--compile", action="store_true",
                     help="DIP through torch.compile, compiled once before the first pair (untimed)")
    rep.add_argument("--jobs", type=positive_int, default=1,
                     help="run the pairs in JOBS worker processes, one torch thread each (default 1: one after "
                          "the other, here)")
    rep.add_argument("--rerun-changed", action="store_true",
                     help="run again the rows of a method that ran with another configuration than it has now "
                          "(after a preset changed) instead of refusing the folder; other rows are kept")

    summ = sub.add_parser("summarize", help="mean ± SD per method of a results.csv")
    summ.add_argument("results", help="results.csv (or the folder holding it)")
    summ.add_argument("--json", action="store_true", help="print JSON")
    grade = sub.add_parser("grade", help="grade student notebooks: each code exercise's check (dipreg.teaching.grade)")
    grade.add_argument("notebooks", nargs="+", help="the notebooks (.ipynb) to grade")
    grade.add_argument("--json", dest="json_out", help="also write the reports to this JSON file")
    return parser


# ---------------------------------------------------------------------------------------------------------------


def _ext(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _read_mask(path: str | None, shape: tuple[int, ...], what: str):
    if path is None:
        return None
    import numpy as np

    from dipreg.data.io import read_image

    m, _ = read_image(path)
    if m.shape != shape:
        raise ValueError(f"{what} {path}: shape {m.shape} differs from the images' {shape}")
    if not np.isin(m, (0.0, 1.0)).all():  # a soft mask, or an image given by mistake
        print(f"dipreg register: warning: {what} {path} holds values other than 0 and 1 (0 and 255 in 8-bit "
              "files); pixels above half the range count as inside", file=sys.stderr)
    return m > 0.5


def _refuse_outward_links(out: Path, targets: Sequence[Path]) -> None:
    """Refuse to replace an output that is a symbolic link leading out of ``out``."""
    root = out.resolve()
    for target in targets:
        if target.is_symlink() and not target.resolve().is_relative_to(root):
            raise CLIError(f"--out {out}: {target} is a symbolic link to {target.resolve()}, outside --out; "
                           "--force does not replace files through links that leave the folder. Remove the link, "
                           "or choose another --out")


def _staging(out: Path) -> Path:
    """A new empty folder on the file system of ``out`` for the outputs before they are moved into place: inside
    ``out`` when it exists, else beside it (so ``out`` appears whole). Creating it checks that ``out`` is
    writable, before any registration."""
    try:
        if out.is_dir():
            return Path(tempfile.mkdtemp(prefix=".dipreg-staging-", dir=out))
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.dipreg-staging-", dir=out.parent))
    except OSError as exc:
        raise CLIError(f"--out {out}: cannot write there ({exc.strerror or exc}); pass a folder you can write to"
                       ) from None


def _install(staging: Path, out: Path, names: Sequence[str]) -> None:
    """Move the files ``names`` from ``staging`` into ``out``, all or none: on any failure the files ``out``
    held before are put back."""
    if not out.exists():
        staging.rename(out)  # a new folder appears whole
        return
    backup = Path(tempfile.mkdtemp(prefix=".dipreg-previous-", dir=staging))
    old, new = [], []
    try:
        for name in names:
            if os.path.lexists(out / name):
                os.replace(out / name, backup / name)
                old.append(name)
        for name in names:
            os.replace(staging / name, out / name)
            new.append(name)
    except BaseException:
        for name in new:
            os.replace(out / name, staging / name)
        for name in old:
            os.replace(backup / name, out / name)
        raise


def cmd_register(args: argparse.Namespace) -> int:
    import torch

    from dipreg import methods
    from dipreg.data.io import WRITE_IMAGE_FORMATS, read_image, write_displacement, write_image
    from dipreg.experiments.provenance import machine_info, versions
    from dipreg.methods.dip import RegistrationInterrupted, resolve_device

    moving_path, fixed_path = Path(args.moving), Path(args.fixed)
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file; pass a folder")
    ext = _ext(fixed_path)
    ext = ext if ext in WRITE_IMAGE_FORMATS else ".nii.gz"
    names = {"warped": f"warped{ext}", "displacement": "displacement.nii.gz",
             "displacement_npy": "displacement.npy", "metrics": "metrics.json"}
    existing = [name for name in names.values() if os.path.lexists(out / name)]
    if existing and not args.force:
        raise CLIError(f"{out} already holds {', '.join(existing)}; pass --force to overwrite or choose another "
                       "--out")
    _refuse_outward_links(out, [out / name for name in existing])

    dev = resolve_device(args.device)
    overrides = dict(args.overrides)
    if args.iterations is not None:
        overrides["iterations"] = args.iterations
    cfg = methods.settings("dip", preset=args.preset, overrides=overrides, device=dev)  # fails before any read

    moving, _ = read_image(moving_path, channel=args.channel)
    fixed, affine = read_image(fixed_path, channel=args.channel)
    if moving.shape != fixed.shape:
        raise ValueError(f"the images differ in shape: moving {moving.shape}, fixed {fixed.shape}; resample one "
                         "onto the other's grid first")
    moving_mask = _read_mask(args.moving_mask, moving.shape, "--moving-mask")
    fixed_mask = _read_mask(args.fixed_mask, fixed.shape, "--fixed-mask")
    if (moving_mask is None) != (fixed_mask is None):
        raise CLIError("Dice needs both --moving-mask and --fixed-mask")

    staging = _staging(out)  # before the registration, so that a folder that cannot be written costs nothing
    try:
        try:
            result = methods.run("dip", moving, fixed, cfg, seed=args.seed, device=dev,
                                 progress=not args.no_progress, compile=args.compile)
        except RegistrationInterrupted as exc:
            if exc.result is None:
                raise
            result = exc.result  # info["stopped"] == "interrupted": written as such

        warped_affine = affine if ext in (".nii", ".nii.gz") else None
        write_image(staging / names["warped"], result.warped, warped_affine)
        write_displacement(staging / names["displacement"], result.displacement, affine)
        write_displacement(staging / names["displacement_npy"], result.displacement)
        metrics = result.metrics(moving_mask, fixed_mask)
        warning = result.info.get("warning")
        report = {
            "method": result.method,
            "moving": str(moving_path), "fixed": str(fixed_path),
            "shape": list(moving.shape),
            "metrics": metrics,
            "config": result.config.to_dict(),
            "preset": result.info.get("preset"),
            "overridden": result.info.get("overridden"),
            "seed": args.seed,
            "compile": args.compile,
            "iterations": result.info.get("iterations", len(result.history)),
            "detail_steps": result.info.get("detail_steps", 0),
            "stopped": result.info.get("stopped"),
            "warning": warning,
            "final_loss": result.history[-1] if result.history else None,
            "readout_step": result.info.get("readout_step"),
            "seconds": result.seconds,
            "device": result.device,
            "torch_threads": torch.get_num_threads(),
            "machine": machine_info(),
            "versions": versions(),
            "outputs": dict(names),
            "displacement_units": "pixels, channel 0 rows, channel 1 columns, pull-back: warped(x) = moving(x + u(x))",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (staging / names["metrics"]).write_text(json.dumps(finite(report), indent=2, default=jsonable) + "\n",
                                                encoding="utf-8")
        _install(staging, out, list(names.values()))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if warning:
        print(f"dipreg register: warning: {warning}", file=sys.stderr)
    if result.info.get("stopped") == "interrupted":
        steps, detail = len(result.history), result.info.get("detail_steps") or 0
        split = f" ({steps - detail} of the network, {detail} of the detail stage)" if detail else ""
        print(f"dipreg register: interrupted after {steps} iteration(s){split}; wrote the field reached to "
              f"{out} (metrics.json says \"stopped\": \"interrupted\")", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"SSIM {metrics['ssim_before']:.3f} -> {metrics['ssim_after']:.3f}, mean det J {metrics['jac_mean']:.3f} "
          f"(SD {metrics['jac_std']:.3f}), {100 * metrics['folded_fraction']:.2f} % folded; "
          f"{result.seconds:.1f} s on {result.device}. Wrote {out / names['warped']}, {names['displacement']}, "
          f"{names['displacement_npy']}, {names['metrics']}")
    return EXIT_OK


def collect_info() -> dict[str, Any]:
    """What ``dipreg info`` reports, as a dict."""
    import importlib.util

    import torch

    from dipreg.experiments.provenance import machine_info, versions
    from dipreg.methods.dip import resolve_device
    from dipreg.presets import default_config

    dev = resolve_device(None)
    cfg = default_config(dev)
    machine = machine_info()
    device: dict[str, Any] = {"default": str(dev), **{k: machine[k] for k in ("cpu", "cpu_isa", "cpu_capability",
                                                                              "isa_limits", "cpu_cores")},
                              "torch_threads": torch.get_num_threads(), "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        device["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    try:
        from dipreg.data import default_lgg_root

        root = default_lgg_root()
        lgg = str(root) if root is not None else None
        lgg_note = None if root is not None else ("not found; set DIPREG_LGG_ROOT or pass --data "
                                                  "(dipreg.data.download_lgg fetches it)")
    except (ValueError, FileNotFoundError, OSError) as exc:
        lgg, lgg_note = None, str(exc)
    return {
        "versions": versions(),
        "device": device,
        "default_preset": {"name": cfg.preset, "fields": cfg.to_dict()},
        "optional": {"antspyx": importlib.util.find_spec("ants") is not None,
                     "ipywidgets": importlib.util.find_spec("ipywidgets") is not None},
        "lgg_root": lgg,
        "lgg_note": lgg_note,
    }


def cmd_info(args: argparse.Namespace) -> int:
    info = collect_info()
    if args.json:
        print(json.dumps(info, indent=2, default=jsonable))
        return EXIT_OK
    v, d = info["versions"], info["device"]
    lines = ["versions: " + ", ".join(f"{k} {val}" for k, val in v.items())]
    gpus = d.get("gpus")
    lines.append(f"device: {d['default']}" + (f" ({', '.join(gpus)})" if gpus else " (no CUDA GPU)"))
    limits = ", ".join(f"{k}={v}" for k, v in d["isa_limits"].items())
    lines.append(f"cpu: {d['cpu']} ({d['cpu_isa'] or 'instruction set unknown'}; PyTorch kernels "
                 f"{d['cpu_capability']}{', ' + limits if limits else ''}), {d['cpu_cores']} cores, torch uses "
                 f"{d['torch_threads']} threads")
    p = info["default_preset"]
    lines.append(f"default preset on this device: {p['name']!r}")
    lines.extend(f"    {k} = {val!r}" for k, val in p["fields"].items())
    opt = info["optional"]
    ants_state = "importable" if opt["antspyx"] else "not installed (pip install antspyx)"
    lines.append(f"antspyx (ANTs comparator): {ants_state}")
    lines.append(f"ipywidgets (ablation widgets): {'importable' if opt['ipywidgets'] else 'not installed'}")
    lines.append(f"LGG data: {info['lgg_root'] or info['lgg_note']}")
    print("\n".join(lines))
    return EXIT_OK


def cmd_reproduce(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from dipreg.experiments.report import format_summary, summarize_results
    from dipreg.experiments.results import load_results
    from dipreg.experiments.runner import reproduce

    overrides = dict(args.overrides)
    if args.iterations is not None:
        overrides["iterations"] = args.iterations
    method_options = {"classical": dict(args.classical)} if args.classical else None
    command = " ".join(["dipreg", *argv])
    path = Path(args.out) / "results.csv"
    try:
        path = reproduce(args.data, args.out, methods=args.methods, protocol=args.protocol, slice=args.slice,
                         channel=args.channel, limit=args.limit, size=args.size, preset=args.preset,
                         device=args.device, seed=args.seed, progress=not args.no_progress, overrides=overrides,
                         method_options=method_options, command=command, compile=args.compile, jobs=args.jobs,
                         rerun_changed=args.rerun_changed)
    except KeyboardInterrupt:
        n = len(load_results(path)) if path.exists() else 0
        print(f"dipreg reproduce: interrupted; {n} finished row(s) are saved in {path}. Run the same command again "
              "to resume.", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"results: {path}\n")
    print(format_summary(summarize_results(load_results(path))))
    return EXIT_OK


def cmd_summarize(args: argparse.Namespace) -> int:
    from dipreg.experiments.report import format_summary, summarize_results
    from dipreg.experiments.results import load_results

    summary = summarize_results(load_results(args.results))
    if args.json:
        print(json.dumps(finite(summary), indent=2))
    else:
        print(format_summary(summary))
    return EXIT_OK


def _terminate_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    SIGTERM (``kill``, ``timeout``, a batch scheduler) is handled like Ctrl-C: ``register`` keeps the field
    reached, marked as interrupted, and ``reproduce`` keeps its finished rows and releases its lock.
    """
    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_INPUT
    from dipreg.methods.dip import RegistrationError

    try:
        if args.command == "register":
            return cmd_register(args)
        if args.command == "info":
            return cmd_info(args)
        if args.command == "reproduce":
            return cmd_reproduce(args, argv)
        if args.command == "grade":
            from dipreg.teaching.grade import main as grade_main

            return grade_main(args.notebooks, args.json_out)
        return cmd_summarize(args)
    except (CLIError, ValueError, TypeError, OSError, ImportError, RegistrationError) as exc:
        msg = str(exc).strip().replace("\n", " ") or type(exc).__name__
        print(f"dipreg {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print(f"dipreg {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
