"""The synthetic datasets: file layout, determinism, exact labels, and the realism they promise."""

from __future__ import annotations

import csv
import math
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from hydralab.datasets.synthetic import CSV_COLUMNS, SyntheticSpec, make_dataset, max_blobs

SIZE = 16
BLOBS = SyntheticSpec("blobs", n_train=30, n_val=10, n_test=20, size=SIZE, seed=3)
LESIONS = SyntheticSpec("lesions", n_train=20, n_val=5, n_test=5, size=SIZE, seed=3)


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    with csv_path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def load(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(path).dataobj)


@pytest.fixture(scope="module")
def blobs_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(BLOBS, tmp_path_factory.mktemp("blobs"))


@pytest.fixture(scope="module")
def lesions_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(LESIONS, tmp_path_factory.mktemp("lesions"))


def test_csv_has_the_columns_splits_and_counts(blobs_csv: Path) -> None:
    with blobs_csv.open(newline="") as handle:
        assert next(csv.reader(handle)) == list(CSV_COLUMNS)
    rows = read_rows(blobs_csv)
    splits = [row["split"] for row in rows]
    assert splits == ["train"] * 30 + ["val"] * 10 + ["test"] * 20
    assert len({row["subject"] for row in rows}) == len(rows)
    for row in rows:
        assert row["image"] == f"images/{row['subject']}.nii.gz"
        assert (blobs_csv.parent / row["image"]).is_file()


@pytest.mark.parametrize("csv_fixture", ["blobs_csv", "lesions_csv"])
def test_images_are_3d_float32_identity_affine(csv_fixture: str, request) -> None:
    csv_path: Path = request.getfixturevalue(csv_fixture)
    for row in read_rows(csv_path):
        image = nib.load(csv_path.parent / row["image"])
        assert image.get_data_dtype() == np.float32
        assert image.shape == (SIZE, SIZE, SIZE)
        np.testing.assert_array_equal(image.affine, np.eye(4))
        data = np.asanyarray(image.dataobj)
        assert data.dtype == np.float32
        assert np.all(np.isfinite(data)) and data.min() > 0


def test_same_seed_gives_identical_data_and_another_seed_does_not(tmp_path: Path) -> None:
    spec = SyntheticSpec("lesions", n_train=2, n_val=1, n_test=1, size=SIZE, seed=11)
    first = make_dataset(spec, tmp_path / "a")
    second = make_dataset(spec, tmp_path / "b")
    other = make_dataset(replace(spec, seed=12), tmp_path / "c")
    assert first.read_bytes() == second.read_bytes()
    for row in read_rows(first):
        for folder in ("images", "masks"):
            name = f"{folder}/{row['subject']}.nii.gz"
            np.testing.assert_array_equal(load(first.parent / name), load(second.parent / name))
    subject = read_rows(first)[0]["image"]
    assert not np.array_equal(load(first.parent / subject), load(other.parent / subject))


def test_a_scan_does_not_depend_on_the_split_counts(tmp_path: Path) -> None:
    small = SyntheticSpec("blobs", n_train=1, n_val=1, n_test=1, size=SIZE)
    small_csv = make_dataset(small, tmp_path / "small")
    large_csv = make_dataset(replace(small, n_train=3, n_test=2), tmp_path / "large")
    name = "images/blobs_0001.nii.gz"
    np.testing.assert_array_equal(load(small_csv.parent / name), load(large_csv.parent / name))


def test_blob_labels_are_spread_out_counts(blobs_csv: Path) -> None:
    labels = np.array([float(row["label"]) for row in read_rows(blobs_csv)])
    assert np.all(labels >= 0) and np.all(labels == np.round(labels))
    assert labels.max() <= max_blobs(SIZE)
    assert len(np.unique(labels[:40])) >= 5


def test_max_blob_count_scales_with_the_volume() -> None:
    assert max_blobs(20) == 20
    assert max_blobs(16) == 10
    assert max_blobs(40) == 160


def test_minmax_rescaling_leaks_the_blob_count(blobs_csv: Path) -> None:
    """The shortcut real data has: more blobs, brighter maximum, darker rescaled mean."""
    rows = read_rows(blobs_csv)
    labels = np.array([float(row["label"]) for row in rows])
    means = []
    for row in rows:
        image = load(blobs_csv.parent / row["image"]).astype(np.float64)
        means.append(((image - image.min()) / (image.max() - image.min())).mean())
    assert np.corrcoef(means, labels)[0, 1] < 0


def test_lesion_label_is_the_mask_voxel_count(lesions_csv: Path) -> None:
    rows = read_rows(lesions_csv)
    labels = []
    for row in rows:
        mask_image = nib.load(lesions_csv.parent / "masks" / f"{row['subject']}.nii.gz")
        assert mask_image.get_data_dtype() == np.uint8
        mask = np.asanyarray(mask_image.dataobj)
        assert set(np.unique(mask)) <= {0, 1}
        assert float(row["label"]) == np.count_nonzero(mask)
        labels.append(float(row["label"]))
    assert min(labels) < 20 and max(labels) > 60 and len(set(labels)) >= 10


def test_lesions_are_brighter_than_the_tissue_around_them(lesions_csv: Path) -> None:
    brighter = []
    for row in read_rows(lesions_csv):
        mask = load(lesions_csv.parent / "masks" / f"{row['subject']}.nii.gz").astype(bool)
        if mask.sum() < 5:
            continue
        image = load(lesions_csv.parent / row["image"])
        shell = ndimage.binary_dilation(mask, iterations=2) & ~mask
        brighter.append(image[mask].mean() > image[shell].mean())
    assert len(brighter) >= 10
    assert all(brighter)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("task", "cells"),
        ("n_train", 0),
        ("n_val", -1),
        ("n_test", 1.5),
        ("size", 8),
        ("seed", -1),
        ("difficulty", -0.5),
        ("difficulty", math.nan),
    ],
)
def test_bad_spec_raises_naming_the_field(tmp_path: Path, field: str, value: object) -> None:
    spec = replace(
        SyntheticSpec("blobs", n_train=1, n_val=1, n_test=1, size=SIZE), **{field: value}
    )
    with pytest.raises(ValueError, match=field):
        make_dataset(spec, tmp_path)
    assert not (tmp_path / "dataset.csv").exists()


def test_defaults_give_large_validation_and_test_splits() -> None:
    """A verdict needs a tight test interval: 500 test and 50 validation scans by default, the
    same in ``hydralab make-data`` (30 training scans, the largest N of the learning curve)."""
    from hydralab.cli import _parser

    spec = SyntheticSpec("blobs")
    assert (spec.n_train, spec.n_val, spec.n_test) == (30, 50, 500)
    args = _parser().parse_args(["make-data", "blobs", "out"])
    assert (args.n_train, args.n_val, args.n_test) == (spec.n_train, spec.n_val, spec.n_test)
