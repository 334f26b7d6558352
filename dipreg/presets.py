"""Named configurations, each field's choice with its source or its reason in ``notes``.

* ``paper``: the paper's method as far as it is known (Laves et al. 2019 and the DIP reference code it
  builds on). The paper leaves widths, learning rate, iterations, units and readout unstated; the notes
  say what we chose. On inter-patient brain pairs it matches well but folds (book chapter 9).
* ``cpu``: the book's default on a CPU: the same network family made regular and cheap. The generator
  runs on a grid 8x coarser than the image (a 32 x 32 control grid at 256 px), its output is a
  stationary velocity integrated by scaling and squaring, the field is held at the image border, and a
  barrier term stops the rare pixel that would still fold. Each change and its evidence: chapter 9.
* ``gpu``: the ``cpu`` parameterisation at the paper's width (128 channels, 5 scales) and twice the
  iterations, the default on CUDA.
"""

from __future__ import annotations

import torch

from dipreg.config import RegistrationConfig

_PAPER_NOTES = {
    "down": "DIP reference notebooks: 128 channels at all 5 scales (paper: 'chosen according to' DIP)",
    "up": "as down",
    "skip": "DIP reference: 4 skip channels per scale",
    "upsample": "bilinear with align_corners=False (PyTorch's default, as the DIP reference's nn.Upsample); "
                "the first author's later DIP code passes align_corners=True",
    "padding": "zeros: the DIP notebooks used reflection, which is many times slower on CPU (not compared for quality)",
    "in_channels": "DIP reference notebooks: 32 input channels",
    "noise_std": "paper: z ~ N(0, 0.1), read as standard deviation 0.1",
    "noise": "paper: z sampled in every iteration",
    "init_std": "paper: theta ~ N(0, 0.01), read as standard deviation 0.01 for convolution weights",
    "grid_scale": "paper: z has the spatial size of the image",
    "output_scale": "unstated; the network output is read in pixels",
    "integrate": "paper: phi = x + f(z), the output is the displacement itself",
    "loss": "paper: mean absolute error",
    "optimizer": "paper: Adam",
    "lr": "unstated; 1e-3 (Adam's default) with pixel units",
    "iterations": "unstated; 1000",
    "readout_draws": "unstated; the final field is the mean over 8 noise draws",
}

_CPU_NOTES = {
    "down": "4 scales 16..128: the 32 x 32 grid leaves 2 x 2 pixels at the coarsest scale",
    "up": "as down",
    "grid_scale": "8: a 32 x 32 control grid at 256 px; cost /64 and no pixel-level noise in the field",
    "output_scale": "8 pixels per unit, so Adam's first steps move the field at a useful speed",
    "integrate": "7 scaling-and-squaring steps: the output is a velocity, so the field stays invertible",
    "boundary": "fixed: the field vanishes at the image border, so mean det J stays 1",
    "fold_penalty": "10 x mean relu(0.1 - det J): a barrier that only acts where a pixel would fold",
    "lr": "3e-3: of 1e-2 and 3e-3 tried on the LGG development pairs, 1e-2 folded more",
    "iterations": "800: 500 -> 800 steps raised mean SSIM from 0.698 to 0.715 on the development pairs",
}

PRESETS: dict[str, RegistrationConfig] = {
    "paper": RegistrationConfig(preset="paper", down=(128,) * 5, up=(128,) * 5, lr=1e-3, iterations=1000,
                                notes=_PAPER_NOTES),
    "cpu": RegistrationConfig(preset="cpu", down=(16, 32, 64, 128), up=(16, 32, 64, 128), grid_scale=8,
                              output_scale=8.0, integrate=7, boundary="fixed", fold_penalty=10.0, lr=3e-3,
                              iterations=800, notes=_CPU_NOTES),
}
PRESETS["gpu"] = PRESETS["cpu"].replace(
    preset="gpu", down=(128,) * 5, up=(128,) * 5, grid_scale=4, output_scale=4.0, iterations=1000,
    notes={**_CPU_NOTES, "down": "the paper's width: 128 channels at 5 scales", "up": "as down",
           "grid_scale": "4: a 64 x 64 control grid at 256 px", "output_scale": "4 pixels per unit",
           "iterations": "1000"})


def get_preset(name: str) -> RegistrationConfig:
    """The preset called ``name``; an unknown name raises a ValueError listing the presets."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"config: unknown preset {name!r}; presets: {sorted(PRESETS)}") from None


def default_config(device: torch.device | str) -> RegistrationConfig:
    """``gpu`` on a CUDA device, ``cpu`` elsewhere."""
    return PRESETS["gpu" if torch.device(device).type == "cuda" else "cpu"]
