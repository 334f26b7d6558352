"""Loader for the LGG Segmentation Dataset (Kaggle ``mateuszbuda/lgg-mri-segmentation``).

Buda et al., Computers in Biology and Medicine 2019; Mazurowski et al., Journal of Neuro-Oncology
2017; images from The Cancer Imaging Archive (TCGA-LGG). Licence CC BY-NC-SA 4.0 plus the TCIA data
usage policy: the files are read from where the user keeps them and never shipped with dipreg.

Layout (``n`` = 1..N, sorted numerically, so ``_10`` comes after ``_9``)::

    kaggle_3m/TCGA_<INST>_<PID>_<YYYYMMDD>/TCGA_<INST>_<PID>_<YYYYMMDD>_<n>.tif        256 x 256 x 3 uint8
    kaggle_3m/TCGA_<INST>_<PID>_<YYYYMMDD>/TCGA_<INST>_<PID>_<YYYYMMDD>_<n>_mask.tif   256 x 256 uint8 {0, 255}

Channels: 0 pre-contrast T1, 1 FLAIR, 2 post-contrast T1 (a missing sequence holds a copy of FLAIR).

Slice indices: everywhere in dipreg a *slice index* is the 0-based position in a patient's stack
sorted by ``n``; the *slice number* is ``n`` itself (1-based, from the file name), so for a complete
stack ``number == index + 1``. The middle slice of a stack of N is index ``N // 2`` (number
``N // 2 + 1``): for N = 20 that is the file ``..._11.tif``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dipreg.data.pair import Pair

CHANNELS: dict[str, int] = {"t1_pre": 0, "flair": 1, "t1_post": 2}
"""Channel names of the LGG tif images and their index on the last axis."""

PROTOCOLS = ("consecutive", "adjacent-slices", "pre-post")
"""Pairing protocols understood by :func:`lgg_pairs`."""

DEVELOPMENT_PATIENTS = ("TCGA_CS_4942", "TCGA_CS_4944", "TCGA_CS_5393", "TCGA_HT_7686", "TCGA_HT_7693",
                        "TCGA_HT_8563")
"""The six patients of ``../shared/data`` (dates left out): every setting of the default presets was chosen on
pairs among them, so results on pairs that hold none of them (:func:`is_development`) are reported on their own."""


def is_development(image_id: str) -> bool:
    """Is ``image_id`` (e.g. ``'TCGA_CS_4942_19970222_11:flair'``, as in a results row) an image of one of the
    :data:`DEVELOPMENT_PATIENTS`?"""
    return "_".join(str(image_id).split("_")[:3]) in DEVELOPMENT_PATIENTS


ENV_VAR = "DIPREG_LGG_ROOT"
_SHARED = Path("shared") / "data" / "lgg-mri-segmentation" / "kaggle_3m"
_PATIENT_RE = re.compile(r"^TCGA_[A-Za-z0-9]+_[A-Za-z0-9]+_\d{8}$")
_LAYOUT = (
    "expected the Kaggle LGG layout: kaggle_3m/TCGA_<INST>_<PID>_<YYYYMMDD>/TCGA_<INST>_<PID>_<YYYYMMDD>_<n>.tif "
    "with a matching ..._<n>_mask.tif for every slice (n = 1..N); pass the kaggle_3m folder, its parent "
    "lgg-mri-segmentation, or the download folder that contains kaggle_3m/"
)


@dataclass(eq=False)
class LGGVolume:
    """All slices of one patient.

    Attributes:
        patient: folder name, e.g. ``"TCGA_CS_4942_19970222"``.
        images: (N, H, W, 3) uint8, channels as in :data:`CHANNELS`.
        masks: (N, H, W) bool tumour (FLAIR abnormality) masks.
        slice_numbers: (N,) int, the ``n`` of each file, increasing.
        root: the ``kaggle_3m`` folder it was read from.
    """

    patient: str
    images: np.ndarray
    masks: np.ndarray
    slice_numbers: np.ndarray
    root: Path

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def middle(self) -> int:
        """Index of the middle slice, ``N // 2`` (0-based)."""
        return len(self) // 2

    def channel(self, channel: str | int = "flair") -> np.ndarray:
        """(N, H, W) float64 in [0, 1] of one channel."""
        return self.images[..., _channel_index(channel)].astype(np.float64) / 255.0


