"""Global labels from lesion masks: total lesion volume or number of lesions per scan.

Hydranet needs one additive number per scan. A segmentation mask gives two: the lesion volume
(voxels, or mm³ from the affine) and the lesion count (connected components). Both are
additive over disjoint scans, which is what the set-sum model assumes.

The mask is checked against its image before anything is counted: a mask resampled to another
grid, or shifted, would give a label for a different scan. Components smaller than
``min_size`` voxels are dropped from both labels, so a count and a volume made with the same
settings describe the same lesions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from hydralab.data.nifti import AFFINE_TOLERANCE_MM, READ_ERRORS, DatasetError, check_on_grid

LABEL_KINDS = ("volume", "count")
UNITS = ("voxels", "mm3")
CONNECTIVITY_RANK = {6: 1, 18: 2, 26: 3}
"""Neighbourhood size → ``generate_binary_structure`` rank: faces, + edges, + corners."""

# Masks saved by other tools store non-integer values as float32; allow their rounding error.
INTEGER_TOLERANCE = 1e-3


class MaskError(DatasetError):
    """A mask that cannot give a label; the message names the mask (and its image)."""


@dataclass(frozen=True)
class LabelSpec:
    """How a mask becomes one number.

    ``kind``: ``volume`` (lesion voxels, or mm³ with ``units="mm3"``) or ``count`` (connected
    components). ``values``: the mask values that are lesion (the WMH challenge uses 1 = WMH,
    2 = other pathology, so the default keeps 1 only). ``connectivity``: 6, 18 or 26; 26 is what
    the WMH challenge's lesion-detection metric uses. ``min_size``: components with fewer voxels
    are noise, dropped from both the count and the volume.
    """

    kind: str = "volume"
    units: str = "voxels"
    values: frozenset[int] = field(default_factory=lambda: frozenset({1}))
    connectivity: int = 26
    min_size: int = 1

    def __post_init__(self) -> None:
        if self.kind not in LABEL_KINDS:
            raise ValueError(f"label must be one of {LABEL_KINDS}, got {self.kind!r}")
        if self.units not in UNITS:
            raise ValueError(f"units must be one of {UNITS}, got {self.units!r}")
        if self.kind == "count" and self.units != "voxels":
            raise ValueError("units=mm3 applies to label=volume only; a count has no units")
        if self.connectivity not in CONNECTIVITY_RANK:
            raise ValueError(
                f"connectivity must be one of {tuple(CONNECTIVITY_RANK)}, got {self.connectivity!r}"
            )
        if isinstance(self.min_size, bool) or not isinstance(self.min_size, int):
            raise ValueError(f"min_size must be an integer number of voxels, got {self.min_size!r}")
        if self.min_size < 1:
            raise ValueError(f"min_size must be >= 1 voxel, got {self.min_size}")
        values = frozenset(self.values)
        if not values:
            raise ValueError("mask values must name at least one value, e.g. {1}")
        if any(isinstance(v, bool) or not isinstance(v, int | np.integer) for v in values):
            raise ValueError(f"mask values must be integers, got {sorted(values, key=str)}")
        if 0 in values:
            raise ValueError("mask value 0 is background and cannot be a lesion value")
        object.__setattr__(self, "values", frozenset(int(v) for v in values))

    def describe(self) -> str:
        """One line for the user: what the label column means."""
        values = ",".join(str(v) for v in sorted(self.values))
        if self.kind == "count":
            what = f"lesion count ({self.connectivity}-connected components)"
        else:
            what = f"lesion volume in {'mm³' if self.units == 'mm3' else 'voxels'}"
        small = f", components < {self.min_size} voxels dropped" if self.min_size > 1 else ""
        return f"{what} of mask value(s) {values}{small}"


def parse_mask_values(text: str) -> frozenset[int]:
    """``"1"`` or ``"1,2"`` → ``{1, 2}``; a clear error for anything else."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        values = frozenset(int(item) for item in items)
    except ValueError:
        raise ValueError(
            f"mask values {text!r}: expected integers separated by commas, e.g. 1 or 1,2"
        ) from None
    if not values:
        raise ValueError(f"mask values {text!r}: expected at least one integer, e.g. 1")
    return values


