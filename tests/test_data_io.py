"""Image and displacement I/O: round trips, squeezing, damaged files and clear errors."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import tifffile

from dipreg.data import read_displacement, read_image, write_displacement, write_image


@pytest.fixture
def image():
    return np.random.default_rng(0).random((20, 24))


@pytest.fixture
def affine():
    a = np.diag([0.9, 1.1, 3.0, 1.0])
    a[:3, 3] = [-10.0, 5.0, 2.0]
    return a


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_nifti_round_trip_keeps_affine(tmp_path, image, affine, ext):
    path = write_image(tmp_path / f"img{ext}", image, affine)
    assert nib.load(str(path)).shape == (20, 24, 1)
    back, aff = read_image(path)
    assert np.array_equal(back, image) and back.dtype == np.float64
    assert np.allclose(aff, affine)


def test_nifti_dtypes(tmp_path, image):
    write_image(tmp_path / "f32.nii.gz", image.astype(np.float32))
    assert nib.load(str(tmp_path / "f32.nii.gz")).get_data_dtype() == np.float32
    write_image(tmp_path / "mask.nii.gz", image > 0.5)
    assert nib.load(str(tmp_path / "mask.nii.gz")).get_data_dtype() == np.uint8
    back, aff = read_image(tmp_path / "mask.nii.gz")
    assert np.array_equal(back, (image > 0.5).astype(float)) and np.allclose(aff, np.eye(4))


def test_nifti_singleton_first_axis_affine_follows(tmp_path, image, affine):
    nib.save(nib.Nifti1Image(image[None], affine), str(tmp_path / "a.nii"))  # shape (1, H, W)
    back, aff = read_image(tmp_path / "a.nii")
    assert np.array_equal(back, image)
    r, c = 7, 11
    assert np.allclose(aff @ [r, c, 0, 1], affine @ [0, r, c, 1])


def test_nifti_volume_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 3)), np.eye(4)), str(tmp_path / "vol.nii.gz"))
    with pytest.raises(ValueError, match=r"vol\.nii\.gz.*2D"):
        read_image(tmp_path / "vol.nii.gz")


def test_npy_round_trip(tmp_path, image):
    write_image(tmp_path / "img.npy", image)
    back, aff = read_image(tmp_path / "img.npy")
    assert np.array_equal(back, image) and aff is None


def test_png_round_trip(tmp_path, image):
    write_image(tmp_path / "img.png", image)
    back, aff = read_image(tmp_path / "img.png")
    assert aff is None and back.shape == image.shape
    assert np.abs(back - image).max() <= 0.5 / 255 + 1e-12
    write_image(tmp_path / "img16.png", image, bit_depth=16)
    assert np.abs(read_image(tmp_path / "img16.png")[0] - image).max() <= 0.5 / 65535 + 1e-12


def test_png_rescales_with_warning(tmp_path, image):
    with pytest.warns(UserWarning, match="rescaled"):
        write_image(tmp_path / "big.png", image * 1000 - 3)
    back, _ = read_image(tmp_path / "big.png")
    assert back.min() == 0 and back.max() == 1
    with pytest.warns(UserWarning, match="affine"):
        write_image(tmp_path / "a.png", image, np.eye(4))
    with pytest.raises(ValueError, match="bit_depth"):
        write_image(tmp_path / "b.png", image, bit_depth=12)


def test_tif_and_colour(tmp_path, image):
    write_image(tmp_path / "img.tif", image)
    back, _ = read_image(tmp_path / "img.tif")
    assert np.allclose(back, image, atol=1e-7)
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 100, 200
    rgb[0, 0] = 0
    tifffile.imwrite(tmp_path / "lgg.tif", rgb)
    with pytest.raises(ValueError, match="channel="):
        read_image(tmp_path / "lgg.tif")
    flair, _ = read_image(tmp_path / "lgg.tif", channel="flair")
    assert flair[5, 5] == pytest.approx(100 / 255)
    assert read_image(tmp_path / "lgg.tif", channel=2)[0][5, 5] == pytest.approx(200 / 255)
    with pytest.raises(ValueError, match="channel"):
        read_image(tmp_path / "lgg.tif", channel=7)
    with pytest.raises(ValueError, match="not a colour image"):
        read_image(tmp_path / "img.tif", channel=0)


@pytest.mark.parametrize("ext", [".npy", ".nii", ".nii.gz"])
def test_displacement_round_trip(tmp_path, affine, ext):
    u = np.random.default_rng(1).normal(size=(2, 12, 10))
    path = write_displacement(tmp_path / f"u{ext}", u, affine if ext != ".npy" else None)
    back, aff = read_displacement(path)
    assert np.array_equal(back, u)
    if ext == ".npy":
        assert aff is None
    else:
        img = nib.load(str(path))
        assert img.shape == (12, 10, 1, 1, 2)
        assert img.header.get_intent()[0] == "vector"
        descrip = img.header["descrip"].item().decode()
        assert "pixels" in descrip and "[row, col]" in descrip and "pull-back" in descrip
        assert np.allclose(aff, affine)


def test_foreign_displacement_warns_and_bad_shape(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 1, 1, 2)), np.eye(4)), str(tmp_path / "itk.nii.gz"))
    with pytest.warns(UserWarning, match="not written by dipreg"):
        u, _ = read_displacement(tmp_path / "itk.nii.gz")
    assert u.shape == (2, 6, 5)
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 2)), np.eye(4)), str(tmp_path / "flat.nii.gz"))
    with pytest.raises(ValueError, match=r"\(H, W, 1, 1, 2\)"):
        read_displacement(tmp_path / "flat.nii.gz")
    np.save(tmp_path / "bad.npy", np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        read_displacement(tmp_path / "bad.npy")
    with pytest.raises(ValueError, match="displacement"):
        write_displacement(tmp_path / "x.npy", np.zeros((4, 4)))
    with pytest.raises(ValueError, match="supported"):
        write_displacement(tmp_path / "x.png", np.zeros((2, 4, 4)))


def test_corrupt_nifti(tmp_path, image):
    garbage = tmp_path / "garbage.nii"
    garbage.write_bytes(b"\x00\x01 definitely not nifti " * 10)
    with pytest.raises(ValueError, match=r"garbage\.nii.*not a valid NIfTI"):
        read_image(garbage)
    good = write_image(tmp_path / "good.nii.gz", image)
    raw = good.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"cut\.nii\.gz.*not a valid NIfTI"):
        read_image(cut)
    plain = tmp_path / "plain.nii"
    plain.write_bytes(gzip.decompress(raw)[:400])  # header intact, data truncated
    with pytest.raises(ValueError, match=r"plain\.nii.*not a valid NIfTI"):
        read_image(plain)
    notgz = tmp_path / "notgz.nii.gz"
    notgz.write_bytes(b"plain text")
    with pytest.raises(ValueError, match="not a valid NIfTI"):
        read_displacement(notgz)


def test_missing_and_unknown(tmp_path, image):
    with pytest.raises(FileNotFoundError, match="nothere.nii"):
        read_image(tmp_path / "nothere.nii")
    with pytest.raises(FileNotFoundError, match="nothere.npy"):
        read_displacement(tmp_path / "nothere.npy")
    (tmp_path / "img.bmp").write_bytes(b"BM")
    with pytest.raises(ValueError, match=r"\.bmp.*supported: .*\.nii\.gz"):
        read_image(tmp_path / "img.bmp")
    with pytest.raises(ValueError, match="supported"):
        write_image(tmp_path / "img.jpg2", image)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_image(tmp_path / "no" / "dir.png", image)
    with pytest.raises(TypeError, match="path"):
        read_image(123)
    with pytest.raises(ValueError, match="affine"):
        write_image(tmp_path / "x.nii", image, np.eye(3))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match=r"bad\.png.*not a readable PNG"):
        read_image(tmp_path / "bad.png")
    np.save(tmp_path / "nan.npy", np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="NaN"):
        read_image(tmp_path / "nan.npy")


def test_an_npy_of_two_channels_is_not_taken_for_grey_and_alpha(tmp_path):
    path = tmp_path / "field.npy"
    np.save(path, np.zeros((16, 16, 2)))
    with pytest.raises(ValueError, match="read_displacement"):
        read_image(path)


def test_a_singular_nifti_affine_is_refused_on_reading(tmp_path, image, write_singular_nifti):
    path = tmp_path / "zero.nii.gz"
    write_singular_nifti(path, image)
    assert np.all(nib.load(str(path)).affine[:3] == 0)
    with pytest.raises(ValueError, match="invertible 4 x 4") as info:
        read_image(path)
    assert str(path) in str(info.value) and "set_sform" in str(info.value)
    with pytest.raises(ValueError, match="affine: expected an invertible"):
        write_image(tmp_path / "out.nii.gz", image, np.zeros((4, 4)))


@pytest.mark.parametrize("ext", [".npy", ".nii.gz", ".tif"])
def test_complex_images_are_refused(tmp_path, image, ext):
    data = (image + 1j * image[::-1]).astype(np.complex64)
    path = tmp_path / f"c{ext}"
    if ext == ".npy":
        np.save(path, data)
    elif ext == ".tif":
        tifffile.imwrite(path, data)
    else:
        nib.save(nib.Nifti1Image(data[:, :, None], np.eye(4)), str(path))
    with pytest.raises(ValueError, match="complex values") as info:
        read_image(path)
    assert str(path) in str(info.value) and "np.abs" in str(info.value)
