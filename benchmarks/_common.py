"""What the benchmark scripts share: the ``--threads``, ``--device`` and ``--quick`` options and their effect."""

from __future__ import annotations

import argparse

import torch

from dipreg.methods.dip import resolve_device


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the script's docstring as its help and the three shared options."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    ap.add_argument("--quick", action="store_true", help="tiny settings, a few seconds: a smoke test")
    return ap


def setup(args: argparse.Namespace) -> torch.device:
    """Apply ``--threads`` and return the ``--device``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    return resolve_device(args.device)
