"""Dataset CSVs from scan/mask folders: WMH challenge, BIDS-like and flat layouts."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from hydralab.data.nifti import DatasetError
from hydralab.data.table import read_table
from hydralab.datasets.layouts import LayoutError, find_pairs, make_table
from hydralab.datasets.mask_labels import LabelSpec, MaskError
from hydralab.datasets.synthetic import SyntheticSpec, make_dataset

SHAPE = (8, 8, 8)


def _write(path: Path, array: np.ndarray, spacing: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([spacing] * 3 + [1.0])), path)
    return path


def _mask(lesions: int, extra_value_2: bool = False) -> np.ndarray:
    """``lesions`` separate 2-voxel lesions (value 1), and optionally a 3-voxel value-2 region."""
    mask = np.zeros(SHAPE, dtype=np.uint8)
    for i in range(lesions):
        mask[2 * i, 0, 0:2] = 1
    if extra_value_2:
        mask[7, 5:8, 7] = 2
    return mask


def _pair(image: Path, mask: Path, lesions: int, spacing: float = 1.0, **kwargs) -> None:
    _write(image, np.full(SHAPE, 100.0, np.float32), spacing)
    _write(mask, _mask(lesions, **kwargs), spacing)


def _wmh_tree(root: Path) -> Path:
    """The challenge's training layout, with a deeper Amsterdam/GE3T site and an orig/ folder."""
    for site, lesions in (("Utrecht/0", 1), ("Utrecht/2", 3), ("Amsterdam/GE3T/100", 0)):
        folder = root / site
        _pair(folder / "pre" / "FLAIR.nii.gz", folder / "wmh.nii.gz", lesions, extra_value_2=True)
        _write(folder / "pre" / "T1.nii.gz", np.ones(SHAPE, np.float32))
        _write(folder / "orig" / "FLAIR.nii.gz", np.ones((9, 9, 9), np.float32))
    return root


def _rows(csv_path: Path) -> list[dict[str, str]]:
    with csv_path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# --- WMH challenge ---------------------------------------------------------------------------


def test_wmh_challenge_table_is_read_back_by_read_table(tmp_path: Path):
    root = _wmh_tree(tmp_path / "training")
    out, n = make_table("wmh-challenge", root, root / "dataset.csv")
    assert n == 3
    rows = _rows(out)
    assert list(rows[0]) == ["subject", "image", "label", "mask"]
    assert [r["subject"] for r in rows] == ["Amsterdam_GE3T_100", "Utrecht_0", "Utrecht_2"]
    assert [r["image"] for r in rows] == [
        "Amsterdam/GE3T/100/pre/FLAIR.nii.gz",
        "Utrecht/0/pre/FLAIR.nii.gz",
        "Utrecht/2/pre/FLAIR.nii.gz",
    ]
    assert rows[1]["mask"] == "Utrecht/0/wmh.nii.gz"
    # Value 2 (other pathology) is ignored: 2 voxels per lesion of value 1.
    records = read_table(out)
    assert {r.subject: r.label for r in records} == {
        "Amsterdam_GE3T_100": 0.0,
        "Utrecht_0": 2.0,
        "Utrecht_2": 6.0,
    }
    assert all(r.image.is_file() for r in records)
    assert records[1].image == root / "Utrecht" / "0" / "pre" / "FLAIR.nii.gz"


def test_wmh_challenge_count_mm3_and_value_2(tmp_path: Path):
    root = tmp_path / "training"
    _pair(root / "Utrecht/0/pre/FLAIR.nii.gz", root / "Utrecht/0/wmh.nii.gz", 3, spacing=2.0)
    _pair(
        root / "Singapore/50/pre/FLAIR.nii.gz",
        root / "Singapore/50/wmh.nii.gz",
        1,
        extra_value_2=True,
    )
    labels = {}
    for name, spec in {
        "count": LabelSpec("count"),
        "mm3": LabelSpec("volume", units="mm3"),
        "with2": LabelSpec("volume", values=frozenset({1, 2})),
    }.items():
        out, _ = make_table("wmh-challenge", root, tmp_path / f"{name}.csv", spec)
        labels[name] = {r.subject: r.label for r in read_table(out)}
    assert labels["count"] == {"Singapore_50": 1.0, "Utrecht_0": 3.0}
    assert labels["mm3"] == {"Singapore_50": 2.0, "Utrecht_0": 48.0}  # 6 voxels of 8 mm³
    assert labels["with2"] == {"Singapore_50": 5.0, "Utrecht_0": 6.0}


def test_csv_outside_the_tree_gets_paths_relative_to_itself(tmp_path: Path):
    root = _wmh_tree(tmp_path / "data" / "training")
    out, _ = make_table("wmh-challenge", root, tmp_path / "tables" / "wmh.csv")
    assert _rows(out)[0]["image"] == "../data/training/Amsterdam/GE3T/100/pre/FLAIR.nii.gz"
    assert all(record.image.is_file() for record in read_table(out))


