"""TorchIO transforms: preprocessing applied once per scan, augmentation applied every epoch.

The scans of these studies are few and small, so preprocessing (resampling, cropping, intensity
normalisation) runs once at load time and only the cheap random augmentation runs per sample.

Two region-of-interest recipes reach a fixed shape: the WMH one crops around the intensity-weighted
centre of mass (``CentreOfMassCropOrPad``); the PVS one multiplies the scan by a smoothed region
mask (``RegionMask``), crops to the region's bounding box (``CropToRegion``), then crops/pads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torchio as tio
from scipy.ndimage import gaussian_filter

Normalization = Literal["minmax", "percentile", "zscore", "none"]
CropCentre = Literal["mass", "image", "region"]
NORMALIZATIONS: tuple[str, ...] = ("minmax", "percentile", "zscore", "none")
CROP_CENTRES: tuple[str, ...] = ("mass", "image", "region")
ROI_KEY = "roi"  # the tio.LabelMap holding a scan's region mask in a tio.Subject


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


def _region(subject: tio.Subject, key: str) -> tio.Image:
    if key not in subject:
        raise ValueError(
            f"the subject has no region mask {key!r}: add a tio.LabelMap named {key!r} "
            "(data: an 'roi' column in the dataset CSV)"
        )
    mask = subject[key]
    if not (mask.data > 0).any():
        raise ValueError(f"region mask {mask.path or key!r} is empty: nothing to crop around")
    return mask


class RegionMask(tio.IntensityTransform):
    """Multiply the scans by their region mask smoothed with a Gaussian (PVS recipe).

    Outside the region the lesions are not counted, so the regressor must not see them; a hard
    0/1 edge would add a sharp artificial contour, hence the smoothing (``sigma`` in voxels,
    0 for a hard mask). The mask itself (a label map) is left unchanged.
    """

    def __init__(self, sigma: float = 2.0, roi: str = ROI_KEY, **kwargs) -> None:
        super().__init__(**kwargs)
        if not sigma >= 0:
            raise ValueError(f"roi_sigma must be >= 0 voxels, got {sigma}")
        self.sigma = float(sigma)
        self.roi = roi
        self.args_names = ["sigma", "roi"]

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        mask = _region(subject, self.roi)
        weights = (mask.data[0] > 0).numpy().astype(np.float64)
        if self.sigma > 0:
            # "nearest": a region that touches the border keeps full weight there.
            weights = gaussian_filter(weights, self.sigma, mode="nearest")
        weights = torch.from_numpy(weights)
        for image in self.get_images(subject):
            if image.data.shape[1:] != weights.shape:
                raise ValueError(
                    f"region mask {mask.path or self.roi!r} has shape {tuple(weights.shape)} but "
                    f"scan {image.path or 'image'} has {tuple(image.data.shape[1:])}"
                )
            image.set_data((image.data * weights).to(image.data.dtype))
        return subject


class CropToRegion(tio.SpatialTransform):
    """Crop every image of the subject to the region's bounding box plus ``margin`` voxels (PVS).

    The margin keeps the smoothed fringe of ``RegionMask`` (about 2 sigma) and a little context;
    the box is clipped at the scan's border. Boxes differ from scan to scan, so a crop/pad to a
    fixed shape must follow.
    """

    def __init__(self, margin: int | Sequence[int] = 4, roi: str = ROI_KEY, **kwargs) -> None:
        super().__init__(**kwargs)
        self.margin = _three_ints(margin, "roi_margin")
        self.roi = roi
        self.args_names = ["margin", "roi"]

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        inside = _region(subject, self.roi).data[0] > 0
        voxels = inside.nonzero()
        low, high = voxels.min(dim=0).values, voxels.max(dim=0).values
        crop = []
        for size, lo, hi, margin in zip(inside.shape, low, high, self.margin, strict=True):
            start, stop = max(0, int(lo) - margin), min(size, int(hi) + 1 + margin)
            crop += [start, size - stop]
        return tio.Crop(crop)(subject)


class MatchShape(tio.SpatialTransform):
    """Crop or pad to ``shape`` only the scans that differ from it (prediction on new scans).

    A model trained without ``data.shape`` saw its scans whole; new scans of another size are
    brought to the training shape around ``centre`` while scans already of that shape are left
    exactly as training left them (a centre-of-mass crop would still shift them).
    """

    def __init__(self, shape: Sequence[int], centre: CropCentre = "mass", **kwargs) -> None:
        super().__init__(**kwargs)
        self.shape = _three_ints(shape, "shape")
        if centre not in ("mass", "image"):
            raise ValueError(f"MatchShape centres on 'mass' or 'image', got {centre!r}")
        self.centre = centre
        self.args_names = ["shape", "centre"]

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        if tuple(subject.spatial_shape) == self.shape:
            return subject
        if self.centre == "mass":
            return CentreOfMassCropOrPad(self.shape)(subject)
        return tio.CropOrPad(self.shape)(subject)


def _three_ints(value: int | Sequence[int], name: str) -> tuple[int, int, int]:
    values = [value] * 3 if isinstance(value, int) else list(value)
    if len(values) != 3 or any(not isinstance(v, int) or v < 0 for v in values):
        raise ValueError(f"{name} must be an integer >= 0 or three of them, got {value!r}")
    return tuple(values)


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
    *,
    roi_sigma: float | None = 2.0,
    roi_margin: int | Sequence[int] = 4,
    match_shape: Sequence[int] | None = None,
) -> tio.Compose:
    """The load-time pipeline: optional resampling, optional crop/pad, intensity normalisation.

    ``crop_centre`` picks how ``shape`` is reached: ``mass`` (WMH recipe), ``image`` (the image
    centre) or ``region`` (PVS recipe: mask by the ``roi`` label map smoothed with ``roi_sigma``
    voxels, or not at all if None, crop to its bounding box plus ``roi_margin``, then centre
    crop/pad). ``match_shape`` brings scans of another size to the training shape when no
    ``shape`` is set (prediction). Normalisation runs last, on the voxels the model will see.
    """
    if crop_centre not in CROP_CENTRES:
        raise ValueError(f"crop_centre must be one of {CROP_CENTRES}, got {crop_centre!r}")
    steps: list[tio.Transform] = []
    if spacing is not None:
        steps.append(tio.Resample(spacing))
    if crop_centre == "region":
        if shape is None:
            raise ValueError(
                "crop_centre='region' needs data.shape: region boxes differ from scan to scan, "
                "and scans batched together must share one shape"
            )
        if roi_sigma is not None:
            steps.append(RegionMask(roi_sigma))
        steps.append(CropToRegion(roi_margin))
        steps.append(tio.CropOrPad(tuple(shape)))
    elif shape is not None:
        if crop_centre == "mass":
            steps.append(CentreOfMassCropOrPad(shape))
        else:
            steps.append(tio.CropOrPad(tuple(shape)))
    elif match_shape is not None:
        steps.append(MatchShape(match_shape, crop_centre))
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
