"""Scans in memory and the set dataset that turns sampler tuples into model batches.

Each scan is read with TorchIO and preprocessed once; what stays in memory is a (1, D, H, W)
float tensor. Only the per-epoch augmentation runs when a sample is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torchio as tio
from torch.utils.data import Dataset

from hydralab.data.nifti import READ_ERRORS, DatasetError, check_on_grid, is_nifti, nifti_stem
from hydralab.data.sampler import ZERO_SLOT
from hydralab.data.table import ScanRecord
from hydralab.data.transforms import ROI_KEY


@dataclass(frozen=True)
class LoadedScan:
    """A preprocessed scan held in memory."""

    record: ScanRecord
    data: torch.Tensor  # (1, D, H, W) float32
    affine: torch.Tensor  # 4 x 4, after preprocessing
    spacing: tuple[float, float, float]


def read_nifti(path: Path) -> tuple[torch.Tensor, np.ndarray]:
    """Read a NIfTI as TorchIO's (C, W, H, D) tensor with nibabel.

    TorchIO's default SimpleITK reader silently turns NaN voxels into 0; nibabel keeps them, so
    a corrupt scan is caught instead of trained on.
    """
    image = nib.load(path)
    check_volume_shape(tuple(image.shape))
    data = image.get_fdata(dtype=np.float32)
    if data.ndim == 5 and data.shape[3] == 1:  # NIfTI keeps time as the 4th axis
        data = data[:, :, :, 0, :]
    data = data[np.newaxis] if data.ndim == 3 else np.moveaxis(data, -1, 0)
    return torch.from_numpy(np.ascontiguousarray(data)), image.affine


class NotAVolume(DatasetError):
    """A NIfTI whose shape is not one 3D volume; :func:`_read_volume` adds the file's name."""


def check_volume_shape(shape: tuple[int, ...]) -> None:
    """Refuse a file shape that is not one 3D volume, before TorchIO pads it to one.

    TorchIO turns a 2D image (x, y) into (1, x, y, 1), which ``data.shape`` then pads into a
    3D scan that trains without a word; a single slice (x, y, 1) is the same 2D image. Extra
    axes of size 1 are fine: (x, y, z, 1) is the 3D scan it holds.
    """
    spatial, extra = shape[:3], shape[3:]
    if len(spatial) < 3 or min(spatial) < 2:
        raise NotAVolume(
            f"has shape {shape}: a 2D image (or a single slice); hydralab needs a 3D volume "
            "(data.shape does not make one)"
        )
    volumes = int(np.prod(extra)) if extra else 1
    if volumes != 1:
        raise NotAVolume(
            f"has {volumes} volumes (a 4D image, shape {shape}); hydralab needs one 3D volume"
        )


def _read_volume(path: Path, image_class: type[tio.Image], what: str, subject: str) -> tio.Image:
    """Read one NIfTI and check it is a finite 3D volume; ``what`` and the subject name it."""
    try:
        image = image_class(path, reader=read_nifti)
        image.load()
    except NotAVolume as error:
        raise DatasetError(f"{what} {path} (subject {subject!r}) {error}") from None
    except READ_ERRORS as error:
        raise DatasetError(f"cannot read {what} {path} (subject {subject!r}): {error}") from error
    data = image.data
    if data.numel() == 0:
        raise DatasetError(f"{what} {path} is empty (shape {tuple(data.shape[1:])})")
    if not torch.isfinite(data).all():
        raise DatasetError(f"{what} {path} contains NaN or infinite voxels")
    return image


def load_region(record: ScanRecord, image: tio.ScalarImage) -> tio.LabelMap:
    """Read the scan's region mask and check it lies on the scan's voxel grid.

    The mask multiplies and crops the scan voxel by voxel, so a mask of another shape or affine
    (e.g. drawn on another scan, or not yet registered) would silently select the wrong voxels.
    """
    roi = record.roi
    if roi is None:
        raise DatasetError(
            f"subject {record.subject!r} ({record.image}) has no region mask: "
            "data.crop_centre='region' needs an 'roi' column in the dataset CSV, filled on "
            "every row"
        )
    if not roi.is_file():
        raise DatasetError(f"region mask of subject {record.subject!r} not found: {roi}")
    mask = _read_volume(roi, tio.LabelMap, "region mask", record.subject)
    check_on_grid(
        f"region mask {roi}",
        (mask.shape[1:], mask.affine),
        f"scan {record.image}",
        (image.shape[1:], image.affine),
    )
    if not (mask.data > 0).any():
        raise DatasetError(
            f"region mask {roi} (subject {record.subject!r}) is empty: nothing to crop around"
        )
    return mask


