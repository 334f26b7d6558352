"""Named configurations. ``paper``: the paper's method as far as it is known; ``cpu``: small and fast."""

from __future__ import annotations

import torch

from dipreg.config import RegistrationConfig

PRESETS: dict[str, RegistrationConfig] = {
    "paper": RegistrationConfig(preset="paper"),
    "cpu": RegistrationConfig(preset="cpu"),
}


def get_preset(name: str) -> RegistrationConfig:
    """The preset called ``name``; an unknown name raises a ValueError listing the presets."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"config: unknown preset {name!r}; presets: {sorted(PRESETS)}") from None


def default_config(device: torch.device | str) -> RegistrationConfig:
    """``paper`` on a CUDA device, ``cpu`` elsewhere."""
    return PRESETS["paper" if torch.device(device).type == "cuda" else "cpu"]
