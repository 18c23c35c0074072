"""Labels from lesion masks: volume and count, values, connectivity, min size, grid checks."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from hydralab.data.nifti import DatasetError
from hydralab.datasets.mask_labels import (
    LabelSpec,
    MaskError,
    label_from_array,
    mask_label,
    parse_mask_values,
    voxel_volume_mm3,
)


def _save(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
    return path


def _two_lesions() -> np.ndarray:
    """A 2x2x2 cube (8 voxels) and a separate 1-voxel lesion; one voxel of value 2."""
    mask = np.zeros((8, 8, 8), dtype=np.uint8)
    mask[1:3, 1:3, 1:3] = 1
    mask[6, 6, 6] = 1
    mask[4, 0, 7] = 2
    return mask


def test_volume_counts_voxels_of_value_1_only():
    assert label_from_array(_two_lesions(), LabelSpec("volume")) == 9.0
    assert label_from_array(_two_lesions(), LabelSpec("volume", values=frozenset({1, 2}))) == 10.0
    assert label_from_array(_two_lesions(), LabelSpec("volume", values=frozenset({2}))) == 1.0


def test_count_is_connected_components():
    assert label_from_array(_two_lesions(), LabelSpec("count")) == 2.0
    assert label_from_array(_two_lesions(), LabelSpec("count", values=frozenset({1, 2}))) == 3.0
    assert label_from_array(np.zeros((8, 8, 8), dtype=np.uint8), LabelSpec("count")) == 0.0


@pytest.mark.parametrize(
    ("connectivity", "expected"),
    [(6, 3.0), (18, 2.0), (26, 1.0)],
)
def test_connectivity_decides_whether_diagonal_neighbours_are_one_lesion(connectivity, expected):
    mask = np.zeros((8, 8, 8), dtype=np.uint8)
    mask[2, 2, 2] = 1
    mask[3, 3, 2] = 1  # shares an edge with the first: joined at 18 and 26
    mask[4, 4, 3] = 1  # shares only a corner with the second: joined at 26 only
    assert label_from_array(mask, LabelSpec("count", connectivity=connectivity)) == expected


def test_min_size_drops_small_components_from_count_and_volume():
    spec_count = LabelSpec("count", min_size=2)
    spec_volume = LabelSpec("volume", min_size=2)
    assert label_from_array(_two_lesions(), spec_count) == 1.0
    assert label_from_array(_two_lesions(), spec_volume) == 8.0
    # Dropping by size depends on connectivity: two corner-touching voxels are one lesion of 2.
    mask = np.zeros((8, 8, 8), dtype=np.uint8)
    mask[2, 2, 2] = mask[3, 3, 3] = 1
    assert label_from_array(mask, LabelSpec("volume", min_size=2, connectivity=26)) == 2.0
    assert label_from_array(mask, LabelSpec("volume", min_size=2, connectivity=6)) == 0.0


def test_volume_in_mm3_uses_the_affines_voxel_volume(tmp_path: Path):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    mask = _save(tmp_path / "mask.nii.gz", _two_lesions(), affine)
    image = _save(tmp_path / "image.nii.gz", np.ones((8, 8, 8), np.float32), affine)
    assert mask_label(mask, image, LabelSpec("volume")) == 9.0
    assert mask_label(mask, image, LabelSpec("volume", units="mm3")) == 72.0


def test_voxel_volume_ignores_flips_and_counts_shears():
    assert voxel_volume_mm3(np.diag([-1.0, 2.0, 3.0, 1.0])) == pytest.approx(6.0)
    rotation = np.eye(4)
    rotation[:2, :2] = [[0.0, -1.5], [1.5, 0.0]]
    assert voxel_volume_mm3(rotation) == pytest.approx(2.25)


def test_float_masks_with_integer_values_are_read(tmp_path: Path):
    mask = _save(tmp_path / "mask.nii.gz", _two_lesions().astype(np.float32))
    image = _save(tmp_path / "image.nii.gz", np.ones((8, 8, 8), np.float32))
    assert mask_label(mask, image, LabelSpec("count")) == 2.0


def test_shape_mismatch_names_both_files(tmp_path: Path):
    mask = _save(tmp_path / "mask.nii.gz", _two_lesions())
    image = _save(tmp_path / "image.nii.gz", np.ones((8, 8, 9), np.float32))
    with pytest.raises(MaskError, match=r"mask\.nii\.gz.*shape.*image\.nii\.gz"):
        mask_label(mask, image, LabelSpec())


def test_affine_mismatch_names_both_files_and_respects_the_tolerance(tmp_path: Path):
    shifted = np.eye(4)
    shifted[0, 3] = 0.5
    mask = _save(tmp_path / "mask.nii.gz", _two_lesions(), shifted)
    image = _save(tmp_path / "image.nii.gz", np.ones((8, 8, 8), np.float32))
    with pytest.raises(MaskError, match=r"mask\.nii\.gz and its image .*image\.nii\.gz"):
        mask_label(mask, image, LabelSpec())
    assert mask_label(mask, image, LabelSpec(), affine_tolerance=0.6) == 9.0
    # float32 rounding in a header is below the default tolerance.
    nearly = np.eye(4)
    nearly[0, 3] = 1e-5
    _save(mask, _two_lesions(), nearly)
    assert mask_label(mask, image, LabelSpec()) == 9.0


def test_nan_in_mask_is_an_error_naming_the_mask(tmp_path: Path):
    array = _two_lesions().astype(np.float32)
    array[0, 0, 0] = np.nan
    mask = _save(tmp_path / "mask.nii.gz", array)
    image = _save(tmp_path / "image.nii.gz", np.ones((8, 8, 8), np.float32))
    with pytest.raises(MaskError, match=r"mask .*mask\.nii\.gz has 1 NaN"):
        mask_label(mask, image, LabelSpec())


def test_probability_map_is_an_error_not_a_silent_rounding(tmp_path: Path):
    array = _two_lesions().astype(np.float32) * 0.7
    mask = _save(tmp_path / "mask.nii.gz", array)
    image = _save(tmp_path / "image.nii.gz", np.ones((8, 8, 8), np.float32))
    with pytest.raises(MaskError, match=r"mask\.nii\.gz has non-integer values.*threshold"):
        mask_label(mask, image, LabelSpec())


def test_4d_mask_and_missing_files_are_errors(tmp_path: Path):
    image = _save(tmp_path / "image.nii.gz", np.ones((8, 8, 8), np.float32))
    mask = _save(tmp_path / "mask.nii.gz", np.zeros((8, 8, 8, 2), np.uint8))
    with pytest.raises(MaskError, match=r"mask .*mask\.nii\.gz has shape \(8, 8, 8, 2\)"):
        mask_label(mask, image, LabelSpec())
    # A trailing singleton axis is still a 3D mask.
    _save(mask, _two_lesions()[..., None])
    assert mask_label(mask, image, LabelSpec()) == 9.0
    with pytest.raises(DatasetError, match=r"mask not found: .*absent\.nii\.gz"):
        mask_label(tmp_path / "absent.nii.gz", image, LabelSpec())
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(MaskError, match=r"cannot read mask .*broken\.nii\.gz"):
        mask_label(tmp_path / "broken.nii.gz", image, LabelSpec())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "area"}, "label must be one of"),
        ({"units": "ml"}, "units must be one of"),
        ({"kind": "count", "units": "mm3"}, "applies to label=volume only"),
        ({"connectivity": 8}, "connectivity must be one of"),
        ({"min_size": 0}, "min_size must be >= 1"),
        ({"values": frozenset()}, "at least one value"),
        ({"values": frozenset({0, 1})}, "0 is background"),
    ],
)
def test_label_spec_rejects_what_it_cannot_compute(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LabelSpec(**kwargs)


def test_parse_mask_values():
    assert parse_mask_values("1") == {1}
    assert parse_mask_values(" 1, 2 ,") == {1, 2}
    with pytest.raises(ValueError, match="integers separated by commas"):
        parse_mask_values("1;2")
    with pytest.raises(ValueError, match="at least one integer"):
        parse_mask_values(" , ")
