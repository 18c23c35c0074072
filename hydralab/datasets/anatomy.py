"""Anatomy-like built-in tasks: lesions inserted into the MNI152 brain template that nilearn ships.

* ``pvs``: label = number of small elongated hyperintensities (PVS-like) in the deep grey matter
  (basal ganglia, thalamus) of a T2-like contrast; each scan also gets its region mask (``roi``).
* ``wmh``: label = lesion volume in mm^3 (voxel count of the lesion mask x voxel volume at the
  output spacing) of periventricular and deep white-matter lesions in a FLAIR-like contrast.

Why a template: the blob tasks are textured cubes, hard in ways real scans are not; on real
anatomy the hard part is what it is in a cohort: lesions among look-alike structures (CSF,
ventricles) under per-scan variation. Each scan is the template's tissue maps (grey matter, white
matter, CSF) resampled through a small random affine onto a ``size``-voxel cube covering a fixed
field of view, so ``size`` sets the spacing; then atrophy (ventricle enlargement, grey-matter
loss), a per-scan contrast, lesions, a smooth bias field, an intensity scale and Rician noise.
The template files are read from nilearn's package folder without importing nilearn: nothing is
downloaded, and the 1 mm maps are smoothed and cropped once per (task, size), so a scan costs
a few interpolations of a small grid.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

ANATOMY_TASKS = ("pvs", "wmh")
# Field of view (mm) and its centre in MNI space: the right basal ganglia and thalamus for pvs (one
# hemisphere, as visual PVS ratings score one side); the cerebral white matter around the
# ventricles for wmh. At side 24 the spacing is 2 mm (pvs) and 5 mm (wmh).
FIELD_OF_VIEW = {"pvs": 48.0, "wmh": 120.0}
CENTRE_MM = {"pvs": (20.0, -2.0, 5.0), "wmh": (0.0, -12.0, 18.0)}
MAX_PVS = 20
# Nuisance amplitudes below are the designed, cohort-like level at the spec's default difficulty.
REFERENCE_DIFFICULTY = 2.0
BASE_INTENSITY = 250.0
_OFFSETS = np.indices((3, 3, 3)).reshape(3, -1).T - 1  # a voxel's 26 neighbours and itself


@dataclass(frozen=True)
class AnatomyScan:
    """One scan: image, lesion mask, region mask, label and the record of what varied."""

    image: np.ndarray  # float32, raw positive intensities
    lesions: np.ndarray  # bool, the inserted lesions on the output grid
    region: np.ndarray  # bool, where the task's lesions may lie (deep GM or white matter)
    label: float  # pvs: lesion count; wmh: lesion voxels x voxel volume (mm^3)
    count: int  # lesions inserted
    affine: np.ndarray  # 4x4 voxel -> MNI mm of the output grid (the NIfTI affine)
    transform: np.ndarray  # 4x4, output world mm -> template mm (the per-scan affine)
    bias: np.ndarray  # the multiplicative bias field
    atrophy: float  # 0..1, ventricle enlargement and grey-matter loss


def template_folder() -> Path:
    """nilearn's packaged data folder, found without importing nilearn (heavy, and not needed)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the pvs and wmh tasks need nilearn (pip install nilearn)")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def grid_affine(task: str, size: int) -> np.ndarray:
    """The output voxel-to-MNI-mm affine: isotropic spacing, the cube centred on the task's FOV."""
    spacing = FIELD_OF_VIEW[task] / size
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = np.asarray(CENTRE_MM[task]) - spacing * (size - 1) / 2
    return affine


@dataclass(frozen=True)
class _Template:
    """Smoothed maps cropped around the field of view, block-averaged by ``pool`` (mm per voxel)."""

    maps: np.ndarray  # (5, X, Y, Z): grey matter, white matter, CSF, ventricle distance, region
    origin: np.ndarray  # MNI mm of the crop's voxel (0, 0, 0)
    pool: int