def test_wmh_challenge_missing_mask_names_the_expected_path(tmp_path: Path):
    root = _wmh_tree(tmp_path / "training")
    (root / "Utrecht/2/wmh.nii.gz").unlink()
    with pytest.raises(
        LayoutError, match=r"Utrecht/2/pre/FLAIR\.nii\.gz has no mask.*Utrecht/2/wmh"
    ):
        find_pairs("wmh-challenge", root)


def test_wmh_challenge_mask_without_image_is_an_error(tmp_path: Path):
    root = _wmh_tree(tmp_path / "training")
    (root / "Utrecht/2/pre/FLAIR.nii.gz").unlink()
    with pytest.raises(LayoutError, match=r"mask .*Utrecht/2/wmh\.nii\.gz has no image"):
        find_pairs("wmh-challenge", root)


def test_wmh_challenge_duplicate_subject_names_both_images(tmp_path: Path):
    root = tmp_path / "training"
    for site in ("Utrecht_0/x", "Utrecht/0_x"):  # both join to Utrecht_0_x
        _pair(root / site / "pre/FLAIR.nii.gz", root / site / "wmh.nii.gz", 1)
    with pytest.raises(LayoutError, match=r"'Utrecht_0_x' appears twice: .*FLAIR.* and .*FLAIR"):
        find_pairs("wmh-challenge", root)


def test_empty_or_absent_trees_are_errors(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError, match=r"no pre/FLAIR\.nii\.gz found under .*empty"):
        find_pairs("wmh-challenge", tmp_path / "empty")
    with pytest.raises(LayoutError, match=r"dataset folder not found: .*absent"):
        find_pairs("flat", tmp_path / "absent")
    with pytest.raises(LayoutError, match="layout must be one of"):
        find_pairs("nnunet", tmp_path / "empty")


