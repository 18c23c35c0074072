"""TorchIO transforms: preprocessing applied once per scan, augmentation applied every epoch.

The scans of these studies are few and small, so preprocessing (resampling, cropping, intensity
normalisation) runs once at load time and only the cheap random augmentation runs per sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torchio as tio

Normalization = Literal["minmax", "percentile", "zscore", "none"]
CropCentre = Literal["mass", "image"]
NORMALIZATIONS: tuple[str, ...] = ("minmax", "percentile", "zscore", "none")


class CentreOfMassCropOrPad(tio.SpatialTransform):
    """Crop or pad to ``shape`` around the intensity-weighted centre of mass (WMH recipe).

    Centring on the image centre wastes the fixed field of view when the head is off-centre; the
    centre of mass of the (background-subtracted) intensities follows the anatomy instead.
    """

    def __init__(self, shape: Sequence[int], **kwargs) -> None:
        super().__init__(**kwargs)
        self.shape = tuple(int(s) for s in shape)
        self.args_names = ["shape"]

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        reference = next(iter(subject.get_images(intensity_only=True)))
        volume = reference.data[0].double()
        weights = volume - volume.min()
        total = weights.sum()
        grids = torch.meshgrid(
            *(torch.arange(n, dtype=torch.float64) for n in volume.shape), indexing="ij"
        )
        if total > 0:
            centre = [float((g * weights).sum() / total) for g in grids]
        else:
            centre = [(n - 1) / 2 for n in volume.shape]
        pad, crop = [], []
        for size, target, c in zip(volume.shape, self.shape, centre, strict=True):
            start = round(c - (target - 1) / 2)
            before, after = max(0, -start), max(0, start + target - size)
            pad += [before, after]
            start += before
            crop += [start, size + before + after - start - target]
        return tio.Crop(crop)(tio.Pad(pad)(subject))


def intensity_normalization(
    kind: Normalization, percentiles: tuple[float, float] = (0.5, 99.5)
) -> tio.Transform | None:
    """Map raw intensities to a common scale.

    ``minmax`` is the paper's [0, 1] rescaling, but the brightest lesion sets its scale, so the mean
    intensity falls as the lesion load rises (a shortcut a regressor can learn). ``percentile``
    clips to robust percentiles first; ``zscore`` standardises to mean 0 and sd 1.
    """
    if kind == "minmax":
        return tio.RescaleIntensity(out_min_max=(0, 1))
    if kind == "percentile":
        return tio.RescaleIntensity(out_min_max=(0, 1), percentiles=percentiles)
    if kind == "zscore":
        return tio.ZNormalization()
    if kind == "none":
        return None
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {kind!r}")


def preprocessing(
    normalization: Normalization = "minmax",
    spacing: float | Sequence[float] | None = None,
    shape: Sequence[int] | None = None,
    crop_centre: CropCentre = "mass",
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> tio.Compose:
    """The load-time pipeline: optional resampling, optional crop/pad, intensity normalisation."""
    steps: list[tio.Transform] = []
    if spacing is not None:
        steps.append(tio.Resample(spacing))
    if shape is not None:
        if crop_centre == "mass":
            steps.append(CentreOfMassCropOrPad(shape))
        elif crop_centre == "image":
            steps.append(tio.CropOrPad(tuple(shape)))
        else:
            raise ValueError(f"crop_centre must be 'mass' or 'image', got {crop_centre!r}")
    normalize = intensity_normalization(normalization, percentiles)
    if normalize is not None:
        steps.append(normalize)
    return tio.Compose(steps)


def augmentation(
    flip_axes: Sequence[int] = (0, 1, 2),
    rotation: float = 0.2,
    translation: float = 2.0,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> tio.Compose:
    """The per-sample training augmentation of the paper: flips, small rotations and shifts.

    ``rotation`` is in radians and ``translation`` in voxels (TorchIO takes degrees and mm, hence
    the conversion with the scans' spacing). No scaling: a lesion volume must not change.
    """
    steps: list[tio.Transform] = []
    if flip_axes:
        steps.append(tio.RandomFlip(axes=tuple(flip_axes), flip_probability=0.5))
    if rotation > 0 or translation > 0:
        shift = [float(translation * s) for s in spacing]
        steps.append(
            tio.RandomAffine(
                scales=0,
                degrees=math.degrees(rotation),
                translation=tuple(v for s in shift for v in (-s, s)),
                default_pad_value="minimum",
            )
        )
    return tio.Compose(steps)


def voxel_spacing(image: tio.ScalarImage) -> tuple[float, float, float]:
    """The voxel size in mm as plain floats."""
    return tuple(float(s) for s in np.asarray(image.spacing))
