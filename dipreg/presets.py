"""Named configurations, each field's choice with its source or its reason in ``notes``.

* ``paper``: the paper's method as far as it is known (Laves et al. 2019 and the DIP reference code it
  builds on). The paper leaves widths, learning rate, iterations, units and readout unstated; the notes
  say what we chose. On inter-patient brain pairs it matches well but folds (book chapter 9).
* ``cpu``: the default on a CPU, a hybrid of the paper's method and two hand-made priors: a global affine
  pre-alignment, then a smaller generator of the same family (wider skip branches, nearest-neighbour upsampling),
  fed one fixed noise draw, on a control grid 4x coarser than the image, integrated as a stationary velocity by
  scaling and squaring (the last two squarings on a grid twice as fine), held at the image border, read out at the
  step with the lowest loss, with a barrier that stops the rare pixel that would still fold and a penalty on the
  variance of log det J (an explicit term), robust intensity handling (winsorised at the foreground's 0.5 and 99.5
  % quantiles, the moving image brought to the fixed one's intensity scale) and early stopping, then a detail stage
  (a Gaussian-smoothed free velocity on a grid twice as fine, composed before the network's field: a classical
  prior for the finest detail). :func:`differences`
  lists every departure from ``paper``; BENCHMARKS.md has the measurements behind each value and which pairs chose
  them.
* ``gpu``: the ``cpu`` method at the paper's width (128 channels, 5 scales) and more steps, the default on CUDA
  (not yet measured on a GPU).
* ``fine``: the ``cpu`` method on a control grid twice as fine (2x coarser than the image instead of 4x): a little
  closer anatomy for about 2.2 times the ``cpu`` preset's time; the choice when accuracy matters more than the CPU's
  seconds.
"""

from __future__ import annotations

from typing import Any

import torch

from dipreg.config import RegistrationConfig, register_presets

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
    "readout": "unstated; the network after the last step (with fresh noise, read out as the mean over draws)",
}