def _has_patients(folder: Path) -> bool:
    try:
        return any(p.is_dir() and _PATIENT_RE.match(p.name) for p in folder.iterdir())
    except OSError:
        return False


def find_root(path: str | os.PathLike) -> Path:
    """The ``kaggle_3m`` folder for ``path``.

    Accepts the ``kaggle_3m`` folder itself, its parent ``lgg-mri-segmentation``, or the download
    root (which holds ``kaggle_3m/`` and a duplicated ``lgg-mri-segmentation/kaggle_3m/`` tree).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` exists but holds no patient folders in the expected layout.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"root: expected a path (str or os.PathLike), got {type(path).__name__}")
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"LGG data folder not found: {p}")
    if not p.is_dir():
        raise ValueError(f"LGG data root {p} is a file, not a folder; {_LAYOUT}")
    for cand in (p, p / "kaggle_3m", p / "lgg-mri-segmentation" / "kaggle_3m"):
        if cand.is_dir() and _has_patients(cand):
            return cand.resolve()
    if _PATIENT_RE.match(p.name):
        raise ValueError(f"{p} looks like a single patient folder; pass the folder that contains it ({p.parent}). "
                         f"{_LAYOUT}")
    raise ValueError(f"no LGG patient folders (TCGA_<INST>_<PID>_<YYYYMMDD>) found in {p}; {_LAYOUT}")


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def default_lgg_root() -> Path | None:
    """Where the LGG data is on this machine, or ``None``.

    Looks, in order, at the environment variable ``DIPREG_LGG_ROOT`` (any root accepted by
    :func:`find_root`; if it is set but wrong, the error is raised rather than ignored), then at
    ``../shared/data/lgg-mri-segmentation/kaggle_3m`` relative to the repository root (the folder
    above the ``dipreg`` package) and relative to the current directory and its parents.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        try:
            return find_root(env)
        except (FileNotFoundError, ValueError) as exc:
            raise type(exc)(f"environment variable {ENV_VAR}={env!r}: {exc}") from exc
    cwd = Path.cwd()
    for base in (_repo_root(), cwd, *list(cwd.parents)[:3]):
        cand = base.parent / _SHARED
        if cand.is_dir() and _has_patients(cand):
            return cand.resolve()
    return None


def _patient_dirs(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir() and _PATIENT_RE.match(p.name)), key=lambda p: p.name)


def list_patients(root: str | os.PathLike) -> list[str]:
    """Patient folder names (``TCGA_<INST>_<PID>_<YYYYMMDD>``), sorted."""
    return [p.name for p in _patient_dirs(find_root(root))]


def _resolve_patient(root: Path, patient: str) -> Path:
    if not isinstance(patient, str):
        raise TypeError(f"patient: expected a patient folder name (str), got {type(patient).__name__}")
    names = [p.name for p in _patient_dirs(root)]
    if patient in names:
        return root / patient
    matches = [n for n in names if n.startswith(patient) or n.startswith(f"TCGA_{patient}")]
    if len(matches) == 1:
        return root / matches[0]
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    if matches:
        raise ValueError(f"patient {patient!r} is ambiguous in {root}: matches {matches}")
    raise ValueError(f"patient {patient!r} not found in {root}; {len(names)} patients, e.g. {shown}")


