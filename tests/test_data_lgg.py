"""LGG loader on a tiny synthetic layout (every accepted root), on the real data if present, and download."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import tifffile

from dipreg.data import (
    CHANNELS,
    DEVELOPMENT_PATIENTS,
    LGGVolume,
    Pair,
    default_lgg_root,
    download_lgg,
    find_root,
    is_development,
    lgg_pairs,
    list_patients,
    load_patient,
    load_slice,
)

REAL = Path(__file__).resolve().parents[1].parent / "shared/data/lgg-mri-segmentation/kaggle_3m"
PATIENTS = {"TCGA_AA_0001_20000101": 11, "TCGA_BB_0002_20000202": 3, "TCGA_CC_0003_20000303": 4}
H = W = 16


def write_patient(folder: Path, pid: str, n_slices: int) -> None:
    d = folder / pid
    d.mkdir(parents=True)
    for n in range(1, n_slices + 1):
        img = np.zeros((H, W, 3), np.uint8)
        img[..., 0] = 10  # t1_pre
        img[..., 1] = 100  # flair
        img[..., 2] = 200  # t1_post
        img[0, 0, :] = n  # slice number marker, every channel
        img[1, 1, 1] = 1 + sorted(PATIENTS).index(pid) if pid in PATIENTS else 0  # patient marker
        mask = np.zeros((H, W), np.uint8)
        mask[4 : 4 + n % 5, 4:8] = 255
        tifffile.imwrite(d / f"{pid}_{n}.tif", img)
        tifffile.imwrite(d / f"{pid}_{n}_mask.tif", mask)


def make_layout(base: Path, patients=PATIENTS) -> Path:
    """Write base/kaggle_3m/... and return the kaggle_3m folder."""
    root = base / "kaggle_3m"
    for pid, n in patients.items():
        write_patient(root, pid, n)
    (root / "data.csv").write_text("Patient,RNASeqCluster\n")
    (root / "README.md").write_text("readme\n")
    return root


@pytest.fixture
def layout(tmp_path) -> Path:
    return make_layout(tmp_path / "lgg-mri-segmentation")


@pytest.fixture
def download_root(tmp_path) -> Path:
    """The Kaggle download root: kaggle_3m/ plus the duplicated lgg-mri-segmentation/kaggle_3m/ tree."""
    base = tmp_path / "versions" / "2"
    make_layout(base)
    make_layout(base / "lgg-mri-segmentation")
    (base / "data.csv").write_text("Patient\n")
    return base


def test_find_root_variants(layout, download_root):
    assert find_root(layout) == layout.resolve()
    assert find_root(layout.parent) == layout.resolve()  # lgg-mri-segmentation
    assert find_root(str(download_root)) == (download_root / "kaggle_3m").resolve()
    only_dup = download_root / "lgg-mri-segmentation"
    assert find_root(only_dup) == (only_dup / "kaggle_3m").resolve()
    for root in (layout, layout.parent, download_root):
        assert list_patients(root) == sorted(PATIENTS)


def test_numeric_slice_order(layout):
    vol = load_patient(layout, "TCGA_AA_0001_20000101")
    assert isinstance(vol, LGGVolume)
    assert vol.images.shape == (11, H, W, 3) and vol.images.dtype == np.uint8
    assert vol.masks.shape == (11, H, W) and vol.masks.dtype == bool
    assert list(vol.slice_numbers) == list(range(1, 12))  # _10 and _11 after _9
    assert list(vol.images[:, 0, 0, 1]) == list(range(1, 12))
    assert vol.middle == 5 and len(vol) == 11
    assert vol.channel("t1_post")[3, 5, 5] == pytest.approx(200 / 255)
    assert load_patient(layout, "AA_0001").patient == "TCGA_AA_0001_20000101"  # unique prefix


def test_load_slice(layout):
    img, mask = load_slice(layout, "TCGA_AA_0001_20000101", 9)
    assert img.dtype == np.float64 and img.shape == (H, W) and mask.dtype == bool
    assert img[0, 0] == pytest.approx(10 / 255)  # index 9 is file _10
    mid, _ = load_slice(layout, "TCGA_AA_0001_20000101")  # middle = N // 2 = 5 -> file _6
    assert mid[0, 0] == pytest.approx(6 / 255)
    pre, _ = load_slice(layout, "TCGA_AA_0001_20000101", -1, channel="t1_pre")
    assert pre[0, 0] == pytest.approx(11 / 255) and pre[5, 5] == pytest.approx(10 / 255)
    assert load_slice(layout, "TCGA_AA_0001_20000101", 0, channel=2)[0][5, 5] == pytest.approx(200 / 255)
    assert CHANNELS == {"t1_pre": 0, "flair": 1, "t1_post": 2}


def test_consecutive_pairs(layout):
    pairs = list(lgg_pairs(layout))
    assert len(pairs) == len(PATIENTS) - 1
    p = pairs[0]
    assert isinstance(p, Pair)
    assert p.id == "TCGA_AA_0001_20000101_6:flair->TCGA_BB_0002_20000202_2:flair"
    assert p.moving[0, 0] == pytest.approx(6 / 255) and p.fixed[0, 0] == pytest.approx(2 / 255)
    assert p.moving[5, 5] == pytest.approx(100 / 255)
    assert p.meta["moving_slice_index"] == 5 and p.meta["moving_slice_number"] == 6
    assert p.moving_mask.dtype == bool and p.moving_mask.sum() == 4 * (6 % 5)
    assert len(list(lgg_pairs(layout, limit=1))) == 1
    assert list(lgg_pairs(layout, limit=0)) == []
    assert [q.meta["moving_slice_index"] for q in lgg_pairs(layout, slice=0)] == [0, 0]


def test_adjacent_and_pre_post(layout):
    adj = list(lgg_pairs(layout, "adjacent-slices"))
    assert len(adj) == len(PATIENTS)
    assert adj[0].id == "TCGA_AA_0001_20000101_6:flair->TCGA_AA_0001_20000101_7:flair"
    pp = list(lgg_pairs(layout, "pre-post"))
    assert pp[1].id == "TCGA_BB_0002_20000202_2:t1_pre->TCGA_BB_0002_20000202_2:t1_post"
    assert pp[1].moving[5, 5] == pytest.approx(10 / 255) and pp[1].fixed[5, 5] == pytest.approx(200 / 255)
    assert pp[1].meta["t1_pre_is_flair_copy"] is False
    assert list(lgg_pairs(layout, "consecutive", channel="t1_post"))[0].moving[5, 5] == pytest.approx(200 / 255)


def test_argument_errors_are_raised_eagerly(layout):
    with pytest.raises(ValueError, match="protocol"):
        lgg_pairs(layout, "random")
    with pytest.raises(ValueError, match="channel"):
        lgg_pairs(layout, channel="t2")
    with pytest.raises(ValueError, match="pre-post"):
        lgg_pairs(layout, "pre-post", channel="flair")
    with pytest.raises(ValueError, match="slice"):
        lgg_pairs(layout, slice="top")
    with pytest.raises(ValueError, match="limit"):
        lgg_pairs(layout, limit=-1)
    with pytest.raises(ValueError, match="out of range"):
        load_slice(layout, "TCGA_BB_0002_20000202", 3)
    with pytest.raises(ValueError, match="not found"):
        load_patient(layout, "TCGA_ZZ_9999")
    with pytest.raises(ValueError, match="ambiguous"):
        load_patient(layout, "TCGA_")
    with pytest.raises(ValueError, match="out of range"):
        list(lgg_pairs(layout, slice=5))  # patient BB has 3 slices
    with pytest.raises(ValueError, match="last"):
        list(lgg_pairs(layout, "adjacent-slices", slice=-1))


def test_missing_and_wrong_layouts(tmp_path, layout):
    with pytest.raises(FileNotFoundError, match="not found"):
        find_root(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"kaggle_3m/TCGA_<INST>_<PID>_<YYYYMMDD>/.*_mask\.tif"):
        find_root(tmp_path / "empty")
    with pytest.raises(ValueError, match="single patient folder"):
        find_root(layout / "TCGA_AA_0001_20000101")
    with pytest.raises(ValueError, match="not a folder"):
        find_root(layout / "data.csv")
    with pytest.raises(TypeError, match="root"):
        find_root(42)


def test_corrupt_and_malformed_files(tmp_path):
    root = make_layout(tmp_path, {"TCGA_AA_0001_20000101": 3, "TCGA_BB_0002_20000202": 2,
                                  "TCGA_CC_0003_20000303": 2, "TCGA_DD_0004_20000404": 2})
    bad = root / "TCGA_AA_0001_20000101" / "TCGA_AA_0001_20000101_2.tif"
    bad.write_bytes(b"this is not a tiff at all")
    with pytest.raises(ValueError, match=r"TCGA_AA_0001_20000101_2\.tif.*not a readable TIFF"):
        load_patient(root, "TCGA_AA_0001_20000101")
    grey = root / "TCGA_BB_0002_20000202" / "TCGA_BB_0002_20000202_1.tif"
    tifffile.imwrite(grey, np.zeros((H, W), np.uint8))
    with pytest.raises(ValueError, match=r"_1\.tif.*\(H, W, 3\)"):
        load_slice(root, "TCGA_BB_0002_20000202", 0)
    (root / "TCGA_CC_0003_20000303" / "TCGA_CC_0003_20000303_2_mask.tif").unlink()
    with pytest.raises(ValueError, match=r"no mask file for slice\(s\) \[2\]"):
        load_patient(root, "TCGA_CC_0003_20000303")
    wide = root / "TCGA_DD_0004_20000404" / "TCGA_DD_0004_20000404_2.tif"
    tifffile.imwrite(wide, np.zeros((H, W + 4, 3), np.uint8))
    with pytest.raises(ValueError, match="differs from the other slices"):
        load_patient(root, "TCGA_DD_0004_20000404")


def test_default_root_env(monkeypatch, layout, tmp_path):
    monkeypatch.setenv("DIPREG_LGG_ROOT", str(layout.parent))
    assert default_lgg_root() == layout.resolve()
    monkeypatch.setenv("DIPREG_LGG_ROOT", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="DIPREG_LGG_ROOT"):
        default_lgg_root()


def test_default_root_without_env(monkeypatch, tmp_path):
    """Without the variable: ../shared/data/... beside the repository, else beside the working directory."""
    import dipreg.data.lgg as lgg_module

    monkeypatch.delenv("DIPREG_LGG_ROOT", raising=False)
    repo, work = tmp_path / "clone" / "repo", tmp_path / "elsewhere" / "work"
    repo.mkdir(parents=True)
    work.mkdir(parents=True)
    monkeypatch.setattr(lgg_module, "_repo_root", lambda: repo)
    monkeypatch.chdir(work)
    assert default_lgg_root() is None
    shared = tmp_path / "elsewhere" / "shared" / "data" / "lgg-mri-segmentation" / "kaggle_3m"
    (shared / "TCGA_CS_4941_19960909").mkdir(parents=True)
    assert default_lgg_root() == shared.resolve()  # found from the working directory
    beside_repo = tmp_path / "clone" / "shared" / "data" / "lgg-mri-segmentation" / "kaggle_3m"
    (beside_repo / "TCGA_CS_4942_19970222").mkdir(parents=True)
    assert default_lgg_root() == beside_repo.resolve()  # the repository's neighbour comes first


# --- the real data (6 patients in ../shared/data; skipped where absent) ---------------------------

needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real LGG data not found at {REAL}")


@needs_real
def test_real_data_layout():
    patients = list_patients(REAL)
    assert len(patients) == 6 and patients == sorted(patients)
    assert find_root(REAL.parent) == REAL.resolve()
    vol = load_patient(REAL, patients[0])
    assert vol.images.shape[1:] == (256, 256, 3) and vol.images.dtype == np.uint8
    assert list(vol.slice_numbers) == list(range(1, len(vol) + 1))
    assert vol.masks.any()


@needs_real
def test_development_patients_are_the_shared_ones():
    """The default was chosen on ../shared/data's patients: the constant that splits results must name them."""
    assert tuple(p.rsplit("_", 1)[0] for p in list_patients(REAL)) == DEVELOPMENT_PATIENTS
    assert is_development("TCGA_HT_7686_19950629_11:flair") and not is_development("TCGA_CS_4941_19960909_12:flair")