_CPU_NOTES = {
    "down": "3 scales 16..64 on the 64 x 64 grid (8 x 8 at the coarsest): a quarter fewer operations per step than "
            "4 scales, and as good after the same number of steps (development tissue Dice at step 120: 0.738 "
            "against 0.728; BENCHMARKS.md, session 12)",
    "up": "as down",
    "skip": "16 skip channels per scale (the DIP reference: 4): with nearest upsampling, development tissue Dice "
            "0.750 against 0.717 at SD log det J 0.111 against 0.100 and LGG SSIM 0.683 against 0.677, for about 5 % "
            "more time per call than 4 channels with bilinear upsampling; 4 / 8 / 16 / 32 channels gave Dice 0.742 / "
            "0.746 / 0.750 / 0.755, 32 costing more time still (BENCHMARKS.md, session 14)",
    "upsample": "nearest inside the generator (the DIP reference: bilinear): alone, development tissue Dice 0.742 "
                "against 0.717 and LGG SSIM 0.684 against 0.677, and about 4 % less time per call; the field itself "
                "stays smooth, as the network's output is integrated as a velocity and resized bilinearly "
                "(BENCHMARKS.md, session 14)",
    "prealign": "affine: a global affine map first (as ANTs runs before SyN); on the held-out tissue pairs label "
                "Dice rose from 0.558 to 0.676 and SD log det J fell from 0.58 to 0.39, on the development pairs "
                "0.652 -> 0.659; on the 5 LGG development pairs SSIM 0.677 -> 0.676, SD log det J 0.69 -> 0.70 "
                "(BENCHMARKS.md, session 6)",
    "prealign_finest": "2: the affine stage stops at half resolution (at 4 and 2, not at full resolution): on the "
                       "development pairs tissue Dice 0.7500 against 0.7500, LGG SSIM 0.6886 against 0.6892, for "
                       "half the stage's time (0.26 against 0.53 s a call; BENCHMARKS.md, session 15); stopping at 4 "
                       "lost LGG SSIM (0.6843)",
    "grid_scale": "4: a 64 x 64 control grid at 256 px (with 3 scales, fixed input and volume_penalty 0.1, an 8x "
                  "grid gave development tissue Dice 0.693 against 0.738 at step 120; BENCHMARKS.md, sessions 9 "
                  "and 12)",
    "output_scale": "4 pixels per unit, so Adam's first steps move the field at a useful speed",
    "noise": "fixed: one draw of z kept for every step, as Ulyanov et al.'s DIP does (the paper draws afresh); on "
             "the development pairs tissue Dice 0.715 against 0.668 and LGG SSIM 0.683 against 0.675 with a quarter "
             "fewer steps (8x grid, early stopping; BENCHMARKS.md, session 12), and no average over draws at the end",
    "readout": "best: the field of the step with the lowest loss, which the loss and its fold barrier have "
               "evaluated, not the network after the last Adam step, which none has (in session 14 that unseen last "
               "step folded one pixel of one LGG pair under the fine preset); on the development pairs tissue Dice "
               "0.7500 against 0.7498 and LGG SSIM 0.689 against 0.683 (BENCHMARKS.md, session 15)",
    "integrate": "7 scaling-and-squaring steps: the output is a velocity, so the field stays invertible",
    "integrate_refine": "2: the last two of the 7 squarings on a grid twice as fine as the generator's (128 x 128 at "
                        "256 px): on the development pairs tissue Dice 0.762 against 0.750 and LGG SSIM 0.693 against "
                        "0.689 at a lower SD log det J (0.100 against 0.110), on the held-out tissue pairs 0.755 "
                        "against 0.745, for about 10 % more time a call (whole calls interleaved: 4.37 against 3.87 "
                        "s, median per pair +8 %); all 7 on that grid 0.762 / 0.693 for more time, all 7 on the "
                        "image's grid 0.767 / 0.689 (BENCHMARKS.md, session 16)",
    "smooth": "0: no Gaussian readout once volume_penalty is on; with the penalty, 0 / 3 / 6 px gave development "
              "tissue Dice 0.665 / 0.667 / 0.650 at SD log det J 0.113 / 0.113 / 0.101, LGG development SSIM "
              "0.684 / 0.676 / 0.674, known-field error (worst case) 0.145 / 0.189 px (BENCHMARKS.md, session 7); "
              "without the penalty 6 px was the default",
    "volume_penalty": "0.2 x the variance of log det J, an explicit regulariser (the default is a hybrid): with the "
                      "fixed input and the 4x grid, 0.1 / 0.2 gave development tissue Dice 0.726 / 0.713 at SD log "
                      "det J 0.144 / 0.105 on two pairs at step 120 (ANTs SyN: 0.135 over the six; session 12); "
                      "earlier, with fresh noise, on the development pairs 0 / 0.1 / 0.3 / 1 (smooth 6) gave tissue "
                      "Dice 0.659 / 0.650 / 0.636 / "
                      "0.628 at SD log det J 0.259 / 0.101 / 0.062 / 0.034, LGG SSIM 0.676 / 0.674 / - / 0.640 at "
                      "SD log det J 0.70 / 0.22 / - / 0.05 (BENCHMARKS.md, session 7)",
    "boundary": "fixed: the network's field vanishes at the image border (its mean det J stays 1; the affine stage "
                "changes size and position)",
    "fold_penalty": "100 x mean relu(0.1 - det J): a barrier that only acts where a pixel would fold; at 10, with "
                    "the volume regulariser, one pixel of one LGG development pair folded (BENCHMARKS.md, session 8)",
    "lr": "3e-3: of 1e-2 and 3e-3 tried on the LGG development pairs, 1e-2 folded more",
    "iterations": "70, then the detail stage's 60 steps: with the detail stage, 100 / 70 / 80 network steps and 60 / "
                  "60 / 40 detail steps gave development tissue Dice 0.802 / 0.800 / 0.797 and LGG SSIM 0.728 / "
                  "0.725 / 0.723, and whole calls took about 3.1 / 2.5 / 2.6 times ANTs SyN's time (medians, "
                  "interleaved on 12 LGG pairs), while issue 11 asks for at most 3 times (BENCHMARKS.md, session "
                  "17). Before the detail stage: 100 steps, as more network steps still raised Dice a little (0.729 "
                  "/ 0.738 / 0.752 at 100 / 120 / 200 in session 12) for time the budget did not have (sessions 12 "
                  "to 16)",
    "patience": "40: stop when the loss has not improved by min_delta for 40 steps; on a known shift of a texture "
                "the error grew again after ~100 steps (the fit starts to follow noise), so stopping matters",
    "min_delta": "1e-4 of MAE on [0, 1] intensities",
    "detail_steps": "60: after the network's steps, 60 steps of a detail stage, a free velocity on the grid twice as "
                    "fine as the generator's (128 x 128 at 256 px), Gaussian-smoothed, composed before the network's "
                    "field and fitted with the same loss, barrier and volume term (a classical prior for the detail "
                    "the network's 64 x 64 grid cannot hold; the default is a hybrid): on the development pairs (100 "
                    "network steps) tissue Dice 0.802 against 0.762 at SD log det J 0.103 against 0.100 and LGG SSIM "
                    "0.728 against 0.693; the stage alone (100 steps) after the affine map and a single network step "
                    "0.789 / 0.718. With 70 network steps and the stage, on the held-out tissue pairs label Dice 0.793"
                    " against 0.755 (ANTs SyNCC 0.775) at SD log det J 0.108 (BENCHMARKS.md, session 17)",
    "detail_lr": "0.4 image pixels per step (0.2 of the 128 x 128 grid's): on the development pairs, with 30 steps "
                 "and 1 grid pixel of smoothing, 0.2 / 0.3 grid pixels per step gave tissue Dice 0.796 / 0.799, LGG "
                 "SSIM 0.723 / 0.725 at LGG SD log det J 0.168 / 0.172; 0.05 and 0.1 (1.5 pixels of smoothing) "
                 "0.771 and 0.776 (BENCHMARKS.md, session 17)",
    "detail_sigma": "2 image pixels (1 of the 128 x 128 grid's): in scratch runs (5 squarings) with 30 steps at 0.2 "
                    "grid pixels a step, 0.7 / 1 grid pixels gave development tissue Dice 0.809 / 0.796 at SD log det "
                    "J 0.109 / 0.104, LGG SSIM 0.729 / 0.723 at SD 0.173 / 0.168; 1 pixel keeps the field about as "
                    "smooth as the network's alone. With 60 steps, 1.5 pixels (and a rate of 0.3) gave 0.786 / 0.101 "
                    "against 1 pixel's 0.802 / 0.103 (BENCHMARKS.md, session 17)",
    "intensity_clip": "0.005: one hot pixel no longer sets an image's scale, as ANTs' scripts winsorise",
    "intensity_match": "linear: the moving image in the fixed one's units (scale and offset fitted to the middle "
                       "quantiles of both foregrounds, background kept at the fixed image's level); on the known-field "
                       "cases the worst endpoint error fell from 34 px (min-max) / 24 px (winsorising alone) to "
                       "0.16 px, gamma 0.6 included; 'histogram' did as well there but gave LGG SSIM 0.635 "
                       "against 0.677",
}

