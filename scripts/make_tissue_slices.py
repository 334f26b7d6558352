"""Regenerate ``dipreg/data/sample/tissue_slices.npz``: six subjects' axial T1 slices with tissue labels.

Development-only. The six 256 x 256 skull-stripped T1 slices (``r16slice.jpg`` ... ``r85slice.jpg``) ship in
the ``data/`` folder of the ANTsPy repository (Apache-2.0); antspyx's wheel no longer carries them and
fetches them at run time, which dipreg never does. Get a copy of that folder (a clone of the repository),
then::

    python scripts/make_tissue_slices.py --ants-data PATH/TO/ANTsPy/data

Labels: ANTs Atropos, three classes initialised by k-means inside ANTs' ``get_mask`` brain mask, a 0.2
Markov random field weight over the 4-neighbourhood, 5 EM iterations (the three-tissue recipe of the ANTs
tutorials), one ITK thread. Codes: 0 background, 1 CSF, 2 grey matter, 3 white matter (Atropos sorts the
k-means classes by mean intensity, darkest first). These are automatic tissue labels, not expert
delineations: they are as good as a three-class intensity model with a smoothness prior. Atropos is not
bit-for-bit repeatable: a rerun moved a few pixels of one subject (r27) between classes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

import numpy as np

SUBJECTS = ("r16", "r27", "r30", "r62", "r64", "r85")
OUT = Path(__file__).resolve().parents[1] / "dipreg" / "data" / "sample" / "tissue_slices.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ants-data", required=True, help="the data/ folder of the ANTsPy repository")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"
    import ants
    from skimage import io

    arrays: dict[str, np.ndarray] = {}
    for name in SUBJECTS:
        image = io.imread(Path(args.ants_data) / f"{name}slice.jpg")
        if image.shape != (256, 256) or image.dtype != np.uint8:
            raise SystemExit(f"{name}slice.jpg: expected a 256 x 256 uint8 image, got {image.shape} {image.dtype}")
        img = ants.from_numpy(image.astype(np.float32))
        mask = ants.get_mask(img)
        seg = ants.atropos(a=img, m="[0.2,1x1]", c="[5,0]", i="kmeans[3]", x=mask)
        labels = seg["segmentation"].numpy().astype(np.uint8)
        arrays[f"{name}_image"] = image
        arrays[f"{name}_labels"] = labels
        print(name, "voxels per label:", np.bincount(labels.ravel(), minlength=4).tolist())
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} (sha256 {hashlib.sha256(Path(args.out).read_bytes()).hexdigest()[:16]})")


if __name__ == "__main__":
    main()