def _slice_files(folder: Path) -> list[tuple[int, Path, Path]]:
    """(n, image path, mask path) sorted numerically by n."""
    pid = folder.name
    img_re = re.compile(rf"^{re.escape(pid)}_(\d+)\.tiff?$")
    mask_re = re.compile(rf"^{re.escape(pid)}_(\d+)_mask\.tiff?$")
    images: dict[int, Path] = {}
    masks: dict[int, Path] = {}
    for f in folder.iterdir():
        if (m := img_re.match(f.name)) is not None:
            images[int(m.group(1))] = f
        elif (m := mask_re.match(f.name)) is not None:
            masks[int(m.group(1))] = f
    if not images:
        raise ValueError(f"no slice images {pid}_<n>.tif in {folder}; {_LAYOUT}")
    missing = sorted(set(images) - set(masks))
    if missing:
        raise ValueError(f"{folder}: no mask file for slice(s) {missing[:5]} (expected e.g. "
                         f"{pid}_{missing[0]}_mask.tif); {_LAYOUT}")
    return [(n, images[n], masks[n]) for n in sorted(images)]


def _read_tif(path: Path) -> np.ndarray:
    import tifffile

    try:
        return np.asarray(tifffile.imread(path))
    except Exception as exc:
        raise ValueError(f"{path}: not a readable TIFF image ({type(exc).__name__}: {exc})") from exc


def _read_image(path: Path, shape: tuple[int, ...] | None = None) -> np.ndarray:
    img = _read_tif(path)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"{path}: expected an RGB image of shape (H, W, 3) (256 x 256 x 3 in the Kaggle data: "
                         f"pre-contrast T1, FLAIR, post-contrast T1), got shape {img.shape}")
    if img.dtype != np.uint8:
        raise ValueError(f"{path}: expected 8-bit (uint8) pixels as in the Kaggle LGG data, got {img.dtype}")
    if shape is not None and img.shape != shape:
        raise ValueError(f"{path}: shape {img.shape} differs from the other slices of the patient {shape}")
    return img


def _read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    m = _read_tif(path)
    if m.ndim == 3 and m.shape[-1] in (3, 4):
        m = m[..., 0]
    if m.shape != shape:
        raise ValueError(f"{path}: expected a mask of shape {shape} (the image's), got {m.shape}")
    return m > 0


def _channel_index(channel: str | int) -> int:
    if isinstance(channel, str) and channel in CHANNELS:
        return CHANNELS[channel]
    if isinstance(channel, (int, np.integer)) and not isinstance(channel, bool) and 0 <= channel <= 2:
        return int(channel)
    raise ValueError(f"channel: expected one of {list(CHANNELS)} or 0, 1, 2, got {channel!r}")


def channel_name(channel: str | int) -> str:
    """The name (``"t1_pre"``, ``"flair"``, ``"t1_post"``) of a channel given by name or index."""
    index = _channel_index(channel)
    return next(name for name, i in CHANNELS.items() if i == index)


def load_patient(root: str | os.PathLike, patient: str) -> LGGVolume:
    """All slices of one patient, sorted numerically by slice number.

    ``patient`` is a folder name from :func:`list_patients` or a unique prefix of one
    (``"TCGA_CS_4942"`` or ``"CS_4942"``).
    """
    r = find_root(root)
    folder = _resolve_patient(r, patient)
    files = _slice_files(folder)
    first = _read_image(files[0][1])
    images = np.empty((len(files), *first.shape), dtype=np.uint8)
    masks = np.empty((len(files), *first.shape[:2]), dtype=bool)
    for i, (_, ip, mp) in enumerate(files):
        images[i] = first if i == 0 else _read_image(ip, first.shape)
        masks[i] = _read_mask(mp, first.shape[:2])
    numbers = np.array([n for n, _, _ in files], dtype=np.int64)
    return LGGVolume(patient=folder.name, images=images, masks=masks, slice_numbers=numbers, root=r)


