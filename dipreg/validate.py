"""Input checks shared by every public entry point, and the type ``ArrayLike`` that they accept.

Each check raises a ``TypeError`` or ``ValueError`` that names the argument and says what was
expected, so that bad input never surfaces as a deep PyTorch traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import torch

ArrayLike: TypeAlias = np.ndarray | torch.Tensor | Sequence[Any]
"""What the public API accepts for an image, a displacement or a mask: a numpy array, a torch tensor (any
device; detached and copied to the CPU) or nested sequences of numbers that ``np.asarray`` turns into one."""


def _tensor_to_numpy(x: Any, name: str, expected: str) -> Any:
    """A torch tensor as a numpy array (float64, or bool for bool tensors); anything else unchanged.

    Goes through float64 in torch, so float16, bfloat16 and integer tensors (which numpy cannot take or
    that are converted anyway) work; complex tensors are refused.
    """
    if not isinstance(x, torch.Tensor):
        return x
    if x.is_complex():
        raise TypeError(f"{name}: expected {expected}, got a complex tensor ({x.dtype}); "
                        "pass x.abs() (magnitude) or x.real explicitly")
    x = x.detach().cpu()
    return x.numpy() if x.dtype == torch.bool else x.double().numpy()


def _refuse_masked(x: Any, name: str, fix: str) -> None:
    """A numpy masked array is ambiguous (its mask would be silently dropped): raise a TypeError naming ``fix``."""
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(f"{name}: expected a plain numpy array or torch tensor, got a numpy masked array (its mask "
                        f"would be ignored); pass {fix}")


def as_image(x: Any, name: str, *, allow_constant: bool = False) -> np.ndarray:
    """Return ``x`` as a finite 2D float64 array of shape (H, W), or raise.

    Accepts numpy arrays and torch tensors (any device, detached). A trailing or leading
    singleton axis, as in (1, H, W) or (H, W, 1), is squeezed; colour images are refused.
    """
    x = _tensor_to_numpy(x, name, "a 2D real-valued image of shape (H, W)")
    _refuse_masked(x, name, "x.filled(value) to choose what the masked pixels hold")
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as exc:  # pragma: no cover - exotic objects
            raise TypeError(f"{name}: expected a 2D numpy array or torch tensor, got {type(x).__name__}") from exc
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise TypeError(f"{name}: expected a numeric array of shape (H, W), got dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.complexfloating):
        raise TypeError(f"{name}: expected a real-valued image of shape (H, W), got complex dtype {x.dtype}; "
                        "pass np.abs(x) (magnitude) or x.real explicitly")
    if x.ndim == 3 and 1 in (x.shape[0], x.shape[-1]):
        x = x.reshape([s for s in x.shape if s != 1] or [1])
    if x.ndim == 3 and x.shape[-1] in (3, 4):
        raise ValueError(
            f"{name}: expected a grey-level image of shape (H, W), got shape {x.shape}, which looks like "
            "RGB(A); pick one channel, e.g. image[..., 1] for the FLAIR channel of the LGG data"
        )
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2D image of shape (H, W), got shape {tuple(x.shape)}")
    if x.size == 0 or min(x.shape) < 2:
        raise ValueError(f"{name}: expected an image at least 2 x 2 pixels, got shape {tuple(x.shape)}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise ValueError(f"{name}: contains {bad} NaN or infinite values; expected finite intensities")
    if not allow_constant and np.ptp(x) == 0:
        raise ValueError(f"{name}: the image is constant (all pixels {x.flat[0]:g}); there is nothing to register")
    return x


def as_mask(x: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Return ``x`` as a boolean array of ``shape``: bool, or numeric holding only 0 and 1 (NaN is refused)."""
    _refuse_masked(x, name, "np.ma.getmaskarray(x) (masked = True) or x.filled(False) (masked = outside)")
    m = np.asarray(_tensor_to_numpy(x, name, f"a boolean mask of shape {tuple(shape)}"))
    if m.dtype != bool and not np.issubdtype(m.dtype, np.number):
        raise TypeError(f"{name}: expected a boolean mask of shape {tuple(shape)}, got dtype {m.dtype}")
    if m.shape != tuple(shape):
        raise ValueError(f"{name}: expected a boolean mask of shape {tuple(shape)} (the image shape), got {m.shape}")
    if m.dtype != bool:
        ok = (m == 0) | (m == 1)
        if np.iscomplexobj(m) or not np.all(ok):
            raise ValueError(f"{name}: expected a boolean (or 0/1) mask, got values {np.unique(m[~ok])[:6]} (NaN "
                             "included); threshold it first, e.g. mask > 0.5")
        m = m.astype(bool)
    return m