PRESETS: dict[str, RegistrationConfig] = {
    "paper": RegistrationConfig(preset="paper", down=(128,) * 5, up=(128,) * 5, lr=1e-3, iterations=1000,
                                notes=_PAPER_NOTES),
    "cpu": RegistrationConfig(preset="cpu", down=(16, 32, 64), up=(16, 32, 64), skip=16, upsample="nearest",
                              noise="fixed", readout="best", prealign="affine", prealign_finest=2,
                              grid_scale=4, output_scale=4.0, integrate=7, integrate_refine=2, boundary="fixed",
                              fold_penalty=100.0, volume_penalty=0.2, lr=3e-3, iterations=70, patience=40,
                              min_delta=1e-4, intensity_clip=0.005, intensity_match="linear", detail_steps=60,
                              detail_lr=0.4, detail_sigma=2.0, notes=_CPU_NOTES),
}
PRESETS["gpu"] = PRESETS["cpu"].replace(
    preset="gpu", down=(128,) * 5, up=(128,) * 5, iterations=1000,
    notes={**_CPU_NOTES, "down": "the paper's width: 128 channels at 5 scales", "up": "as down",
           "iterations": "at most 1000 (not yet measured on a GPU)"})
PRESETS["fine"] = PRESETS["cpu"].replace(
    preset="fine", grid_scale=2, output_scale=2.0,
    notes={**_CPU_NOTES,
           "grid_scale": "2: a 128 x 128 control grid at 256 px (the detail stage then on the image's own grid); on "
                         "the held-out tissue pairs label Dice 0.801 against the cpu preset's 0.793 (ANTs SyNCC "
                         "0.775, SyN 0.693) at SD log det J 0.108 (0.108; SyNCC 0.275, SyN 0.132), no fold, for about "
                         "2.2x the cpu preset's time; before the detail stage 0.782 against 0.755 (BENCHMARKS.md, "
                         "sessions 14 to 17)",
           "integrate_refine": "2: the last two of the 7 squarings on the image's own grid (twice the 128 x 128 "
                               "control grid): on the development pairs tissue Dice 0.792 against 0.783 and LGG SSIM "
                               "0.695 against 0.694 (BENCHMARKS.md, session 16)",
           "output_scale": "2 pixels per unit: one grid spacing per unit of output, as in the cpu preset",
           "detail_steps": "60, as the cpu preset, but the stage runs on the image's own grid (twice the 128 x 128 "
                           "control grid); chosen for the cpu preset: with 100 network steps, development tissue "
                           "Dice 0.813 against 0.792 without the stage (BENCHMARKS.md, session 17)",
           "detail_lr": "0.4 image pixels per step, as the cpu preset (chosen there)",
           "detail_sigma": "2 image pixels, as the cpu preset (chosen there)"})
register_presets(PRESETS)


def differences(name: str, base: str = "paper") -> dict[str, tuple[Any, Any, str]]:
    """How preset ``name`` departs from preset ``base``: ``{field: (base value, its value, its note)}``.

    The table behind the README's and the preface's "which method made which number" (book chapter
    "Reproducing the brain MRI results" shows it too).
    """
    a, b = get_preset(base), get_preset(name)
    return {k: (v, getattr(b, k), b.notes.get(k, "")) for k, v in a.to_dict().items()
            if k != "preset" and getattr(b, k) != v}


def get_preset(name: str) -> RegistrationConfig:
    """The preset called ``name``; an unknown name raises a ValueError listing the presets."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"config: unknown preset {name!r}; presets: {sorted(PRESETS)}") from None


def default_config(device: torch.device | str) -> RegistrationConfig:
    """``gpu`` on a CUDA device, ``cpu`` elsewhere."""
    return PRESETS["gpu" if torch.device(device).type == "cuda" else "cpu"]
