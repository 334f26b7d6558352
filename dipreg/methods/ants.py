"""The paper's ITK comparator: affine + SyN registration with ANTs, through ``antspyx`` (optional).

Book: chapter "Classical registration" (``book/04_classical.ipynb``) runs it beside the classical
baseline; the evaluation chapters compare every method against it.

What :func:`register_ants` does, and the choices it makes:

* **Geometry.** The (H, W) arrays become ANTs images with spacing 1, origin 0 and the identity
  direction, so ANTs' physical coordinates *are* pixel indices. ANTsPy keeps numpy's axis order:
  physical axis 0 is the row index and axis 1 the column index (``transform_index_to_physical_point``
  of index (r, c) is (r, c)).
* **The whole transform.** ``fwdtransforms`` is ``[warp, affine]``. Both are composed by
  ``ants.apply_transforms(..., compose=...)`` into one displacement field on the fixed grid, so its
  det J includes the affine part (the ANTs helper ``create_jacobian_determinant_image(fixed, warp)``
  gives the deformable part only). ITK transforms map fixed-space points to moving-space points and
  images are resampled by pull-back, exactly dipreg's convention ``warped(x) = moving(x + u(x))``; with
  the geometry above the components come out as (row, column) in pixels with no sign flip or swap.
  The test suite checks that ``dipreg.warp(moving, u)`` reproduces ANTs' own ``warpedmovout``, and
  ``info["ants_warped_max_diff"]`` records that difference for every run. It is small wherever the
  sample point ``x + u(x)`` lies at least one pixel inside the moving image, and larger within one pixel
  of its edge, where ITK repeats the edge pixel out to half a pixel beyond the last pixel centre while
  dipreg (``grid_sample``, zero padding) fades to 0 over one pixel (measured: ``BENCHMARKS.md``, "Moved
  from docstrings").
* **Reproducibility.** Two traps, both measured with antspyx 0.6.3:
  ``ants.registration`` silently swallows a ``random_seed=`` keyword (it reads the seed from
  ``ants.config._random_seed``), and ANTs treats ``--random-seed 0`` as *no* seed (it seeds from the
  clock). dipreg therefore sets the ANTs seed to ``seed + 1`` for the duration of the call
  (``info["ants_random_seed"]``). Multi-threaded ITK metrics also sum in a varying order, which
  changes SyN results from run to run by up to 0.8 in intensity even with a fixed seed; with
  ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1`` the runs are bit-identical. ITK reads that variable
  once, when its first multi-threaded filter runs in the process, so dipreg sets it to ``"1"`` (if
  unset) before it imports ants. Set it yourself before any ITK work to choose otherwise; on a
  2-core machine single-threaded ANTs was not slower. ``info["itk_threads"]`` records the value.
"""

from __future__ import annotations

import inspect
import os
import tempfile
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from dipreg.methods.dip import check_seed
from dipreg.result import RegistrationResult
from dipreg.transform import warp
from dipreg.validate import ArrayLike, as_image, same_shape

if TYPE_CHECKING:
    from ants import ANTsImage

THREADS_ENV = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"
ANTS_MAX_SEED = 2**31 - 2
"""The largest ``seed`` :func:`register_ants` takes: ANTs gets ``seed + 1``, which ITK parses as a signed int32."""

ANTS_SETTINGS: dict[str, dict[str, Any]] = {
    "paper": {"type_of_transform": "SyN"},
    "strong": {"type_of_transform": "SyNCC"},
    "script": {"type_of_transform": "antsRegistrationSyN[s]"},
}
"""Named ANTs comparators, keyword arguments of :func:`register_ants` (``register_ants(m, f, **ANTS_SETTINGS[k])``).

``"paper"``: ANTsPy's default ``SyN`` (affine + SyN with Mattes mutual information, 40 x 20 x 0
iterations): the ITK comparator as the paper describes it (an affine registration followed by a
deformable one, Avants et al. 2012). ``"strong"``: ``SyNCC`` (rigid + affine + SyN with local
cross-correlation), the strongest setting measured under a minute per 256 x 256 pair on 2 CPU cores, so
that the DIP method is never compared with a weak baseline only. ``"script"``: ANTs' recommended
``antsRegistrationSyN.sh`` recipe, nearly as strong as ``SyNCC`` in half the time. SSIM and seconds of
each on the book's LGG pairs: ``BENCHMARKS.md``, "Moved from docstrings".
"""


