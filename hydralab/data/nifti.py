"""What the dataset writers (:mod:`hydralab.datasets`) and the training input chain share.

Both sides meet at the dataset CSV and its NIfTI files, so the rules of those files live here
once: the error type, the split names, how a NIfTI file is named and read, when a mask lies on
its image's voxel grid, and how a repeated subject is found. This module imports neither side
(only numpy and nibabel), so preparing a dataset never pulls in torch or Lightning.
"""

from __future__ import annotations

import zlib
from collections.abc import Hashable, Iterable, Sequence
from pathlib import PurePath

import nibabel as nib
import numpy as np

SPLITS = ("train", "val", "test")
NIFTI_SUFFIXES = (".nii.gz", ".nii")  # longest first: "a.nii.gz" must not stop at ".gz"

AFFINE_TOLERANCE_MM = 1e-3
"""Largest difference (mm, per affine entry) between a mask's and its image's affine.

One absolute tolerance for every mask (lesion masks and region masks used to differ: the region
check also allowed 1e-5 of each entry's size). An absolute one is right for a grid: a relative
one grows with the origin's distance from the scanner centre, so the same 0.1 mm shift would
pass for one scan and fail for another. 1e-3 mm is far above float32 rounding in headers and
far below any real misregistration."""

READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes gzip.BadGzipFile: a truncated or corrupt .nii.gz
    EOFError,
    zlib.error,
    RuntimeError,
    ValueError,
    nib.filebasedimages.ImageFileError,
)
"""What nibabel (and TorchIO through it) raise on a missing, corrupt or foreign file; callers turn
these into a :class:`DatasetError` naming the file."""


class DatasetError(ValueError):
    """A dataset CSV or one of its scans cannot be used; the message names the culprit."""


def is_nifti(name: str) -> bool:
    """Whether a file name ends in ``.nii`` or ``.nii.gz``."""
    return name.endswith(NIFTI_SUFFIXES)


def nifti_stem(name: str, suffixes: Sequence[str] = NIFTI_SUFFIXES) -> str:
    """The file name without the first of ``suffixes`` it ends in (``s01.nii.gz`` -> ``s01``).

    A name with none of them loses its last extension only, as ``Path.stem`` does.
    """
    for suffix in suffixes:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return PurePath(name).stem


def first_duplicate(keys: Iterable[Hashable]) -> tuple[int, int] | None:
    """The positions of the first key seen twice (first and second occurrence), or None.

    A subject (or a scan) listed twice could land in both train and test; every check of
    uniqueness goes through here and words its own error.
    """
    seen: dict[Hashable, int] = {}
    for position, key in enumerate(keys):
        if key in seen:
            return seen[key], position
        seen[key] = position
    return None


def check_on_grid(
    mask: str,
    mask_grid: tuple[Sequence[int], np.ndarray],
    image: str,
    image_grid: tuple[Sequence[int], np.ndarray],
    *,
    error: type[DatasetError] = DatasetError,
    tolerance: float = AFFINE_TOLERANCE_MM,
) -> None:
    """Raise ``error`` unless the mask's (spatial shape, affine) equals the image's.

    ``mask`` and ``image`` describe the files in the message (``"region mask roi/s1.nii.gz"``,
    ``"scan images/s1.nii.gz"``). A mask on another grid would label or crop the wrong voxels.
    """
    mask_shape, mask_affine = tuple(int(s) for s in mask_grid[0]), np.asarray(mask_grid[1])
    image_shape, image_affine = tuple(int(s) for s in image_grid[0]), np.asarray(image_grid[1])
    if mask_shape != image_shape:
        raise error(
            f"{mask} has shape {mask_shape} but {image} has {image_shape}; the mask must be on "
            "the image's voxel grid"
        )
    if not np.allclose(mask_affine, image_affine, rtol=0.0, atol=tolerance):
        difference = float(np.abs(mask_affine - image_affine).max())
        raise error(
            f"{mask} and {image} have different affines (voxel-to-world maps; largest "
            f"difference {difference:.4g} mm > {tolerance} mm); the mask must be on the image's "
            f"voxel grid.\nmask affine:\n{np.round(mask_affine, 4)}\nimage affine:\n"
            f"{np.round(image_affine, 4)}"
        )