def _index(slice_index: int | str, n: int, what: str) -> int:
    if isinstance(slice_index, str):
        if slice_index == "middle":
            return n // 2
        raise ValueError(f"{what}: expected an int (0-based position in the sorted stack) or 'middle', "
                         f"got {slice_index!r}")
    if not isinstance(slice_index, (int, np.integer)) or isinstance(slice_index, bool):
        raise TypeError(f"{what}: expected an int or 'middle', got {type(slice_index).__name__}")
    i = int(slice_index)
    if not -n <= i < n:
        raise ValueError(f"{what}: {i} is out of range for a stack of {n} slices (valid: 0..{n - 1}, or negative "
                         "from the end)")
    return i % n


def _load_one(folder: Path, slice_index: int | str) -> tuple[np.ndarray, np.ndarray, int, int]:
    files = _slice_files(folder)
    i = _index(slice_index, len(files), "slice_index")
    n, ip, mp = files[i]
    img = _read_image(ip)
    return img, _read_mask(mp, img.shape[:2]), i, n


def load_slice(
    root: str | os.PathLike, patient: str, slice_index: int | str = "middle", channel: str | int = "flair"
) -> tuple[np.ndarray, np.ndarray]:
    """One slice of one patient: (image float64 (H, W) in [0, 1] = uint8 / 255, tumour mask bool).

    ``slice_index`` is the 0-based position in the numerically sorted stack (negative counts from the
    end) or ``"middle"`` (``N // 2``). Reads only that slice's two files.
    """
    r = find_root(root)
    folder = _resolve_patient(r, patient)
    c = _channel_index(channel)
    img, mask, _, _ = _load_one(folder, slice_index)
    return img[..., c].astype(np.float64) / 255.0, mask


def lgg_pairs(
    root: str | os.PathLike,
    protocol: str = "consecutive",
    slice: int | str = "middle",  # the natural name for users
    channel: str | int | None = None,
    limit: int | None = None,
    on_error: Callable[[str, str, Exception], None] | None = None,
) -> Iterator[Pair]:
    """Registration pairs from the LGG data, read lazily (two slices per pair).

    Protocols (patients in :func:`list_patients` order):

    ``"consecutive"``
        patient i (moving) -> patient i + 1 (fixed), each at its own ``slice`` (default the middle
        slice, index N // 2 of each stack); 110 patients give 109 pairs. Default channel FLAIR.
    ``"adjacent-slices"``
        within each patient, slice k (moving) -> slice k + 1 (fixed), k = ``slice``. Default FLAIR.
    ``"pre-post"``
        within each patient, pre-contrast T1 (moving) -> post-contrast T1 (fixed) of the same slice;
        ``channel`` must be left as None. ``meta["t1_pre_is_flair_copy"]`` /
        ``meta["t1_post_is_flair_copy"]`` flag channels that are FLAIR copies in the source.

    Image ids are ``"<patient>_<n>:<channel>"`` (the tif file stem and the channel), so
    ``pair.id`` reads e.g. ``"TCGA_CS_4942_19970222_11:flair->TCGA_CS_4944_20010208_11:flair"``.
    Masks are the tumour masks of the two slices. ``limit`` stops after that many pairs.

    Argument errors are raised here, before iteration starts; file errors (a missing, unreadable or
    damaged slice) when the file is reached. With ``on_error``, a pair whose files cannot be read is
    reported as ``on_error(moving_id, fixed_id, exception)`` (ids ``"<patient folder>:<channel>"``, as the
    slice number may be unknown) and iteration goes on with the next pair; it counts towards ``limit``.
    """
    r = find_root(root)
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol: expected one of {list(PROTOCOLS)}, got {protocol!r}")
    if protocol == "pre-post":
        if channel is not None:
            raise ValueError("channel: the 'pre-post' protocol always pairs t1_pre (moving) with t1_post (fixed); "
                             "leave channel=None")
        mc, fc = "t1_pre", "t1_post"
    else:
        name = "flair" if channel is None else channel
        mc = fc = channel_name(name)
    if isinstance(slice, str) and slice != "middle":
        raise ValueError(f"slice: expected 'middle' or an int (0-based position in each stack), got {slice!r}")
    if not isinstance(slice, str) and (not isinstance(slice, (int, np.integer)) or isinstance(slice, bool)):
        raise TypeError(f"slice: expected 'middle' or an int, got {type(slice).__name__}")
    if limit is not None and (not isinstance(limit, (int, np.integer)) or isinstance(limit, bool) or limit < 0):
        raise ValueError(f"limit: expected None or an int >= 0, got {limit!r}")
    folders = _patient_dirs(r)
    if protocol == "consecutive" and len(folders) < 2:
        raise ValueError(f"protocol 'consecutive' needs at least 2 patients, {r} has {len(folders)}")
    return _iter_pairs(r, folders, protocol, slice, mc, fc, limit, on_error)


