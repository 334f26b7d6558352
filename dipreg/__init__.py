"""dipreg: deformable image registration with a randomly initialised CNN as the prior.

A small library behind the book *Deep image priors for deformable registration*, which reproduces
Laves, Ihler & Ortmaier, "Deformable Medical Image Registration Using a Randomly-Initialized CNN as
Regularization Prior" (MIDL 2019).

Conventions, fixed once for the whole package and the book:

* An image is a 2D float array of shape (H, W).
* A displacement ``u`` is an array of shape (2, H, W) in **pixels**: channel 0 along rows (the first
  array axis, downwards), channel 1 along columns (the second axis, to the right).
* Warping is a pull-back: ``warped(x) = moving(x + u(x))``, as ``skimage.transform.warp`` with the
  coordinate map ``x + u``. The deformation is ``phi(x) = x + u(x)``; its Jacobian determinant
  measures local volume change, and ``det J <= 0`` means folding.
* Inside PyTorch, grids are normalised to [-1, 1] with ``align_corners=True`` (see
  :mod:`dipreg.transform`), and tensors are (N, C, H, W).

Quick start::

    import dipreg
    pair = dipreg.data.sample_pair()
    res = dipreg.register(pair.moving, pair.fixed, seed=0)
    res.warped, res.displacement, res.history, res.metrics()

Layers, each importing only the ones before it: the core (:mod:`~dipreg.transform`, :mod:`~dipreg.generator`,
:mod:`~dipreg.losses`, :mod:`~dipreg.metrics`, :mod:`~dipreg.intensity`, :mod:`~dipreg.config`,
:mod:`~dipreg.presets`, :mod:`~dipreg.result`, :mod:`~dipreg.plotting`); the data (:mod:`dipreg.data`); the
methods, in the folder :mod:`dipreg.methods` with their registry (:mod:`~dipreg.methods.dip`,
:mod:`~dipreg.methods.classical`, :mod:`~dipreg.methods.ants`, :mod:`~dipreg.methods.batch`,
:mod:`~dipreg.methods.denoise`, and the loop and the affine stage they share, :mod:`~dipreg.methods.engine`,
:mod:`~dipreg.methods.affine`); the experiments (:mod:`dipreg.experiments`); the teaching material of the book
(:mod:`dipreg.teaching`); the command line (:mod:`~dipreg.cli`).
"""

from dipreg import data, methods, teaching
from dipreg.config import RegistrationConfig
from dipreg.methods.batch import register_many
from dipreg.methods.dip import RegistrationError, RegistrationInterrupted, register
from dipreg.metrics import jacobian_determinant, ssim
from dipreg.presets import PRESETS, get_preset
from dipreg.result import RegistrationResult
from dipreg.transform import warp
from dipreg.validate import ArrayLike

__version__ = "0.1.0"

__all__ = [
    "ArrayLike",
    "PRESETS",
    "RegistrationConfig",
    "RegistrationError",
    "RegistrationInterrupted",
    "RegistrationResult",
    "data",
    "get_preset",
    "jacobian_determinant",
    "methods",
    "register",
    "register_many",
    "ssim",
    "teaching",
    "warp",
]