def as_displacement(u: Any, name: str = "displacement", shape: tuple[int, int] | None = None) -> np.ndarray:
    """Return ``u`` as a finite float64 array of shape (2, H, W) with H, W >= 2 (as images), or raise."""
    u = _tensor_to_numpy(u, name, "a real-valued displacement of shape (2, H, W)")
    try:
        u = np.asarray(u)
    except Exception as exc:  # ragged nested lists and other exotic objects
        raise TypeError(f"{name}: expected a numeric array of shape (2, H, W), got {type(u).__name__}") from exc
    if not np.issubdtype(u.dtype, np.number):
        raise TypeError(f"{name}: expected a numeric array of shape (2, H, W), got dtype {u.dtype}")
    if np.issubdtype(u.dtype, np.complexfloating):
        raise TypeError(f"{name}: expected a real-valued displacement of shape (2, H, W), got complex dtype {u.dtype}")
    if u.ndim != 3 or u.shape[0] != 2:
        raise ValueError(
            f"{name}: expected shape (2, H, W) (channel 0 rows, channel 1 columns, in pixels), got {tuple(u.shape)}"
        )
    if min(u.shape[1:]) < 2:
        raise ValueError(f"{name}: expected a field at least 2 x 2 pixels (shape (2, H, W), H, W >= 2), "
                         f"got shape {tuple(u.shape)}")
    if shape is not None and tuple(u.shape[1:]) != tuple(shape):
        raise ValueError(f"{name}: spatial shape {tuple(u.shape[1:])} does not match the image shape {tuple(shape)}")
    u = u.astype(np.float64)
    if not np.all(np.isfinite(u)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return u


def same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Raise a ValueError unless ``a`` and ``b`` have the same shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} has shape {a.shape} but {name_b} has shape {b.shape}; the two must match "
            "(resample one onto the other's grid first)"
        )


def as_labels(x: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """``x`` as an int64 label map of ``shape`` (0 = background, labels >= 0), or raise."""
    lab = np.asarray(_tensor_to_numpy(x, name, "an integer label map"))
    if lab.shape != shape:
        raise ValueError(f"{name}: expected an integer label map of shape {shape} (the image shape), got {lab.shape}")
    if lab.dtype == bool or not np.issubdtype(lab.dtype, np.integer):
        if not np.issubdtype(lab.dtype, np.floating):
            raise TypeError(f"{name}: expected integer tissue labels (0 = background), got dtype {lab.dtype}")
        if not np.all(np.isfinite(lab)):
            raise ValueError(f"{name}: contains {int(np.count_nonzero(~np.isfinite(lab)))} NaN or infinite values; "
                             "expected integer tissue labels (0 = background)")
        if not np.all(lab == np.round(lab)):
            raise TypeError(f"{name}: expected integer tissue labels (0 = background), got non-integer values "
                            f"of dtype {lab.dtype}")
    if lab.size and lab.min() < 0:
        raise ValueError(f"{name}: labels must be >= 0 (0 = background), got minimum {lab.min():g}")
    if lab.size and lab.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name}: labels must fit in int64, got maximum {lab.max():g}")
    return lab.astype(np.int64)


def check_seed(seed: Any, what: str = "seed") -> int:
    """``seed`` as an int; ``None`` means 0. Anything but an integer in [0, 2**63) raises a ValueError."""
    if seed is None:
        return 0
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**63:
        raise ValueError(f"{what}: expected an integer from 0 to 2**63 - 1, got {seed!r}")
    return int(seed)