@needs_real
def test_real_data_pairs_match_reference_numbers():
    from skimage.metrics import structural_similarity

    pairs = list(lgg_pairs(REAL))
    assert len(pairs) == 5
    assert all(p.moving.shape == (256, 256) and 0 <= p.moving.min() and p.moving.max() <= 1 for p in pairs)
    # middle FLAIR slice (index N // 2): mean SSIM before registration 0.493 in the project's notes
    score = np.mean([structural_similarity(p.moving, p.fixed, data_range=1.0) for p in pairs])
    assert score == pytest.approx(0.493, abs=0.002)
    assert len(list(lgg_pairs(REAL, "adjacent-slices"))) == 6
    assert len(list(lgg_pairs(REAL, "pre-post", limit=2))) == 2


# --- download with a fake kagglehub -----------------------------------------------------------------


def fake_kagglehub(tmp_path: Path, with_output_dir: bool) -> types.ModuleType:
    mod = types.ModuleType("kagglehub")
    mod.calls = []

    def build(base: Path) -> Path:
        make_layout(base, {"TCGA_AA_0001_20000101": 2, "TCGA_BB_0002_20000202": 2})
        make_layout(base / "lgg-mri-segmentation", {"TCGA_AA_0001_20000101": 2, "TCGA_BB_0002_20000202": 2})
        return base

    if with_output_dir:
        def dataset_download(handle, path=None, *, force_download=False, output_dir=None):
            mod.calls.append((handle, output_dir))
            return str(build(Path(output_dir) if output_dir else tmp_path / "cache" / "versions" / "2"))
    else:
        def dataset_download(handle, path=None, *, force_download=False):
            mod.calls.append((handle, None))
            base = tmp_path / "cache" / "versions" / "2"
            return str(base if base.exists() else build(base))

    mod.dataset_download = dataset_download
    return mod