def test_mask_on_another_grid_stops_the_table_naming_both_files(tmp_path: Path):
    root = _wmh_tree(tmp_path / "training")
    _write(root / "Utrecht/0/wmh.nii.gz", np.zeros((8, 8, 7), np.uint8))
    with pytest.raises(MaskError, match=r"Utrecht/0/wmh\.nii\.gz.*Utrecht/0/pre/FLAIR\.nii\.gz"):
        make_table("wmh-challenge", root, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_masks_without_the_chosen_values_are_an_error(tmp_path: Path):
    root = tmp_path / "flat"
    for name in ("a", "b"):
        _write(root / "images" / f"{name}.nii.gz", np.ones(SHAPE, np.float32))
        _write(root / "masks" / f"{name}.nii.gz", _mask(2).astype(np.uint8) * 255)
    with pytest.raises(LayoutError, match=r"value\(s\) 1.*found: 255 \(set --mask-values\)"):
        make_table("flat", root, root / "dataset.csv")
    out, _ = make_table("flat", root, root / "dataset.csv", LabelSpec(values=frozenset({255})))
    assert [r.label for r in read_table(out)] == [4.0, 4.0]


# --- BIDS ------------------------------------------------------------------------------------


def _bids_tree(root: Path) -> Path:
    manual = root / "derivatives" / "manual"
    _pair(
        root / "sub-01/anat/sub-01_FLAIR.nii.gz",
        manual / "sub-01/anat/sub-01_label-WMH_mask.nii.gz",
        1,
    )
    for session, lesions in (("ses-1", 2), ("ses-2", 3)):
        entities = f"sub-02_{session}"
        _pair(
            root / f"sub-02/{session}/anat/{entities}_FLAIR.nii.gz",
            manual / f"sub-02/{session}/anat/{entities}_label-WMH_mask.nii.gz",
            lesions,
        )
    # Other contrasts and other masks must not be picked up.
    _write(root / "sub-01/anat/sub-01_T1w.nii.gz", np.ones(SHAPE, np.float32))
    _write(manual / "sub-01/anat/sub-01_label-brain_mask.nii.gz", np.ones(SHAPE, np.uint8))
    (root / "dataset_description.json").write_text("{}")
    return root


def test_bids_table_with_sessions(tmp_path: Path):
    root = _bids_tree(tmp_path / "bids")
    out, n = make_table("bids", root, root / "dataset.csv", LabelSpec("count"))
    assert n == 3
    rows = _rows(out)
    assert [r["subject"] for r in rows] == ["sub-01", "sub-02_ses-1", "sub-02_ses-2"]
    assert rows[1]["mask"] == (
        "derivatives/manual/sub-02/ses-1/anat/sub-02_ses-1_label-WMH_mask.nii.gz"
    )
    assert [r.label for r in read_table(out)] == [1.0, 2.0, 3.0]


def test_bids_suffix_pattern_and_pipeline_options(tmp_path: Path):
    root = _bids_tree(tmp_path / "bids")
    # A second pipeline makes the default ambiguous.
    other = root / "derivatives" / "auto" / "sub-01/anat"
    _write(other / "sub-01_T1w_desc-lesion_mask.nii.gz", _mask(2))
    with pytest.raises(LayoutError, match=r"several pipelines \(auto, manual\).*--pipeline"):
        find_pairs("bids", root)
    assert len(find_pairs("bids", root, {"pipeline": "manual"})) == 3
    pairs = find_pairs(
        "bids",
        root,
        {"pipeline": "auto", "image_suffix": "_T1w", "mask_pattern": "{entities}_*_mask.nii.gz"},
    )
    assert [(p.subject, p.mask.name) for p in pairs] == [
        ("sub-01", "sub-01_T1w_desc-lesion_mask.nii.gz")
    ]


def test_bids_errors_name_the_path(tmp_path: Path):
    root = _bids_tree(tmp_path / "bids")
    mask = root / "derivatives/manual/sub-02/ses-2/anat/sub-02_ses-2_label-WMH_mask.nii.gz"
    mask.unlink()
    with pytest.raises(LayoutError, match=r"sub-02_ses-2_FLAIR\.nii\.gz has no mask: expected .*"):
        find_pairs("bids", root)
    _write(mask, _mask(1))
    with pytest.raises(LayoutError, match=r"sub-01_FLAIR\.nii\.gz matches 2 masks"):
        find_pairs("bids", root, {"mask_pattern": "{entities}_*_mask.nii.gz"})
    with pytest.raises(LayoutError, match=r"must contain \{entities\}"):
        find_pairs("bids", root, {"mask_pattern": "mask.nii.gz"})
    with pytest.raises(LayoutError, match=r"mask folder not found: .*derivatives/nope"):
        find_pairs("bids", root, {"pipeline": "nope"})
    with pytest.raises(LayoutError, match=r"no sub-\*/\[ses-\*/\]anat/\*_PD\.nii"):
        find_pairs("bids", root, {"image_suffix": "_PD"})


def test_bids_without_derivatives_is_an_error(tmp_path: Path):
    root = tmp_path / "bids"
    _write(root / "sub-01/anat/sub-01_FLAIR.nii.gz", np.ones(SHAPE, np.float32))
    with pytest.raises(LayoutError, match=r"expected derivatives/<pipeline>/ in .*bids"):
        find_pairs("bids", root)


def test_bids_nii_beside_nii_gz_is_a_duplicate_subject(tmp_path: Path):
    root = _bids_tree(tmp_path / "bids")
    _write(root / "sub-01/anat/sub-01_FLAIR.nii", np.ones(SHAPE, np.float32))
    with pytest.raises(LayoutError, match=r"subject 'sub-01' appears twice"):
        find_pairs("bids", root)


# --- flat ------------------------------------------------------------------------------------


def test_flat_layout_reproduces_make_data_lesion_labels(tmp_path: Path):
    spec = SyntheticSpec("lesions", n_train=2, n_val=1, n_test=1, size=12, seed=3)
    data = make_dataset(spec, tmp_path / "lesions")
    out, n = make_table("flat", data.parent, tmp_path / "table.csv")
    assert n == 4
    expected = {r.subject: r.label for r in read_table(data)}
    assert {r.subject: r.label for r in read_table(out)} == expected
    assert sum(expected.values()) > 0  # the comparison is not between all-zero labels


def test_flat_folder_options(tmp_path: Path):
    root = tmp_path / "flat"
    _pair(root / "scans" / "p1.nii", root / "labels" / "p1.nii", 2)
    pairs = find_pairs("flat", root, {"images_dir": "scans", "masks_dir": "labels"})
    assert [(p.subject, p.image.name, p.mask.parent.name) for p in pairs] == [
        ("p1", "p1.nii", "labels")
    ]
    with pytest.raises(LayoutError, match=r"folder not found: .*flat/images \(set --images-dir\)"):
        find_pairs("flat", root)


def test_flat_errors_name_the_path(tmp_path: Path):
    root = tmp_path / "flat"
    _pair(root / "images" / "a.nii.gz", root / "masks" / "a.nii.gz", 1)
    _write(root / "images" / "b.nii.gz", np.ones(SHAPE, np.float32))
    with pytest.raises(LayoutError, match=r"images/b\.nii\.gz has no mask: expected .*masks/b"):
        find_pairs("flat", root)
    (root / "images" / "b.nii.gz").unlink()
    _write(root / "masks" / "b.nii", _mask(1))
    with pytest.raises(LayoutError, match=r"mask .*masks/b\.nii has no image"):
        find_pairs("flat", root)
    _write(root / "images" / "b.nii", np.ones(SHAPE, np.float32))
    _pair(root / "images" / "b.nii.gz", root / "masks" / "b.nii.gz", 1)
    with pytest.raises(LayoutError, match=r"subject 'b' appears twice"):
        find_pairs("flat", root)
    (tmp_path / "bare" / "images").mkdir(parents=True)
    (tmp_path / "bare" / "masks").mkdir()
    with pytest.raises(LayoutError, match=r"no NIfTI files .* in .*bare/images"):
        find_pairs("flat", tmp_path / "bare")


def test_an_option_of_another_layout_is_an_error(tmp_path: Path):
    root = _wmh_tree(tmp_path / "training")
    with pytest.raises(LayoutError, match=r"--images-dir does not apply to --layout wmh-challenge"):
        find_pairs("wmh-challenge", root, {"images_dir": "x"})


def test_layout_errors_are_dataset_errors():
    assert issubclass(LayoutError, DatasetError)
    assert issubclass(MaskError, DatasetError)