def load_scan(record: ScanRecord, preprocess: tio.Transform, roi: bool = False) -> LoadedScan:
    """Read one NIfTI, check it is a usable 3D scan, and preprocess it; errors name the file.

    With ``roi``, the record's region mask joins the subject as the label map ``roi`` that the
    region transforms (``RegionMask``, ``CropToRegion``) read; only the scan is kept.
    """
    path = record.image
    if not path.is_file():
        raise DatasetError(f"scan of subject {record.subject!r} not found: {path}")
    image = _read_volume(path, tio.ScalarImage, "scan", record.subject)
    # TorchIO's min-max and percentile rescaling only warn on a constant scan (without naming
    # the file) and keep it as it is: all zeros would then pass for Hydranet's empty slot.
    low, high = float(image.data.min()), float(image.data.max())
    if low == high:
        value = "all zeros" if low == 0 else f"every voxel is {low:g}"
        raise DatasetError(
            f"scan {path} (subject {record.subject!r}) is constant ({value}) and cannot be "
            "normalised: an empty or failed export?"
        )
    images: dict[str, tio.Image] = {"image": image}
    if roi:
        images[ROI_KEY] = load_region(record, image)
    try:
        subject = preprocess(tio.Subject(**images))
    except DatasetError:
        raise
    except (RuntimeError, ValueError) as error:
        # e.g. z-score on a scan constant inside its region: TorchIO's own error, made a
        # DatasetError so the command line prints it without a traceback.
        raise DatasetError(
            f"cannot preprocess scan {path} (subject {record.subject!r}): {error}"
        ) from error
    out = subject["image"]
    return LoadedScan(
        record=record,
        data=out.data.float().contiguous(),
        affine=torch.as_tensor(out.affine),
        spacing=tuple(float(s) for s in out.spacing),
    )


def check_same_shape(scans: Sequence[LoadedScan]) -> tuple[int, int, int]:
    """Scans batched together must share one shape; say which scan differs and what to set."""
    shape = tuple(scans[0].data.shape[1:])
    for scan in scans[1:]:
        if tuple(scan.data.shape[1:]) != shape:
            raise DatasetError(
                f"scan {scan.record.image} has shape {tuple(scan.data.shape[1:])} but "
                f"{scans[0].record.image} has {shape}; set data.shape to crop/pad all scans "
                "to one shape"
            )
    return shape


class SetDataset(Dataset):
    """Map a tuple of scan indices (``ZERO_SLOT`` for empty slots) to one virtual sample.

    Returns ``images`` (K, 1, D, H, W), per-slot ``labels`` (K,) and ``zero`` flags (K,), the
    ``set_label`` (their sum) and the scan ``index`` per slot (-1 for zero slots). Zero slots are
    all-zero images with label 0; the augmentation applies only to real scans.
    """

    def __init__(self, scans: Sequence[LoadedScan], augment: tio.Transform | None = None) -> None:
        if not scans:
            raise DatasetError("a set dataset needs at least one scan")
        self.scans = list(scans)
        self.augment = augment
        self.shape = check_same_shape(self.scans)

    def __len__(self) -> int:
        return len(self.scans)

    def image(self, index: int) -> torch.Tensor:
        scan = self.scans[index]
        if self.augment is None:
            return scan.data
        image = tio.ScalarImage(tensor=scan.data, affine=scan.affine)
        return self.augment(tio.Subject(image=image))["image"].data.float()

    def __getitem__(self, slots: int | Sequence[int]) -> dict[str, torch.Tensor]:
        slots = (slots,) if isinstance(slots, int) else tuple(slots)
        zero = torch.tensor([i == ZERO_SLOT for i in slots])
        images = torch.zeros((len(slots), 1, *self.shape))
        labels = torch.zeros(len(slots))
        for slot, index in enumerate(slots):
            if index != ZERO_SLOT:
                images[slot] = self.image(index)
                labels[slot] = self.scans[index].record.label
        return {
            "images": images,
            "labels": labels,
            "zero": zero,
            "set_label": labels.sum(),
            "index": torch.tensor(slots, dtype=torch.long),
        }


def discover_images(folder: Path) -> list[ScanRecord]:
    """All NIfTI files of a folder as unlabelled records (label NaN), for prediction."""
    paths = sorted(p for p in folder.iterdir() if is_nifti(p.name))
    if not paths:
        raise DatasetError(f"no NIfTI files (*.nii, *.nii.gz) in {folder}")
    names = [nifti_stem(p.name) for p in paths]
    return [ScanRecord(n, p, float("nan"), None) for n, p in zip(names, paths, strict=True)]
