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


@pytest.fixture
def grey_background():
    """The sample pair's moving brain on a grey, noisy background (0.3 + 0.02 N(0, 1); the brain spans [0, 1])
    instead of black, as some scanners and converters deliver it, and its head mask: ``(image, head)``."""
    import numpy as np
    from scipy import ndimage

    from dipreg.data import sample_pair

    m = sample_pair().moving
    head = ndimage.binary_fill_holes(m > 0.05 * m.max())
    noise = np.random.default_rng(0).standard_normal(m.shape)
    return np.where(head, m, 0.3 * m.max() + 0.02 * m.max() * noise), head


@pytest.fixture
def regenerate_stored():
    """``scripts/regenerate_stored.py`` imported as a module (scripts/ is not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "regenerate_stored.py"
    spec = importlib.util.spec_from_file_location("regenerate_stored", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
