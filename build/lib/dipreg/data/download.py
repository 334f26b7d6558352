"""Download the full LGG dataset from Kaggle (for Colab and other fresh machines).

The data are CC BY-NC-SA 4.0 (non-commercial, share-alike) and fall under the TCIA data usage
policy; cite Buda et al. 2019 and Mazurowski et al. 2017 wherever results on them are shown.
"""

from __future__ import annotations

import inspect
import os
import shutil
from pathlib import Path

from dipreg.data.lgg import find_root

KAGGLE_HANDLE = "mateuszbuda/lgg-mri-segmentation"


def download_lgg(dest: str | os.PathLike | None = None) -> Path:
    """Download (or reuse kagglehub's cached copy of) the LGG dataset; returns its ``kaggle_3m`` folder.

    Needs the optional package ``kagglehub`` (``pip install kagglehub``); public datasets download
    without a Kaggle account in most environments, otherwise run ``kagglehub.login()`` first.

    Args:
        dest: optional folder to hold the data. Without it the files stay in kagglehub's cache
            (``~/.cache/kagglehub``). With it, kagglehub's ``output_dir`` is used when the installed
            version has it; otherwise the ``kaggle_3m`` tree is copied from the cache into ``dest``.

    Returns:
        The ``kaggle_3m`` folder, ready for :func:`dipreg.data.lgg_pairs` and friends.
    """
    try:
        import kagglehub
    except ImportError as exc:
        raise ImportError(
            "download_lgg needs the optional package kagglehub: pip install kagglehub "
            "(or download the dataset by hand from https://www.kaggle.com/datasets/mateuszbuda/lgg-mri-segmentation "
            "and pass its folder to dipreg.data.find_root)"
        ) from exc
    target = None
    if dest is not None:
        if not isinstance(dest, (str, os.PathLike)):
            raise TypeError(f"dest: expected a folder path (str or os.PathLike), got {type(dest).__name__}")
        target = Path(dest).expanduser()
        if target.exists() and not target.is_dir():
            raise ValueError(f"dest: {target} exists and is not a folder")
    supports_output_dir = False
    if target is not None:
        try:
            supports_output_dir = "output_dir" in inspect.signature(kagglehub.dataset_download).parameters
        except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
            supports_output_dir = False
    if target is not None and supports_output_dir:
        target.mkdir(parents=True, exist_ok=True)
        downloaded = kagglehub.dataset_download(KAGGLE_HANDLE, output_dir=str(target))
    else:
        downloaded = kagglehub.dataset_download(KAGGLE_HANDLE)
    root = find_root(downloaded)
    if target is None or supports_output_dir:
        return root
    out = target / "kaggle_3m"
    if out.resolve() != root.resolve():
        target.mkdir(parents=True, exist_ok=True)
        shutil.copytree(root, out, dirs_exist_ok=True)
    return find_root(out)
