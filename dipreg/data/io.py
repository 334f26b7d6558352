"""Reading and writing 2D images and displacements (NIfTI, PNG/TIFF/JPEG, .npy).

Conventions:

* :func:`read_image` returns ``(image, affine)``: a float64 (H, W) array and the NIfTI 4 x 4 affine
  (``None`` for other formats). Array axis 0 of the file becomes rows, axis 1 columns; a singleton
  axis is dropped and the affine's columns are reordered so that it maps ``(row, col, 0, 1)``.
* Intensities: NIfTI (after ``scl_slope``/``scl_inter``), ``.npy`` and floating-point TIFF keep their
  values; 8- and 16-bit unsigned PNG/JPEG/TIFF are divided by 255 or 65535, so an LGG tif reads as
  ``uint8 / 255`` like :mod:`dipreg.data.lgg`.
* :func:`write_image` to PNG stores values in [0, 1] as 8-bit (``round(255 x)``) or 16-bit; anything
  outside [0, 1] is min-max rescaled first, with a warning that says so. NIfTI, TIFF (float32) and
  ``.npy`` keep the values.
* Displacements are (2, H, W) in pixels, channel 0 rows, channel 1 columns, pull-back
  (``warped(x) = moving(x + u(x))``). In NIfTI they are stored as shape (H, W, 1, 1, 2) with intent
  ``vector`` and the description ``"dipreg displacement: pixels, [row, col], pull-back"``. Note that
  this is *not* an ITK/ANTs displacement field (those are in millimetres, physical (x, y) axes).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from dipreg.validate import as_displacement, as_image

READ_IMAGE_FORMATS = (".nii", ".nii.gz", ".png", ".tif", ".tiff", ".jpg", ".jpeg", ".npy")
WRITE_IMAGE_FORMATS = (".nii", ".nii.gz", ".png", ".tif", ".tiff", ".npy")
DISPLACEMENT_FORMATS = (".nii", ".nii.gz", ".npy")
DISPLACEMENT_DESCRIPTION = "dipreg displacement: pixels, [row, col], pull-back"


def _format(path: Path, supported: tuple[str, ...], what: str) -> str:
    name = path.name.lower()
    ext = ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()
    if ext not in supported:
        raise ValueError(f"{path}: unsupported file type {ext or '(no extension)'!r} for {what}; "
                         f"supported: {', '.join(supported)}")
    return ext


def _as_path(path: Any, name: str = "path") -> Path:
    if isinstance(path, (str, os.PathLike)):
        return Path(path).expanduser()
    raise TypeError(f"{name}: expected a file path (str or os.PathLike), got {type(path).__name__}")


def _existing(path: Any) -> Path:
    p = _as_path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file: {p}")
    if not p.is_file():
        raise ValueError(f"{p} is not a regular file")
    return p


def _writable(path: Any) -> Path:
    p = _as_path(path)
    if not p.parent.is_dir():
        raise FileNotFoundError(f"cannot write {p}: folder {p.parent} does not exist")
    return p


def _load_nifti(path: Path) -> tuple[np.ndarray, Any]:
    """(data float64, nibabel image) or a ValueError naming the file."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        real = not np.issubdtype(img.get_data_dtype(), np.complexfloating)  # get_fdata drops imaginary parts
        data = np.asarray(img.get_fdata(dtype=np.float64)) if real else None
    except Exception as exc:  # nibabel raises many types for damaged files (ImageFileError, EOFError, zlib...)
        raise ValueError(f"{path}: not a valid NIfTI file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ValueError(f"{path}: not a NIfTI file (nibabel read it as {type(img).__name__})")
    _refuse_complex(img.get_data_dtype(), path)
    return data, img


def _affine(affine: Any, name: str = "affine") -> np.ndarray:
    """``affine`` as a finite, invertible 4 x 4 float64 matrix (voxel -> world), or a ValueError naming ``name``."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: expected a finite 4 x 4 matrix (voxel -> world), got shape {a.shape}"
                         + ("" if a.shape != (4, 4) else f" with non-finite entries {a.tolist()}"))
    sv = np.linalg.svd(a[:3, :3], compute_uv=False)
    if sv[-1] <= 1e-12 * sv[0] or sv[0] == 0:
        raise ValueError(f"{name}: expected an invertible 4 x 4 voxel -> world matrix (non-zero voxel sizes), got "
                         f"the singular {a.tolist()}; fix the file's header (e.g. nibabel: img.set_sform(np.eye(4), "
                         "code=1) and save it again) or convert the image to .npy")
    return a


def _refuse_complex(dtype: np.dtype, path: Path) -> None:
    if np.issubdtype(dtype, np.complexfloating):
        raise ValueError(f"{path}: complex values (dtype {dtype}); expected real intensities. Save the magnitude "
                         "(np.abs(x)) or the real part (x.real) as the image instead")


def _squeeze_2d(data: np.ndarray, affine: np.ndarray | None, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    kept = [k for k, s in enumerate(data.shape) if s != 1]
    if len(kept) != 2:
        raise ValueError(f"{path}: expected a 2D image (a singleton third axis is fine), got shape {data.shape}; "
                         "dipreg works on 2D slices, extract one first (e.g. nibabel.load(path).get_fdata()[:, :, k])")
    out = data.reshape([data.shape[k] for k in kept])
    if affine is None:
        return out, None
    if max(kept) > 2:
        raise ValueError(f"{path}: the image axes {kept} are not spatial axes of the NIfTI file (shape {data.shape})")
    dropped = [k for k in range(3) if k not in kept]
    return out, affine[:, [kept[0], kept[1], dropped[0], 3]].copy()


def _channel(data: np.ndarray, channel: int | str | None, path: Path) -> np.ndarray:
    if data.ndim == 3 and data.shape[-1] in (2, 3, 4):
        if data.shape[-1] == 2 and channel is None:
            if path.suffix.lower() in (".png", ".tif", ".tiff", ".jpg", ".jpeg"):
                return data[..., 0]  # grey + alpha
            raise ValueError(f"{path}: shape {data.shape} is not an image (H, W); if it is a displacement, read it "
                             "with read_displacement (dipreg stores displacements as (2, H, W))")
        if channel is None:
            raise ValueError(f"{path}: colour image of shape {data.shape}; pass channel= (0, 1, 2, or for LGG tifs "
                             "'t1_pre', 'flair', 't1_post') to pick one")
        from dipreg.data.lgg import CHANNELS

        c = CHANNELS.get(channel, channel) if isinstance(channel, str) else channel
        if not isinstance(c, (int, np.integer)) or isinstance(c, bool) or not 0 <= c < data.shape[-1]:
            raise ValueError(f"channel: expected an int in 0..{data.shape[-1] - 1} or one of {list(CHANNELS)}, "
                             f"got {channel!r}")
        return data[..., int(c)]
    if channel is not None:
        raise ValueError(f"channel={channel!r} given but {path} is not a colour image (shape {data.shape})")
    return data


def _scale_unsigned(data: np.ndarray) -> np.ndarray:
    if data.dtype == bool:
        return data.astype(np.float64)
    if data.dtype in (np.uint8, np.uint16):
        return data.astype(np.float64) / np.iinfo(data.dtype).max
    return data.astype(np.float64)


def read_image(path: str | os.PathLike, *, channel: int | str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a 2D image: ``(image float64 (H, W), affine 4 x 4 or None)``.

    Formats: ``.nii``/``.nii.gz`` (nibabel; 3D with one singleton axis is squeezed, affine kept),
    ``.png``/``.jpg``/``.jpeg``/``.tif``/``.tiff`` (colour needs ``channel=``), ``.npy``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unsupported extension, unreadable or damaged file, not 2D, NaN/inf or complex values, a
            NIfTI affine that is not a finite invertible matrix.
    """
    p = _existing(path)
    ext = _format(p, READ_IMAGE_FORMATS, "read_image")
    affine = None
    if ext in (".nii", ".nii.gz"):
        data, img = _load_nifti(p)
        affine = _affine(img.affine, f"{p}: the NIfTI affine")
        if channel is not None:
            raise ValueError(f"channel= is only for colour PNG/JPEG/TIFF/.npy images, not NIfTI ({p})")
        data, affine = _squeeze_2d(data, affine, p)
    elif ext == ".npy":
        try:
            data = np.load(p, allow_pickle=False)
        except Exception as exc:
            raise ValueError(f"{p}: not a readable .npy array ({type(exc).__name__}: {exc})") from exc
        if not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
            raise ValueError(f"{p}: expected a numeric array, got dtype {data.dtype}")
        _refuse_complex(data.dtype, p)
        data = _channel(data, channel, p).astype(np.float64)
        data, _ = _squeeze_2d(data, None, p)
    else:
        try:
            if ext in (".tif", ".tiff"):
                import tifffile

                data = np.asarray(tifffile.imread(p))
            else:
                import imageio.v3 as iio

                data = np.asarray(iio.imread(p, plugin="pillow"))
        except Exception as exc:
            raise ValueError(f"{p}: not a readable {ext[1:].upper()} image ({type(exc).__name__}: {exc})") from exc
        _refuse_complex(data.dtype, p)
        data = _scale_unsigned(_channel(data, channel, p))
        data, _ = _squeeze_2d(data, None, p)
    return as_image(data, str(p), allow_constant=True), affine


def _nifti_dtype(arr: np.ndarray) -> np.dtype:
    if arr.dtype == bool:
        return np.dtype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        for t in (np.uint8, np.int16, np.int32):
            if arr.size == 0 or (arr.min() >= np.iinfo(t).min and arr.max() <= np.iinfo(t).max):
                return np.dtype(t)
        return np.dtype(np.float64)
    return np.dtype(np.float32) if arr.dtype == np.float32 else np.dtype(np.float64)


def write_image(path: str | os.PathLike, image: Any, affine: Any = None, *, bit_depth: int = 8) -> Path:
    """Write a 2D image; returns the path.

    * ``.nii``/``.nii.gz``: shape (H, W, 1), values and dtype kept (bool as uint8), ``affine``
      (default identity) stored.
    * ``.png``: 8-bit (``bit_depth=8``) or 16-bit grey. Values in [0, 1] are stored as
      ``round(x * 255)`` (or 65535) so :func:`read_image` returns them to within half a grey level;
      other ranges are min-max rescaled to [0, 1] first, with a warning.
    * ``.tif``/``.tiff``: float32, values kept. ``.npy``: values and dtype kept.

    ``affine`` is only stored in NIfTI; giving one for another format warns that it is dropped.
    """
    p = _writable(path)
    ext = _format(p, WRITE_IMAGE_FORMATS, "write_image")
    raw = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    img = as_image(raw, "image", allow_constant=True)
    raw = np.asarray(raw).reshape(img.shape)
    if affine is not None:
        affine = _affine(affine)
        if ext not in (".nii", ".nii.gz"):
            warnings.warn(f"write_image: {ext} files cannot store an affine; it is not saved in {p}", stacklevel=2)
    if ext in (".nii", ".nii.gz"):
        import nibabel as nib

        dtype = _nifti_dtype(raw)
        data = (raw.astype(dtype) if dtype != np.float64 else img)[:, :, None]
        nimg = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
        nimg.header.set_data_dtype(dtype)
        nimg.header["descrip"] = b"dipreg image"
        nib.save(nimg, str(p))
    elif ext == ".png":
        if bit_depth not in (8, 16):
            raise ValueError(f"bit_depth: expected 8 or 16, got {bit_depth}")
        lo, hi = float(img.min()), float(img.max())
        scaled = img
        if lo < 0.0 or hi > 1.0:
            warnings.warn(f"write_image: values span [{lo:g}, {hi:g}], outside [0, 1]; rescaled min-max to [0, 1] "
                          f"for the {bit_depth}-bit PNG {p} (use .nii or .npy to keep values)", stacklevel=2)
            scaled = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        top = 255 if bit_depth == 8 else 65535
        out = np.round(scaled * top).astype(np.uint8 if bit_depth == 8 else np.uint16)
        import imageio.v3 as iio

        iio.imwrite(p, out, plugin="pillow")
    elif ext in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(p, img.astype(np.float32))
    else:
        np.save(p, raw if raw.dtype == bool or np.issubdtype(raw.dtype, np.number) else img)
    return p


def write_displacement(path: str | os.PathLike, displacement: Any, affine: Any = None) -> Path:
    """Write a (2, H, W) pixel displacement as ``.npy`` or NIfTI (see the module docstring); returns the path."""
    p = _writable(path)
    ext = _format(p, DISPLACEMENT_FORMATS, "write_displacement")
    u = as_displacement(displacement, "displacement")
    if affine is not None:
        affine = _affine(affine)
    if ext == ".npy":
        if affine is not None:
            warnings.warn(f"write_displacement: .npy cannot store an affine; it is not saved in {p}", stacklevel=2)
        np.save(p, u)
        return p
    import nibabel as nib

    data = np.ascontiguousarray(u.transpose(1, 2, 0)[:, :, None, None, :])
    nimg = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    nimg.header.set_data_dtype(np.float64)
    nimg.header.set_intent("vector", (), name="displacement")
    nimg.header["descrip"] = DISPLACEMENT_DESCRIPTION.encode()
    nib.save(nimg, str(p))
    return p


def read_displacement(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a displacement written by :func:`write_displacement`: ``(u (2, H, W) float64, affine or None)``.

    A NIfTI file must have shape (H, W, 1, 1, 2). One without dipreg's description is read the same
    way, with a warning: fields from ITK/ANTs are in millimetres and (x, y) order, not dipreg's units.
    """
    p = _existing(path)
    ext = _format(p, DISPLACEMENT_FORMATS, "read_displacement")
    if ext == ".npy":
        try:
            data = np.load(p, allow_pickle=False)
        except Exception as exc:
            raise ValueError(f"{p}: not a readable .npy array ({type(exc).__name__}: {exc})") from exc
        return as_displacement(data, str(p)), None
    data, img = _load_nifti(p)
    if data.ndim != 5 or data.shape[2:] != (1, 1, 2):
        raise ValueError(f"{p}: expected a 2D displacement NIfTI of shape (H, W, 1, 1, 2), got {data.shape}")
    descrip = bytes(np.asarray(img.header["descrip"]).item()).decode("latin-1").strip("\x00 ")
    if "pixels" not in descrip or "pull-back" not in descrip:
        warnings.warn(f"read_displacement: {p} was not written by dipreg (description {descrip!r}); reading it as "
                      "pixels, [row, col], pull-back", stacklevel=2)
    u = data[:, :, 0, 0, :].transpose(2, 0, 1)
    return as_displacement(u, str(p)), _affine(img.affine, f"{p}: the NIfTI affine")
