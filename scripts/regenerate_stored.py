"""Regenerate the stored results that a change of a preset affects, in a staging folder (issue 11: a change of
the default means regenerating every stored result it affects).

Usage (from the repository root, on a clean commit)::

    python scripts/regenerate_stored.py --stage DIR --lgg PATH/kaggle_3m [--jobs 2] [--only NAME,...]
    python scripts/regenerate_stored.py --dry-run      # what a change of a preset would run again, nothing run

Each stored run under ``dipreg/data/book`` is copied to ``DIR/NAME`` (once: a later call resumes there) and
brought up to date there, running only what changed:

* the LGG runs (``results.csv``): :func:`dipreg.experiments.runner.reproduce` with the run's own protocol, slice,
  channel, size, seed, methods, DIP preset and overrides (read from its ``provenance.json``) and
  ``rerun_changed=True``, so only the rows whose method has another configuration now run again (the other
  methods with their default settings, as every stored run has them). ``lgg_all_*`` read ``--lgg`` (the full
  download), the others ``../shared/data``'s six patients;
* the ladder (``paper_steps``): the rungs and controls whose configuration changed, or that are new or lack pairs,
  run on its pairs (:func:`dipreg.experiments.steps.run_steps` with ``rerun_changed=True``, as
  ``scripts/paper_to_ours.py``);
* the ablation grid (``ablation_sample.npz``): built anew in ``DIR`` (a later call resumes it there) when the
  ``cpu`` preset is no longer the stored grid's base (as ``scripts/make_ablation_grid.py``; then update
  ``ablation_sample.md`` by hand).

One torch thread per process. Read what changed (the chapters' numbers, ``BENCHMARKS.md``), then copy ``DIR``'s
folders over ``dipreg/data/book`` and rebuild the book.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from dipreg.cli import positive_int
from dipreg.config import RegistrationConfig
from dipreg.data import sample_pair, tissue_pairs
from dipreg.experiments.ablation import ABLATION_AXES, load_grid, run_grid
from dipreg.experiments.results import config_changes, load_results
from dipreg.experiments.runner import plan_methods, reproduce
from dipreg.experiments.steps import load_steps, run_steps, rung_configs, stale_rungs
from dipreg.jsonutil import changed_settings
from dipreg.presets import get_preset

BOOK = Path(__file__).resolve().parents[1] / "dipreg" / "data" / "book"
ABLATION = "ablation_sample.npz"


def stored_names() -> list[str]:
    """The stored results under ``dipreg/data/book`` that depend on the presets."""
    return sorted(p.name for p in BOOK.iterdir()
                  if (p.is_dir() and p.name.startswith("lgg_")) or p.name in ("paper_steps", ABLATION))


def _stage(name: str, stage: Path) -> Path:
    """``stage/name``, copied from the stored result on the first call."""
    target = stage / name
    if not target.exists():
        tmp = stage / (name + ".copying")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(BOOK / name, tmp)
        tmp.rename(target)
    return target


def _lgg_args(prov: dict) -> dict:
    """The arguments of :func:`reproduce` that remake the stored run of ``prov`` (its provenance). The methods
    other than DIP run with their default settings, as in every stored run; one that did not is refused."""
    custom = [m for m, v in prov["methods"].items() if m == "classical" and v.get("preset") != "default"]
    if custom:
        raise SystemExit(f"{custom} ran with settings of their own, which provenance.json does not hold: regenerate "
                         "that run by hand")
    s = prov["slice"]
    return dict(methods=list(prov["methods"]), protocol=prov["protocol"], slice=s if s == "middle" else int(s),
                channel=None if prov["protocol"] == "pre-post" else prov["channel"], limit=prov["limit"],
                size=prov["size"], preset=prov["methods"].get("dip", {}).get("preset"),  # as resolved, any device
                seed=prov["seed"], overrides=prov["dip_overrides"] or None)


def _ablation_change() -> list[str]:
    """The fields in which the ``cpu`` preset (at the grid's iterations) differs from the stored grid's base."""
    grid = load_grid(BOOK / ABLATION)
    cpu = get_preset("cpu")  # a grid made with iterations=None ran the preset's own
    base = (cpu if grid.meta["iterations"] is None else cpu.replace(iterations=grid.meta["iterations"])).to_dict()
    return changed_settings(grid.meta["base"], base, RegistrationConfig().to_dict())


def _ladder_stale(folder: Path) -> tuple[dict, dict[str, str]]:
    """The ladder's provenance and the rungs and controls to run again (name -> why): its :func:`stale_rungs`, those
    added since it ran (absent from its provenance), and every other one but the expensive ``paper`` rung that
    lacks pairs (an interrupted run, or one that ran other names). ``paper`` is asked for only when an interrupted
    last run left it on fewer pairs."""
    prov = json.loads((folder / "provenance.json").read_text(encoding="utf-8"))
    rows = load_steps(folder)
    ladder = rung_configs(prov["target"])
    stale = stale_rungs(rows, prov["rungs"], ladder)
    stale.update({name: "that are new on the ladder" for name in ladder if name not in prov["rungs"]})
    pairs = {name: {r["pair"] for r in rows if r["step"] == name} for name in ladder}
    stale.update({name: "that lack pairs" for name in ladder
                  if name != "paper" and name not in stale and pairs[name] != set(prov["pairs"])})
    last = prov["runs"][-1] if prov.get("runs") else {}
    if last and "finished" not in last and "paper" in last.get("steps", []) and "paper" not in stale \
            and pairs["paper"] != set(prov["pairs"]):
        stale["paper"] = "that an interrupted run left on fewer pairs"
    return prov, stale


def pending(name: str) -> str:
    """What regenerating the stored result ``name`` would change, in words (nothing is run): the rows that ran
    another configuration than the presets give now (a stored run has no missing or failed rows)."""
    if name == ABLATION:
        changed = _ablation_change()
        return f"rebuild, {len(load_grid(BOOK / ABLATION).records)} settings (changed: {changed})" if changed \
            else "nothing"
    if name == "paper_steps":
        prov, stale = _ladder_stale(BOOK / name)
        return (f"{len(stale)} rung(s) x {len(prov['pairs'])} pairs: rows of {sorted(stale)}, "
                + " or ".join(sorted(set(stale.values())))) if stale else "nothing"
    prov = json.loads((BOOK / name / "provenance.json").read_text(encoding="utf-8"))
    args = _lgg_args(prov)
    plan = plan_methods(args["methods"], preset=args["preset"], device="cpu", seed=args["seed"], progress=False,
                        overrides=args["overrides"], method_options=None)
    path = BOOK / name / "results.csv"
    changes = config_changes(load_results(path), plan, path)
    return f"{len(changes)} rows" if changes else "nothing"


def regenerate_lgg(name: str, stage: Path, lgg: str | None, jobs: int) -> None:
    out = _stage(name, stage)
    prov = json.loads((out / "provenance.json").read_text(encoding="utf-8"))
    reproduce(lgg if name.startswith("lgg_all") else None, out, **_lgg_args(prov), device="cpu", progress=False,
              jobs=jobs, rerun_changed=True, command=f"scripts/regenerate_stored.py ({name})")


def regenerate_ladder(stage: Path) -> None:
    out = _stage("paper_steps", stage)
    prov, stale = _ladder_stale(out)
    if not stale:
        print("paper_steps: every rung ran its current configuration, nothing to do")
        return
    pairs = tissue_pairs("held-out")
    if [p.id for p in pairs] != prov["pairs"]:
        raise SystemExit(f"paper_steps: its pairs {prov['pairs']} are not the held-out tissue pairs")
    ladder = rung_configs(prov["target"])
    run_steps(pairs, out, target=prov["target"], steps=[s for s in ladder if s in stale], seed=prov["seed"],
              device="cpu", rerun_changed=True)


def regenerate_ablation(stage: Path) -> None:
    if not (stage / ABLATION).exists() and not _ablation_change():
        print(f"{ABLATION}: its base is the cpu preset, nothing to do")
        return
    grid = load_grid(BOOK / ABLATION)
    run_grid(sample_pair(size=128), stage / ABLATION, base="cpu", axes=dict(ABLATION_AXES),
             iterations=grid.meta["iterations"], seed=0, device="cpu", progress=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", help="staging folder (created; resumed when it exists)")
    ap.add_argument("--dry-run", action="store_true", help="say what would run again, run nothing")
    ap.add_argument("--lgg", help="the full LGG download (kaggle_3m), for the lgg_all_* runs")
    ap.add_argument("--jobs", type=positive_int, default=1, help="worker processes for the LGG runs")
    ap.add_argument("--only", help="comma-separated names under dipreg/data/book (default: all)")
    args = ap.parse_args()

    names = stored_names()
    if args.only:
        wanted = [n.strip() for n in args.only.split(",")]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise SystemExit(f"--only: no stored result {unknown}; stored: {names}")
        names = wanted
    if args.dry_run:
        for name in names:
            print(f"{name}: {pending(name)}")
        return
    if not args.stage:
        raise SystemExit("--stage: the folder to regenerate in (or --dry-run)")
    if any(n.startswith("lgg_all") for n in names) and not args.lgg:
        raise SystemExit("--lgg: the lgg_all_* runs need the full LGG download (README, 'The LGG data')")
    torch.set_num_threads(1)
    stage = Path(args.stage)
    stage.mkdir(parents=True, exist_ok=True)
    for name in names:
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        if name == ABLATION:
            regenerate_ablation(stage)
        elif name == "paper_steps":
            regenerate_ladder(stage)
        else:
            regenerate_lgg(name, stage, args.lgg, args.jobs)
        print(f"== {name}: {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