def test_download_to_cache(monkeypatch, tmp_path):
    mod = fake_kagglehub(tmp_path, with_output_dir=False)
    monkeypatch.setitem(sys.modules, "kagglehub", mod)
    root = download_lgg()
    assert root == (tmp_path / "cache" / "versions" / "2" / "kaggle_3m").resolve()
    assert mod.calls == [("mateuszbuda/lgg-mri-segmentation", None)]
    assert len(list(lgg_pairs(root))) == 1


def test_download_to_dest_by_copy(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "kagglehub", fake_kagglehub(tmp_path, with_output_dir=False))
    root = download_lgg(tmp_path / "mine")
    assert root == (tmp_path / "mine" / "kaggle_3m").resolve()
    assert list_patients(root) == ["TCGA_AA_0001_20000101", "TCGA_BB_0002_20000202"]


def test_download_to_dest_with_output_dir(monkeypatch, tmp_path):
    mod = fake_kagglehub(tmp_path, with_output_dir=True)
    monkeypatch.setitem(sys.modules, "kagglehub", mod)
    root = download_lgg(tmp_path / "out")
    assert root == (tmp_path / "out" / "kaggle_3m").resolve()
    assert mod.calls == [("mateuszbuda/lgg-mri-segmentation", str(tmp_path / "out"))]


def test_download_without_kagglehub(monkeypatch):
    monkeypatch.setitem(sys.modules, "kagglehub", None)  # makes `import kagglehub` raise ImportError
    with pytest.raises(ImportError, match="pip install kagglehub"):
        download_lgg()
