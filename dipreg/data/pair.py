"""The :class:`Pair` container shared by every data source (sample, synthetic, LGG)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from dipreg.validate import as_displacement, as_image, as_labels, as_mask, same_shape


def _as_mask(x: Any, name: str, shape: tuple[int, int]) -> np.ndarray | None:
    return None if x is None else as_mask(x, name, shape)


@dataclass(eq=False)
class Pair:
    """A moving / fixed image pair for registration.

    A perfect registration finds ``u`` with ``warp(moving, u) == fixed`` (pull-back, pixels,
    ``u[0]`` rows, ``u[1]`` columns).

    Attributes:
        moving, fixed: (H, W) float64 images; the loaders in :mod:`dipreg.data` give them in [0, 1].
        moving_mask, fixed_mask: optional (H, W) bool masks (brain mask for the embedded sample,
            tumour mask for LGG).
        moving_labels, fixed_labels: optional (H, W) int tissue labels, 0 = background.
        displacement: optional ground truth (2, H, W) in pixels (synthetic pairs).
        moving_id, fixed_id: short identifiers; :attr:`id` joins them.
        meta: free-form provenance (source, slice index, channel, seed, ...).
    """

    moving: np.ndarray
    fixed: np.ndarray
    moving_mask: np.ndarray | None = None
    fixed_mask: np.ndarray | None = None
    moving_labels: np.ndarray | None = None
    fixed_labels: np.ndarray | None = None
    displacement: np.ndarray | None = None
    moving_id: str = "moving"
    fixed_id: str = "fixed"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.moving = as_image(self.moving, "moving", allow_constant=True)
        self.fixed = as_image(self.fixed, "fixed", allow_constant=True)
        same_shape(self.moving, self.fixed, "moving", "fixed")
        shape = self.moving.shape
        self.moving_mask = _as_mask(self.moving_mask, "moving_mask", shape)
        self.fixed_mask = _as_mask(self.fixed_mask, "fixed_mask", shape)
        self.moving_labels = None if self.moving_labels is None else as_labels(self.moving_labels, "moving_labels",
                                                                                shape)
        self.fixed_labels = None if self.fixed_labels is None else as_labels(self.fixed_labels, "fixed_labels", shape)
        if self.displacement is not None:
            self.displacement = as_displacement(self.displacement, "displacement", shape)
        if not isinstance(self.moving_id, str) or not isinstance(self.fixed_id, str):
            raise TypeError("moving_id and fixed_id must be strings")
        if not isinstance(self.meta, dict):
            raise TypeError(f"meta: expected a dict, got {type(self.meta).__name__}")

    @property
    def id(self) -> str:
        """``"{moving_id}->{fixed_id}"``."""
        return f"{self.moving_id}->{self.fixed_id}"

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of both images."""
        return self.moving.shape  # type: ignore[return-value]

    def __repr__(self) -> str:
        extras = [n for n in ("moving_mask", "fixed_mask", "moving_labels", "fixed_labels", "displacement")
                  if getattr(self, n) is not None]
        return f"Pair({self.id!r}, shape={self.shape}, with={extras})"

    def resized(self, size: int | tuple[int, int]) -> Pair:
        """A copy resampled to ``size`` (an int for a square, or (H, W)).

        Images are resized with anti-aliasing (bilinear), masks and labels with nearest neighbour.
        A ground-truth displacement is resampled bilinearly and multiplied by the scale factor of each
        axis, so it stays in pixels of the new grid (pixel centres are kept in the same places as
        :func:`skimage.transform.resize` does, i.e. ``x_new + 0.5 = s (x_old + 0.5)``).
        """
        from skimage.transform import resize

        new = check_size(size)
        if new == self.shape:
            return replace(self, meta=dict(self.meta))

        def img(a: np.ndarray) -> np.ndarray:
            return resize(a, new, order=1, mode="edge", anti_aliasing=True, preserve_range=True).astype(np.float64)

        def nearest(a: np.ndarray | None) -> np.ndarray | None:
            if a is None:
                return None
            out = resize(a.astype(np.int64), new, order=0, mode="edge", anti_aliasing=False, preserve_range=True)
            return out.astype(a.dtype)

        u = None
        if self.displacement is not None:
            scale = (new[0] / self.shape[0], new[1] / self.shape[1])
            u = np.stack([img(self.displacement[k]) * scale[k] for k in range(2)])
        meta = dict(self.meta)
        meta["resized_from"] = tuple(self.shape)
        return Pair(
            moving=np.clip(img(self.moving), self.moving.min(), self.moving.max()),
            fixed=np.clip(img(self.fixed), self.fixed.min(), self.fixed.max()),
            moving_mask=nearest(self.moving_mask),
            fixed_mask=nearest(self.fixed_mask),
            moving_labels=nearest(self.moving_labels),
            fixed_labels=nearest(self.fixed_labels),
            displacement=u,
            moving_id=self.moving_id,
            fixed_id=self.fixed_id,
            meta=meta,
        )


def check_size(size: Any) -> tuple[int, int]:
    """Validate ``size`` (int or (H, W)), each side an int >= 8."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        dims = (int(size), int(size))
    elif isinstance(size, (tuple, list)) and len(size) == 2 and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size
    ):
        dims = (int(size[0]), int(size[1]))
    else:
        raise TypeError(f"size: expected an int or a (height, width) pair of ints, got {size!r}")
    if min(dims) < 8:
        raise ValueError(f"size: each side must be at least 8 pixels, got {dims}")
    return dims


def as_pairs(pairs: Any, *, single: bool = True) -> list[Pair]:
    """``pairs`` as a list of :class:`Pair`: a list of Pairs or of ``(moving, fixed)`` tuples; with ``single``
    also one Pair or one ``(moving, fixed)`` tuple of images. Images are checked as :class:`Pair` checks them.

    Raises:
        TypeError: anything else. ValueError: an empty list, or images that :class:`Pair` refuses.
    """
    def one(item: Any) -> Pair | None:
        if isinstance(item, Pair):
            return item
        if isinstance(item, (tuple, list)) and len(item) == 2 and not any(isinstance(x, (Pair, tuple, list))
                                                                         for x in item):
            return Pair(moving=item[0], fixed=item[1])
        return None

    if single and (isinstance(pairs, Pair) or isinstance(pairs, tuple) and one(pairs) is not None):
        return [one(pairs)]
    if isinstance(pairs, (tuple, list)):
        out = [one(p) for p in pairs]
        if not out:
            raise ValueError("pairs: the list is empty; give at least one (moving, fixed) pair")
        bad = next((i for i, p in enumerate(out) if p is None), None)
        if bad is None:
            return out
        raise TypeError(f"pairs[{bad}]: expected a dipreg.data.Pair or a (moving, fixed) tuple, got "
                        f"{type(pairs[bad]).__name__}")
    what = "a dipreg.data.Pair, a list of Pairs or a (moving, fixed) tuple" if single else \
        "a list of dipreg.data.Pair or of (moving, fixed) tuples"
    raise TypeError(f"pairs: expected {what}, got {type(pairs).__name__}")
