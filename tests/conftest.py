"""Shared test fixtures."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a test with one torch thread: small ops on a shared 2-core machine are far slower with two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def write_singular_nifti():
    """A function ``(path, image)`` that writes a (H, W) image as a NIfTI whose sform is all zeros (a singular
    affine), as some converters do."""

    def write(path, image) -> None:
        import nibabel as nib
        import numpy as np

        header = nib.Nifti1Header()
        header.set_data_shape((*image.shape, 1))
        header.set_data_dtype(np.float32)
        for key in ("srow_x", "srow_y", "srow_z"):
            header[key] = 0
        header["sform_code"], header["qform_code"] = 1, 0
        nib.save(nib.Nifti1Image(image[:, :, None].astype(np.float32), None, header=header), str(path))

    return write