def _iter_pairs(root: Path, folders: list[Path], protocol: str, slice_: int | str, mc: str, fc: str,
                limit: int | None, on_error: Callable[[str, str, Exception], None] | None) -> Iterator[Pair]:
    if limit == 0:
        return
    if protocol == "consecutive":
        jobs = [((a, slice_), (b, slice_)) for a, b in zip(folders[:-1], folders[1:], strict=True)]
    elif protocol == "adjacent-slices":
        jobs = [((f, slice_), (f, "next")) for f in folders]
    else:
        jobs = [((f, slice_), (f, "same")) for f in folders]
    for count, ((mf, ms), (ff, fs)) in enumerate(jobs, start=1):
        try:
            pair = _load_pair(root, protocol, mf, ms, ff, fs, mc, fc)
        except (OSError, ValueError) as exc:
            if on_error is None:
                raise
            on_error(f"{mf.name}:{mc}", f"{ff.name}:{fc}", exc)
        else:
            yield pair
        if limit is not None and count >= limit:
            return


def _load_pair(root: Path, protocol: str, mf: Path, ms: int | str, ff: Path, fs: int | str, mc: str,
               fc: str) -> Pair:
    cm, cf = CHANNELS[mc], CHANNELS[fc]
    m_img, m_mask, mi, mn = _load_one(mf, ms)
    if fs == "same":
        f_img, f_mask, fi, fn = m_img, m_mask, mi, mn
    elif fs == "next":
        n_slices = len(_slice_files(ff))
        if mi + 1 >= n_slices:
            raise ValueError(f"{ff.name}: slice index {mi} is the last of {n_slices}; 'adjacent-slices' needs "
                             "slice + 1")
        f_img, f_mask, fi, fn = _load_one(ff, mi + 1)
    else:
        f_img, f_mask, fi, fn = _load_one(ff, fs)
    if m_img.shape != f_img.shape:
        raise ValueError(f"{mf.name} slice {mn} has shape {m_img.shape} but {ff.name} slice {fn} has "
                         f"{f_img.shape}; the pair needs equal shapes")
    meta = {
        "source": "lgg",
        "protocol": protocol,
        "moving_patient": mf.name, "fixed_patient": ff.name,
        "moving_slice_index": mi, "fixed_slice_index": fi,
        "moving_slice_number": mn, "fixed_slice_number": fn,
        "moving_channel": mc, "fixed_channel": fc,
        "root": str(root),
    }
    if protocol == "pre-post":
        meta["t1_pre_is_flair_copy"] = bool(np.array_equal(m_img[..., 0], m_img[..., 1]))
        meta["t1_post_is_flair_copy"] = bool(np.array_equal(m_img[..., 2], m_img[..., 1]))
    return Pair(
        moving=m_img[..., cm].astype(np.float64) / 255.0,
        fixed=f_img[..., cf].astype(np.float64) / 255.0,
        moving_mask=m_mask, fixed_mask=f_mask,
        moving_id=f"{mf.name}_{mn}:{mc}", fixed_id=f"{ff.name}_{fn}:{fc}",
        meta=meta,
    )

