"""Dataset-file rules shared by writers and readers: names, duplicates, the voxel-grid check."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torchio as tio

from hydralab.data.nifti import (
    AFFINE_TOLERANCE_MM,
    DatasetError,
    check_on_grid,
    first_duplicate,
    is_nifti,
    nifti_stem,
)
from hydralab.data.scans import load_scan
from hydralab.data.table import ScanRecord
from hydralab.datasets.mask_labels import LabelSpec, MaskError, mask_label


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("s01.nii.gz", "s01"),
        ("s01.nii", "s01"),
        ("sub-01.ses-1.nii.gz", "sub-01.ses-1"),
        ("scan.mha", "scan"),  # not NIfTI: the last extension goes, as Path.stem does
        ("noext", "noext"),
    ],
)
def test_nifti_stem(name: str, stem: str) -> None:
    assert nifti_stem(name) == stem


def test_nifti_stem_takes_the_first_matching_suffix() -> None:
    suffixes = ("_FLAIR.nii.gz", "_FLAIR.nii")
    assert nifti_stem("sub-01_FLAIR.nii.gz", suffixes) == "sub-01"
    assert nifti_stem("sub-01_FLAIR.nii", suffixes) == "sub-01"


def test_is_nifti() -> None:
    assert is_nifti("a.nii") and is_nifti("a.nii.gz")
    assert not is_nifti("a.gz") and not is_nifti("a.nii.bak") and not is_nifti("nii")


def test_first_duplicate_gives_both_positions() -> None:
    assert first_duplicate([]) is None
    assert first_duplicate(["a", "b", "c"]) is None
    assert first_duplicate(["a", "b", "c", "b", "a"]) == (1, 3)
    assert first_duplicate(iter([Path("x"), Path("y"), Path("x")])) == (0, 2)


def _affine(origin: float = 0.0, shift: float = 0.0) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, 3] = origin
    affine[0, 3] += shift
    return affine


def test_grid_check_names_both_files_and_raises_the_callers_error() -> None:
    grid = ((8, 8, 8), _affine())
    check_on_grid("mask m.nii", grid, "image i.nii", grid)
    with pytest.raises(MaskError, match=r"mask m.nii has shape \(8, 8, 9\) but image i.nii has"):
        check_on_grid("mask m.nii", ((8, 8, 9), _affine()), "image i.nii", grid, error=MaskError)
    with pytest.raises(DatasetError, match="mask m.nii and image i.nii have different affines"):
        check_on_grid("mask m.nii", ((8, 8, 8), _affine(shift=0.5)), "image i.nii", grid)


@pytest.mark.parametrize("origin", [0.0, 200.0])
def test_grid_tolerance_is_absolute_in_mm(origin: float) -> None:
    """The same shift passes or fails wherever the scan's origin lies (a relative tolerance
    would let a 2e-3 mm shift through at 200 mm from the scanner centre only)."""
    image = ((8, 8, 8), _affine(origin))
    near = ((8, 8, 8), _affine(origin, shift=AFFINE_TOLERANCE_MM / 2))
    far = ((8, 8, 8), _affine(origin, shift=2 * AFFINE_TOLERANCE_MM))
    check_on_grid("mask", near, "image", image)
    with pytest.raises(DatasetError, match=f"> {AFFINE_TOLERANCE_MM} mm"):
        check_on_grid("mask", far, "image", image)
    check_on_grid("mask", far, "image", image, tolerance=4 * AFFINE_TOLERANCE_MM)


def _save(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


@pytest.mark.parametrize(("shift", "ok"), [(AFFINE_TOLERANCE_MM / 2, True), (0.002, False)])
def test_lesion_masks_and_region_masks_share_one_tolerance(
    tmp_path: Path, shift: float, ok: bool
) -> None:
    """make-table's lesion masks and the region crop's masks accept and refuse the same shifts."""
    array = np.zeros((8, 8, 8), np.float32)
    array[2:5, 2:5, 2:5] = 1
    image = _save(tmp_path / "image.nii.gz", array + 1, _affine(200.0))
    mask = _save(tmp_path / "mask.nii.gz", array.astype(np.uint8), _affine(200.0, shift))
    record = ScanRecord("s", image, 1.0, "train", roi=mask)
    if ok:
        assert mask_label(mask, image, LabelSpec()) == 27.0
        load_scan(record, tio.Compose([]), roi=True)
        return
    with pytest.raises(MaskError, match="different affines"):
        mask_label(mask, image, LabelSpec())
    with pytest.raises(
        DatasetError, match="region mask .*mask.nii.gz and scan .* different affines"
    ):
        load_scan(record, tio.Compose([]), roi=True)