@lru_cache(maxsize=4)
def _template(task: str, size: int) -> _Template:
    """Read, crop and anti-alias the template once per dataset: the per-scan cost is sampling."""
    import nibabel as nib

    folder = template_folder()
    stem = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
    images = {name: nib.load(folder / stem.format(name)) for name in ("t1", "gm", "wm")}
    affine = images["t1"].affine
    spacing = FIELD_OF_VIEW[task] / size
    # Room for the random affine (rotation, shift, head size) and the smoothing kernel.
    reach = FIELD_OF_VIEW[task] * 0.7 + 2 * spacing
    centre = np.asarray(CENTRE_MM[task])
    shape = images["t1"].shape
    lo = np.clip(np.floor(centre - reach - affine[:3, 3]).astype(int), 0, shape)
    hi = np.clip(np.ceil(centre + reach - affine[:3, 3]).astype(int) + 1, 0, shape)
    window = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    t1, gm, wm = (np.asarray(images[n].dataobj[window], dtype=np.float32) / 255.0 for n in images)
    brain = (t1 > 0.15).astype(np.float32)
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    x, y, z = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
    x, y, z = x + affine[0, 3], y + affine[1, 3], z + affine[2, 3]
    ventricles = (csf > 0.5) & (np.abs(x) < 24) & (y > -45) & (y < 32) & (z > -2) & (z < 34)
    labels, _ = ndimage.label(ventricles)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    ventricles = np.isin(labels, np.flatnonzero(sizes > 500))
    deep = (x > 6) & (x < 34) & (y > -18) & (y < 22) & (z > -8) & (z < 18)
    region = (gm > 0.5) & deep if task == "pvs" else (wm > 0.5) & (z > -5)
    # Block-average to about half the output spacing first: 8x less work at wmh's 5 mm.
    pool = max(1, int(spacing // 2))
    maps = np.stack([gm, wm, csf, ventricles, region]).astype(np.float32)
    maps = maps[(slice(None), *(slice(0, n - n % pool) for n in maps.shape[1:]))]
    pooled = maps.reshape(5, *(n for m in maps.shape[1:] for n in (m // pool, pool)))
    maps = pooled.mean(axis=(2, 4, 6))
    maps[3] = ndimage.distance_transform_edt(maps[3] < 0.5) * pool
    sigma = 0.4 * spacing / pool  # an anti-aliasing blur before sampling at the coarse spacing
    maps = np.stack([ndimage.gaussian_filter(m, sigma) for m in maps])
    maps.flags.writeable = False
    return _Template(maps, lo + affine[:3, 3] + (pool - 1) / 2, pool)


def _random_transform(
    rng: np.random.Generator, centre: np.ndarray, spacing: float, k: float
) -> np.ndarray:
    """A small rigid-plus-scale affine about the FOV centre: head pose, position and size."""
    rotation = Rotation.from_euler("xyz", rng.uniform(-4.0, 4.0, 3) * k, degrees=True)
    linear = rotation.as_matrix() * math.exp(rng.uniform(-0.05, 0.05) * k)
    shift = rng.uniform(-1.5, 1.5, 3) * spacing * k
    transform = np.eye(4)
    transform[:3, :3] = linear
    transform[:3, 3] = centre - linear @ centre + shift
    return transform


def _bias_field(rng: np.random.Generator, size: int, k: float) -> np.ndarray:
    """A smooth multiplicative field (exp of a random quadratic), as from coil inhomogeneity."""
    u = np.indices((size,) * 3, dtype=np.float64) / (size - 1) * 2.0 - 1.0
    log_field = np.einsum("i,i...->...", rng.normal(0.0, 0.08 * k, 3), u)
    log_field += np.einsum("ij,i...,j...->...", rng.normal(0.0, 0.05 * k, (3, 3)), u, u)
    return np.exp(log_field)


def _sample(task: str, size: int, transform: np.ndarray) -> np.ndarray:
    """The template's maps on this scan's output grid, through its affine (linear interpolation)."""
    template = _template(task, size)
    affine = grid_affine(task, size)
    voxels = np.indices((size,) * 3, dtype=np.float64).reshape(3, -1)
    world = affine[:3, :3] @ voxels + affine[:3, 3:4]
    where = (
        transform[:3, :3] @ world + transform[:3, 3:4] - template.origin[:, None]
    ) / template.pool
    maps = [
        ndimage.map_coordinates(m, where, order=1, mode="nearest", prefilter=False)
        for m in template.maps
    ]
    return np.stack(maps).reshape(5, size, size, size)


def _segment_voxels(
    rng: np.random.Generator, start: np.ndarray, size: int, spacing: float
) -> np.ndarray:
    """Voxels of one PVS: a 6-14 mm segment, near-vertical as lenticulostriate PVS run."""
    length = rng.uniform(6.0, 14.0) / spacing
    tilt = np.radians(rng.uniform(0.0, 30.0))
    turn = rng.uniform(0.0, 2 * math.pi)
    axis = np.array([math.sin(tilt) * math.cos(turn), math.sin(tilt) * math.sin(turn)])
    axis = np.append(axis, math.cos(tilt))
    steps = np.arange(0.0, length + 1e-9, 0.4)
    points = np.rint(start + steps[:, None] * axis).astype(int)
    inside = np.all((points >= 0) & (points < size), axis=1)
    return np.unique(points[inside], axis=0)


def _insert_pvs(
    rng: np.random.Generator, region: np.ndarray, count: int, spacing: float
) -> tuple[np.ndarray, int]:
    """Up to ``count`` segments inside the region, never touching (26-neighbours).

    So each lesion is one connected component; returns the mask and how many were placed.
    """
    mask = np.zeros(region.shape, dtype=bool)
    blocked = np.zeros(region.shape, dtype=bool)
    candidates = np.argwhere(region)
    placed = 0
    for _ in range(count * 30 if len(candidates) else 0):
        if placed == count:
            break
        start = candidates[rng.integers(len(candidates))] + rng.uniform(-0.5, 0.5, 3)
        points = _segment_voxels(rng, start, region.shape[0], spacing)
        voxels = tuple(points.T)
        if len(points) < 2 or not region[voxels].all() or blocked[voxels].any():
            continue
        mask[voxels] = True
        halo = np.clip((points[:, None, :] + _OFFSETS).reshape(-1, 3), 0, region.shape[0] - 1)
        blocked[tuple(halo.T)] = True
        placed += 1
    return mask, placed


def _insert_wmh(
    rng: np.random.Generator,
    white: np.ndarray,
    wm: np.ndarray,
    distance_mm: np.ndarray,
    spacing: float,
) -> tuple[np.ndarray, int]:
    """Periventricular caps/bands and deep lesions: rotated ellipsoids clipped to the
    cerebral white matter (``white``).

    A per-scan burden scales both the number and the size of lesions, so volumes spread over two
    orders of magnitude as in ageing cohorts.
    """
    burden = rng.beta(0.9, 1.6)
    bands = white & (distance_mm < 8.0)
    deep = white & (distance_mm > 12.0) & (wm > 0.75)
    grid = np.indices(white.shape, dtype=np.float64)
    mask = np.zeros(white.shape, dtype=bool)
    n_caps, n_deep = rng.poisson(1 + 5 * burden), rng.poisson(0.5 + 10 * burden)
    for where, n, radius_mm in (
        (bands, n_caps, (3.0, 6.0 + 14.0 * burden)),
        (deep, n_deep, (2.5, 3.0 + 6.0 * burden)),
    ):
        seeds = np.argwhere(where)
        for _ in range(n if len(seeds) else 0):
            centre = seeds[rng.integers(len(seeds))] + rng.uniform(-0.5, 0.5, 3)
            radii = rng.uniform(*radius_mm, 3) / spacing
            q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
            local = np.einsum("ij,i...->j...", q, grid - centre[:, None, None, None])
            mask |= np.einsum("i...,i...->...", local, local / radii[:, None, None, None] ** 2) <= 1
    mask &= white
    return mask, n_caps + n_deep


def make_anatomy_scan(
    rng: np.random.Generator, task: str, size: int, difficulty: float = REFERENCE_DIFFICULTY
) -> AnatomyScan:
    """One ``pvs`` or ``wmh`` scan; ``difficulty`` scales every nuisance (0: clean, noise-free)."""
    if task not in ANATOMY_TASKS:
        raise ValueError(f"task must be one of {ANATOMY_TASKS}, got {task!r}")
    k = difficulty / REFERENCE_DIFFICULTY
    spacing = FIELD_OF_VIEW[task] / size
    transform = _random_transform(rng, np.asarray(CENTRE_MM[task]), spacing, k)
    gm, wm, csf, distance, region_map = _sample(task, size, transform)
    # Atrophy: ventricles grow by up to 2 voxels and grey matter loses up to 15 %, CSF fills in.
    atrophy = float(rng.beta(1.2, 2.0) * min(k, 1.0))
    distance = distance - atrophy * 2.0 * spacing
    enlarged = np.clip(0.5 - distance / spacing, 0.0, 1.0)
    brain = np.clip(gm + wm + csf, 0.0, 1.0)
    gm = gm * (1.0 - enlarged) * (1.0 - 0.15 * atrophy)
    wm = wm * (1.0 - enlarged)
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    if task == "pvs":
        # T2-like: CSF bright, grey above white. A PVS is fluid: its voxels take CSF's intensity,
        # its neighbours a partial-volume share (a 0.5-voxel blur, scaled so the core is pure).
        contrast = (rng.uniform(0.55, 0.65), rng.uniform(0.38, 0.46), rng.uniform(0.9, 1.0))
        region = (region_map > 0.5) & (gm > 0.4)
        count = int(rng.integers(0, MAX_PVS + 1))
        lesions, count = _insert_pvs(rng, region, count, spacing)
        label = float(count)
        fluid = np.clip(ndimage.gaussian_filter(lesions.astype(np.float64), 0.5) / 0.62, 0, 1)
        gm, wm = gm * (1.0 - fluid), wm * (1.0 - fluid)
        csf = np.clip(csf + fluid * (1.0 - csf), 0.0, 1.0)
        boost = np.zeros_like(gm)
    else:
        # FLAIR-like: CSF dark, grey above white; lesions 90-130 % over white matter, so brighter
        # than grey matter too (as WMH are on FLAIR), with blurred edges:
        # the image sees partial volume, the label the binary mask.
        contrast = (rng.uniform(0.7, 0.8), rng.uniform(0.55, 0.62), rng.uniform(0.12, 0.22))
        region = (region_map > 0.5) & (wm > 0.5)
        lesions, count = _insert_wmh(rng, region, wm, distance, spacing)
        label = float(np.count_nonzero(lesions)) * spacing**3
        boost = ndimage.gaussian_filter(lesions * rng.uniform(0.9, 1.3), 0.5)
    clean = BASE_INTENSITY * (contrast[0] * gm + contrast[1] * wm + contrast[2] * csf + 0.02)
    clean = clean * (1.0 + boost)
    bias = _bias_field(rng, size, k)
    image = clean * bias * math.exp(rng.uniform(-0.25, 0.25) * k)
    sigma = rng.uniform(0.02, 0.04) * BASE_INTENSITY * contrast[1] * k
    # Rician noise: magnitude of a complex signal with Gaussian noise in both channels.
    image = np.hypot(
        image + rng.normal(0.0, sigma, image.shape), rng.normal(0.0, sigma, image.shape)
    )
    return AnatomyScan(
        image.astype(np.float32),
        lesions,
        region,
        label,
        count,
        grid_affine(task, size),
        transform,
        bias,
        atrophy,
    )