@dataclass(frozen=True)
class AntsSettings:
    """The settings of :func:`register_ants`: ``type_of_transform`` and ``options``, the further keyword
    arguments of ``ants.registration`` (e.g. ``reg_iterations``). The ``config`` of its result;
    ``register_ants(m, f, **settings.to_dict())`` runs them."""

    type_of_transform: str = "SyN"
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The settings as keyword arguments of :func:`register_ants`."""
        return {"type_of_transform": self.type_of_transform, **self.options}


def _import_ants():
    os.environ.setdefault(THREADS_ENV, "1")
    try:
        import ants
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("dipreg.methods.ants needs the optional ANTs bindings: pip install antspyx") from exc
    return ants


def check_ants_seed(seed: Any) -> int | None:
    """The seed ANTs gets for ``seed`` (``seed + 1``; ``None`` stays ``None``, a clock seed), or a ValueError.

    ITK parses ``--random-seed`` as a 32-bit signed int, so ``seed`` must lie in [0, 2**31 - 2].
    """
    if seed is None:
        return None
    value = check_seed(seed)
    if value > ANTS_MAX_SEED:
        raise ValueError(f"seed: expected an integer from 0 to 2**31 - 2 = {ANTS_MAX_SEED} for ANTs (ITK reads its "
                         f"seed, seed + 1, as a 32-bit signed int), got {seed!r}; pick a smaller seed")
    return value + 1


def _check_kwargs(ants: ModuleType, kwargs: dict[str, Any]) -> None:
    """Refuse keywords ``ants.registration`` does not name (it swallows unknown ones silently)."""
    params = inspect.signature(ants.registration).parameters
    valid = sorted(k for k, p in params.items() if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD)
    valid = [k for k in valid if k not in ("fixed", "moving", "type_of_transform", "outprefix")]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise TypeError(f"unknown keyword argument(s) {unknown} of register_ants; valid: seed, type_of_transform "
                        f"and the options of ants.registration: {valid}")


def _to_ants(ants, image: np.ndarray):
    return ants.from_numpy(image.astype(np.float32), origin=(0.0, 0.0), spacing=(1.0, 1.0),
                           direction=np.eye(2))


def _linear_matrix(ants, path: str) -> np.ndarray:
    """The 3 x 3 homogeneous matrix of a linear ANTs transform file, fixed (row, col) -> moving (row, col)."""
    tx = ants.read_transform(path)
    origin = np.asarray(tx.apply_to_point((0.0, 0.0)), dtype=np.float64)
    cols = [np.asarray(tx.apply_to_point(p), dtype=np.float64) - origin for p in ((1.0, 0.0), (0.0, 1.0))]
    mat = np.eye(3)
    mat[:2, 0], mat[:2, 1], mat[:2, 2] = cols[0], cols[1], origin
    return mat


def composite_displacement(ants: ModuleType, fixed_img: ANTsImage, moving_img: ANTsImage, transforms: list[str],
                           prefix: str) -> np.ndarray:
    """Compose ANTs transform files into one (2, H, W) float64 displacement in pixels (rows, columns).

    ``ants`` is the imported ``ants`` module; ``fixed_img``, ``moving_img`` the ANTs images (intensity units
    irrelevant here), which must have spacing 1 pixel, origin 0 and the identity direction. ``transforms``
    (file paths) is in ``ants.apply_transforms`` order (``fwdtransforms``: ``[warp, affine]``); ``prefix`` is
    the path prefix of the composed field's file.
    """
    path = ants.apply_transforms(fixed_img, moving_img, transforms, compose=prefix)
    field = ants.image_read(path).numpy()  # (H, W, 2), vector (axis 0, axis 1) = (row, column)
    return np.moveaxis(field, -1, 0).astype(np.float64)


def register_ants(moving: ArrayLike, fixed: ArrayLike, *, type_of_transform: str = "SyN", seed: int | None = 0,
                  **kwargs: Any) -> RegistrationResult:
    """Register ``moving`` onto ``fixed`` with ANTs (``ants.registration``), returning dipreg's conventions.

    Args:
        moving, fixed: (H, W) images, numpy arrays or torch tensors, same shape, in the same intensity
            units (any). They are passed to ANTs as they are (float32, spacing 1 pixel, origin 0, identity
            direction); no rescaling.
        type_of_transform: any ``ants.registration`` transform, e.g. ``"SyN"`` (the paper's
            comparator), ``"Affine"``, ``"SyNCC"``, ``"antsRegistrationSyNQuick[s]"``; see
            :data:`ANTS_SETTINGS`.
        seed: ANTs random seed (sampling of the metric), an integer from 0 to :data:`ANTS_MAX_SEED`. ANTs
            gets ``seed + 1`` because it reads 0 as "seed from the clock"; ``None`` really seeds from the
            clock (not reproducible).
        **kwargs: passed on to ``ants.registration`` (e.g. ``reg_iterations``, ``syn_metric``); a keyword
            it does not name is refused (``ants.registration`` itself would ignore it silently).

    Returns:
        A :class:`RegistrationResult` with ``method=f"ants-{type_of_transform}"``; ``displacement`` is
        the whole transform (affine and deformable) as (2, H, W) pixels, ``warped = dipreg.warp(moving,
        displacement)``, ``config`` the :class:`AntsSettings` run. ``info``: ``seed``, ``ants_warped_max_diff``
        (max |warped - ANTs' warpedmovout|),
        ``ants_warped_max_diff_inside`` (the same over pixels whose sample point lies >= 1 pixel inside
        the moving image),
        ``ants_random_seed``, ``itk_threads``, ``type_of_transform``, ``transforms`` (file names),
        ``affine`` (the linear stage as a 3 x 3 homogeneous matrix taking a fixed-image pixel (row, col, 1)
        to the moving-image pixel it samples, or ``None``). ``seconds`` covers the registration
        and the composition of the transforms.

    Raises:
        ImportError: antspyx is not installed. TypeError, ValueError: bad images or arguments (an unknown
        keyword, a seed ANTs cannot take). RuntimeError: ANTs itself failed.
    """
    mov = as_image(moving, "moving")
    fix = as_image(fixed, "fixed")
    same_shape(mov, fix, "moving", "fixed")
    if not isinstance(type_of_transform, str):
        raise TypeError(f"type_of_transform: expected a string such as 'SyN', got {type(type_of_transform).__name__}")
    for key in ("random_seed", "outprefix"):
        if key in kwargs:
            raise TypeError(f"{key}: set by register_ants itself; use seed= for the random seed")
    ants_seed = check_ants_seed(seed)
    ants = _import_ants()
    _check_kwargs(ants, kwargs)

    start = time.perf_counter()
    fixed_img, moving_img = _to_ants(ants, fix), _to_ants(ants, mov)
    previous = ants.config._random_seed
    with tempfile.TemporaryDirectory(prefix="dipreg_ants_") as tmp:
        ants.config._random_seed = ants_seed
        try:
            out = ants.registration(fixed_img, moving_img, type_of_transform=type_of_transform,
                                    outprefix=os.path.join(tmp, "reg_"), **kwargs)
        finally:
            ants.config._random_seed = previous
        transforms = list(out["fwdtransforms"])
        linear = [_linear_matrix(ants, t) for t in transforms if t.endswith(".mat")]
        disp = composite_displacement(ants, fixed_img, moving_img, transforms, os.path.join(tmp, "composite_"))
        ants_warped = out["warpedmovout"].numpy().astype(np.float64)
    seconds = time.perf_counter() - start

    warped = warp(mov, disp)
    diff = np.abs(warped - ants_warped)
    rows, cols = np.indices(mov.shape)
    pos_r, pos_c = rows + disp[0], cols + disp[1]
    inside = (pos_r >= 1) & (pos_r <= mov.shape[0] - 2) & (pos_c >= 1) & (pos_c <= mov.shape[1] - 2)
    config = AntsSettings(type_of_transform, dict(kwargs))
    info = {
        "seed": seed,
        "type_of_transform": type_of_transform,
        "ants_random_seed": ants_seed,
        "itk_threads": os.environ.get(THREADS_ENV),
        "ants_warped_max_diff": float(diff.max()),
        "ants_warped_max_diff_inside": float(diff[inside].max()) if inside.any() else float("nan"),
        "transforms": [os.path.basename(t) for t in transforms],
        "affine": linear[0] if len(linear) == 1 else None,
    }
    return RegistrationResult(warped=warped, displacement=disp, history=[], config=config, seconds=seconds,
                              moving=mov, fixed=fix, method=f"ants-{type_of_transform}", device="cpu", info=info)
