"""The anatomy-like tasks: determinism, labels equal to the inserted lesions, per-scan variation,
region masks that cover the lesions, offline template loading, and files the data module reads."""

from __future__ import annotations

import csv
import socket
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from hydralab.datasets import anatomy
from hydralab.datasets.anatomy import MAX_PVS, make_anatomy_scan
from hydralab.datasets.synthetic import CSV_COLUMNS, SyntheticSpec, make_dataset, subject_rng

SIZE = 24  # the designed size: at 16 (3 mm) the pvs region fits fewer than 20 PVS
NEIGHBOURS_26 = np.ones((3, 3, 3), dtype=bool)


def scans(task: str, n: int, seed: int = 0) -> list[anatomy.AnatomyScan]:
    return [make_anatomy_scan(subject_rng(seed, task, i), task, SIZE) for i in range(n)]


@pytest.fixture(scope="module")
def pvs() -> list[anatomy.AnatomyScan]:
    return scans("pvs", 40)


@pytest.fixture(scope="module")
def wmh() -> list[anatomy.AnatomyScan]:
    return scans("wmh", 40)


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    with csv_path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("task", ["pvs", "wmh"])
def test_same_seed_same_scan_other_seed_other_scan(task: str) -> None:
    first, again = (make_anatomy_scan(subject_rng(5, task, 2), task, SIZE) for _ in range(2))
    other = make_anatomy_scan(subject_rng(6, task, 2), task, SIZE)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.lesions, again.lesions)
    assert first.label == again.label
    assert not np.allclose(first.image, other.image)


def test_pvs_label_is_the_number_of_separate_lesions(pvs: list[anatomy.AnatomyScan]) -> None:
    for scan in pvs:
        _, components = ndimage.label(scan.lesions, NEIGHBOURS_26)
        assert scan.label == scan.count == components
    labels = [scan.label for scan in pvs]
    # Spread over the whole range, so a count model has something to learn at every level.
    assert min(labels) <= 2 and max(labels) >= 15 and max(labels) <= MAX_PVS


def test_wmh_label_is_the_lesion_volume_in_mm3(wmh: list[anatomy.AnatomyScan]) -> None:
    voxel_mm3 = (anatomy.FIELD_OF_VIEW["wmh"] / SIZE) ** 3
    for scan in wmh:
        assert scan.label == pytest.approx(np.count_nonzero(scan.lesions) * voxel_mm3)
    volumes = np.array([scan.label for scan in wmh])
    # Varied sizes: volumes spread over at least an order of magnitude, some scans lesion-free.
    positive = volumes[volumes > 0]
    assert positive.max() / positive.min() >= 10 and (volumes == 0).any()


@pytest.mark.parametrize("fixture", ["pvs", "wmh"])
def test_region_covers_the_lesions_and_lesions_are_hyperintense(fixture: str, request) -> None:
    for scan in request.getfixturevalue(fixture):
        assert scan.region.any()
        assert not (scan.lesions & ~scan.region).any()
    with_lesions = [s for s in request.getfixturevalue(fixture) if s.lesions.sum() >= 3]
    brighter = [
        s.image[s.lesions].mean() > s.image[s.region & ~s.lesions].mean() for s in with_lesions
    ]
    assert np.mean(brighter) > 0.8


def test_scans_vary_as_a_cohort_does(pvs: list[anatomy.AnatomyScan]) -> None:
    first, second = pvs[0], pvs[1]
    assert not np.allclose(first.transform, second.transform)
    assert not np.allclose(first.bias, second.bias)
    assert first.atrophy != second.atrophy
    # The pose is small: rotation within a few degrees, shift within two output voxels.
    for scan in pvs:
        linear = scan.transform[:3, :3]
        assert np.allclose(linear @ linear.T / np.cbrt(np.linalg.det(linear)) ** 2, np.eye(3))
    # The region moves with the pose: region masks differ between scans.
    assert not np.array_equal(first.region, second.region)


def test_difficulty_zero_is_clean() -> None:
    scan = make_anatomy_scan(subject_rng(0, "wmh", 0), "wmh", SIZE, difficulty=0.0)
    np.testing.assert_allclose(scan.transform, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(scan.bias, 1.0)
    assert scan.atrophy == 0.0


def test_the_template_loads_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the template must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    anatomy._template.cache_clear()
    scan = make_anatomy_scan(subject_rng(0, "pvs", 0), "pvs", SIZE)
    assert scan.image.shape == (SIZE,) * 3 and scan.image.dtype == np.float32
    assert anatomy.template_folder().is_dir()


def test_generating_a_scan_imports_neither_nilearn_nor_torch() -> None:
    code = (
        "import sys\n"
        "from hydralab.datasets.anatomy import make_anatomy_scan\n"
        "import numpy as np\n"
        "make_anatomy_scan(np.random.default_rng(0), 'pvs', 12)\n"
        "loaded = [m for m in ('nilearn', 'sklearn', 'torch') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_dataset_files_match_the_labels_and_load_through_the_data_module(tmp_path: Path) -> None:
    from hydralab.data.datamodule import HydraDataModule
    from hydralab.data.table import read_table

    spec = SyntheticSpec("pvs", n_train=4, n_val=2, n_test=2, size=SIZE, seed=1)
    csv_path = make_dataset(spec, tmp_path / "pvs")
    with csv_path.open(newline="") as handle:
        assert next(csv.reader(handle)) == [*CSV_COLUMNS, "roi"]
    rows = read_rows(csv_path)
    assert [row["split"] for row in rows] == ["train"] * 4 + ["val"] * 2 + ["test"] * 2
    for row in rows:
        image = nib.load(csv_path.parent / row["image"])
        region = nib.load(csv_path.parent / row["roi"])
        lesions = np.asanyarray(nib.load(csv_path.parent / "masks" / Path(row["roi"]).name).dataobj)
        np.testing.assert_array_equal(image.affine, anatomy.grid_affine("pvs", SIZE))
        np.testing.assert_array_equal(region.affine, image.affine)
        assert float(row["label"]) == ndimage.label(lesions, NEIGHBOURS_26)[1]
        assert not (lesions.astype(bool) & ~np.asanyarray(region.dataobj).astype(bool)).any()
    records = read_table(csv_path)
    assert all(record.roi is not None and record.roi.is_file() for record in records)
    module = HydraDataModule(csv=str(csv_path), shape=(12, 12, 12), crop_centre="region")
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert tuple(batch["images"].shape[-3:]) == (12, 12, 12)
    # The same spec gives the same files.
    again = make_dataset(spec, tmp_path / "again")
    assert again.read_text() == csv_path.read_text()


def test_wmh_dataset_volume_label_from_the_saved_mask(tmp_path: Path) -> None:
    spec = SyntheticSpec("wmh", n_train=3, n_val=1, n_test=1, size=SIZE, seed=2)
    csv_path = make_dataset(spec, tmp_path)
    for row in read_rows(csv_path):
        mask = nib.load(csv_path.parent / "masks" / Path(row["image"]).name)
        voxel_mm3 = float(np.prod(mask.header.get_zooms()))
        assert float(row["label"]) == pytest.approx(np.count_nonzero(mask.dataobj) * voxel_mm3)