def label_from_array(mask: np.ndarray, spec: LabelSpec, voxel_volume: float = 1.0) -> float:
    """The label of an integer-valued mask array; ``voxel_volume`` (mm³) is used for mm3 only."""
    lesion = np.isin(mask, list(spec.values))
    if spec.kind == "volume" and spec.min_size == 1:
        return _volume(int(np.count_nonzero(lesion)), spec, voxel_volume)
    structure = ndimage.generate_binary_structure(3, CONNECTIVITY_RANK[spec.connectivity])
    components, n = ndimage.label(lesion, structure=structure)
    sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]
    kept = sizes[sizes >= spec.min_size]
    if spec.kind == "count":
        return float(len(kept))
    return _volume(int(kept.sum()), spec, voxel_volume)


def _volume(voxels: int, spec: LabelSpec, voxel_volume: float) -> float:
    return float(voxels) * voxel_volume if spec.units == "mm3" else float(voxels)


def voxel_volume_mm3(affine: np.ndarray) -> float:
    """A voxel's volume from the affine (|det| of its 3x3 part), so shears and flips count.

    Rounded to 1e-9 mm³ so that a 2 mm grid gives 8, not 7.999999999999998, in the CSV.
    """
    return round(float(abs(np.linalg.det(np.asarray(affine, dtype=float)[:3, :3]))), 9)


def mask_label(
    mask_path: Path,
    image_path: Path,
    spec: LabelSpec,
    affine_tolerance: float = AFFINE_TOLERANCE_MM,
) -> float:
    """The label of one mask, checked against its image (see :func:`read_mask`)."""
    mask, voxel_volume = read_mask(mask_path, image_path, affine_tolerance)
    return label_from_array(mask, spec, voxel_volume)


def read_mask(
    mask_path: Path, image_path: Path, affine_tolerance: float = AFFINE_TOLERANCE_MM
) -> tuple[np.ndarray, float]:
    """Read a mask as integers, after checking it lies on its image's grid; also the voxel mm³.

    Raises :class:`MaskError` naming both files when the shapes or affines differ, and naming
    the mask when it is unreadable, not 3D, holds NaN or holds non-integer values (a
    probability map must be thresholded first; which threshold is the user's call). Only the
    image's header is read.
    """
    mask_image = _load(mask_path, "mask")
    image = _load(image_path, "image")
    mask_shape, image_shape = _spatial_shape(mask_image), _spatial_shape(image)
    if mask_shape is None:
        raise MaskError(f"mask {mask_path} has shape {mask_image.shape}; a 3D mask is needed")
    check_on_grid(
        f"mask {mask_path}",
        (mask_shape, mask_image.affine),
        f"its image {image_path}",
        (image_shape or tuple(image.shape), image.affine),
        error=MaskError,
        tolerance=affine_tolerance,
    )
    try:
        data = np.asanyarray(mask_image.dataobj).reshape(mask_shape)
    except READ_ERRORS as error:
        raise MaskError(f"cannot read mask {mask_path}: {error}") from error
    return _as_integers(data, mask_path), voxel_volume_mm3(image.affine)


def _load(path: Path, what: str) -> nib.spatialimages.SpatialImage:
    if not path.is_file():
        raise MaskError(f"{what} not found: {path}")
    try:
        return nib.load(path)
    except READ_ERRORS as error:
        raise MaskError(f"cannot read {what} {path}: {error}") from error


def _spatial_shape(image: nib.spatialimages.SpatialImage) -> tuple[int, ...] | None:
    """The shape without trailing singleton axes beyond the third (NIfTI's (X, Y, Z, 1))."""
    shape = tuple(int(s) for s in image.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape if len(shape) == 3 else None


def _as_integers(data: np.ndarray, mask_path: Path) -> np.ndarray:
    if np.issubdtype(data.dtype, np.integer) or data.dtype == bool:
        return data.astype(np.int64, copy=False)
    if not np.isfinite(data).all():
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise MaskError(f"mask {mask_path} has {bad} NaN or infinite voxels")
    rounded = np.rint(data)
    off = np.abs(data - rounded) > INTEGER_TOLERANCE
    if off.any():
        example = float(data[off].flat[0])
        raise MaskError(
            f"mask {mask_path} has non-integer values (e.g. {example:.4g}); a label mask holds "
            "integers: threshold a probability map first"
        )
    return rounded.astype(np.int64)
