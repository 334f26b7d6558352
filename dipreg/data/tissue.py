"""Inter-subject brain slices with tissue labels, for judging registration by anatomy (label Dice).

Six subjects' skull-stripped axial T1 slices (256 x 256, uint8 intensities / 255) from the ANTsPy repository's
``data/`` folder (``r16`` ... ``r85``, Apache-2.0), each with three tissue labels computed once by ANTs Atropos
(``scripts/make_tissue_slices.py``; 0 background, 1 CSF, 2 grey matter, 3 white matter). Every ordered pair of
two different subjects is a registration problem with a known anatomical answer: after a good registration the
moving labels, warped, overlap the fixed labels.

Development and held-out pairs (book chapter "Evaluating a registration"): settings of dipreg's presets may be
chosen on the six ordered pairs among the :data:`DEVELOPMENT` subjects (r16, r27, r30); the six ordered pairs
among the :data:`HELD_OUT` subjects (r62, r64, r85), whose images never took part in a choice, judge them. The 18
mixed pairs belong to neither split (``"all"`` has them).
"""

from __future__ import annotations

from functools import lru_cache
from itertools import permutations

import numpy as np

from dipreg.data.pair import Pair
from dipreg.data.sample import sample_path

TISSUE_FILE = "tissue_slices.npz"
SUBJECTS = ("r16", "r27", "r30", "r62", "r64", "r85")
"""Subject ids, as named in the ANTsPy repository (``data/<id>slice.jpg``)."""
DEVELOPMENT = ("r16", "r27", "r30")
"""Subjects whose pairs among themselves may choose settings."""
HELD_OUT = ("r62", "r64", "r85")
"""Subjects never used to choose a setting: their pairs among themselves judge the settings."""
LABELS = {0: "background", 1: "CSF", 2: "grey matter", 3: "white matter"}
SPLITS = ("development", "held-out", "all")


@lru_cache(maxsize=1)
def _load() -> dict[str, np.ndarray]:
    ref = sample_path(TISSUE_FILE)
    if not ref.is_file():
        raise FileNotFoundError(f"the embedded {TISSUE_FILE} is missing from the installed dipreg package; reinstall "
                                "dipreg, or regenerate it with scripts/make_tissue_slices.py")
    with ref.open("rb") as fh, np.load(fh, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for a in arrays.values():
        a.setflags(write=False)
    return arrays


def _split(moving: str, fixed: str) -> str:
    for split, group in (("development", DEVELOPMENT), ("held-out", HELD_OUT)):
        if moving in group and fixed in group:
            return split
    return "mixed"


def tissue_pair(moving: str, fixed: str) -> Pair:
    """The pair ``moving -> fixed`` of two subjects in :data:`SUBJECTS`, images in [0, 1], with tissue labels
    (:data:`LABELS`) for both and brain masks (label > 0)."""
    for name, value in (("moving", moving), ("fixed", fixed)):
        if value not in SUBJECTS:
            raise ValueError(f"{name}: expected one of {list(SUBJECTS)}, got {value!r}")
    if moving == fixed:
        raise ValueError(f"moving and fixed are the same subject ({moving!r}); pick two different subjects")
    arrays = _load()
    m_lab, f_lab = arrays[f"{moving}_labels"].astype(np.int64), arrays[f"{fixed}_labels"].astype(np.int64)
    return Pair(moving=arrays[f"{moving}_image"] / 255.0, fixed=arrays[f"{fixed}_image"] / 255.0,
                moving_mask=m_lab > 0, fixed_mask=f_lab > 0, moving_labels=m_lab, fixed_labels=f_lab,
                moving_id=moving, fixed_id=fixed,
                meta={"source": "dipreg embedded tissue slices (ANTsPy data, Apache-2.0)", "labels": dict(LABELS),
                      "split": _split(moving, fixed), "attribution": "see dipreg/data/sample/ATTRIBUTION.md"})


def tissue_pairs(split: str = "held-out") -> list[Pair]:
    """Every ordered pair of two :data:`SUBJECTS` in ``split``: ``"development"`` (the 6 pairs among r16, r27,
    r30), ``"held-out"`` (the 6 pairs among r62, r64, r85) or ``"all"`` (30 pairs, the 18 mixed ones included)."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {list(SPLITS)}, got {split!r}")
    pairs = [tissue_pair(m, f) for m, f in permutations(SUBJECTS, 2)]
    if split == "all":
        return pairs
    return [p for p in pairs if p.meta["split"] == split]
