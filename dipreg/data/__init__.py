"""Data for dipreg: embedded real brain MRI pairs, synthetic deformations, the LGG dataset and file I/O.

Every source returns a :class:`Pair` (moving, fixed, optional masks, labels, ground truth, ids).

* :func:`sample_pair` / :func:`sample_names`: real brain MRI slices shipped in the package
  (MNI ICBM152 template, one individual, a mean head, a coronal slice; see ``sample/ATTRIBUTION.md``).
* :func:`tissue_pairs` / :func:`tissue_pair`: six subjects' axial T1 slices with tissue labels (ANTsPy data),
  every ordered pair an inter-subject problem judged by label Dice; development and held-out splits.
* :func:`random_displacement` / :func:`synthetic_pair`: smooth invertible deformations with known
  ground truth, ``warp(pair.moving, pair.displacement) == pair.fixed``.
* :func:`lgg_pairs`, :func:`load_patient`, :func:`load_slice`, :func:`list_patients`, :func:`find_root`,
  :func:`default_lgg_root`: the Kaggle LGG Segmentation Dataset (read in place, never shipped);
  :func:`download_lgg` fetches it with kagglehub; :data:`DEVELOPMENT_PATIENTS` / :func:`is_development`: the
  six patients the default presets were chosen on.
* :func:`read_image`, :func:`write_image`, :func:`read_displacement`, :func:`write_displacement`:
  NIfTI / PNG / TIFF / .npy.
"""

from dipreg.data.download import download_lgg
from dipreg.data.io import read_displacement, read_image, write_displacement, write_image
from dipreg.data.lgg import (
    CHANNELS,
    DEVELOPMENT_PATIENTS,
    PROTOCOLS,
    LGGVolume,
    default_lgg_root,
    find_root,
    is_development,
    lgg_pairs,
    list_patients,
    load_patient,
    load_slice,
)
from dipreg.data.pair import Pair
from dipreg.data.sample import sample_names, sample_pair
from dipreg.data.synthetic import random_displacement, synthetic_pair
from dipreg.data.tissue import tissue_pair, tissue_pairs

__all__ = [
    "CHANNELS",
    "DEVELOPMENT_PATIENTS",
    "PROTOCOLS",
    "LGGVolume",
    "Pair",
    "default_lgg_root",
    "download_lgg",
    "find_root",
    "is_development",
    "lgg_pairs",
    "list_patients",
    "load_patient",
    "load_slice",
    "random_displacement",
    "read_displacement",
    "read_image",
    "sample_names",
    "sample_pair",
    "synthetic_pair",
    "tissue_pair",
    "tissue_pairs",
    "write_displacement",
    "write_image",
]
