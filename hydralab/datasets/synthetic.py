"""Built-in synthetic 3D datasets with one global label per scan, hard in the ways real scans are.

Each writes NIfTI volumes and a ``dataset.csv``. ``blobs``: label = number of bright blobs (the
paper's Figure 1, in 3D). ``lesions``: label = lesion volume in voxels, the voxel count of the
saved ``masks/<subject>.nii.gz``. ``pvs`` / ``wmh``: lesion count / volume (mm^3) on the MNI152
brain template (:mod:`hydralab.datasets.anatomy`, spacing ``FIELD_OF_VIEW / size`` mm).

``blobs`` and ``lesions`` (1 mm, identity affine) share an ellipsoidal "anatomy" whose size,
position and contrast vary, so a model cannot count bright voxels blindly; smooth texture, a bias
field, a per-scan intensity scale and offset, and noise. Intensities are saved raw (background
roughly 100-300): the brightest blob usually sets the maximum, so per-scan min-max rescaling leaks
the label, as on real data. ``difficulty`` scales every nuisance; 0 gives clean scans. Each scan
has its own generator seeded by (seed, task, index): the same spec always gives the same data.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from hydralab.data.nifti import SPLITS
from hydralab.datasets.anatomy import ANATOMY_TASKS, make_anatomy_scan

# Appended, never reordered: the index seeds each scan's generator (subject_rng).
TASKS = ("blobs", "lesions", *ANATOMY_TASKS)
CSV_COLUMNS = ("subject", "image", "label", "split")
MIN_SIZE = 12
# Largest blob count at the reference cube side; it scales with the volume.
MAX_BLOBS_AT_20 = 20
REFERENCE_SIZE = 20
MAX_LESIONS = 8


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate: the task, how many scans per split, the cube side, seed and difficulty."""

    task: str
    n_train: int = 30
    # Scans are cheap here, so val and test are large: a verdict rests on the test ICC, and its
    # confidence interval narrows as 1/sqrt(n_test); a noisy validation ICC misleads model choice.
    n_val: int = 50
    n_test: int = 500
    # 16^3 and difficulty 2: at 20^3 and difficulty 1 the baseline reached ICC 0.9 from 12 scans,
    # far above real data (the paper's 0.68); difficulty 2 brings it to ~0.5 (docs/method.md).
    size: int = 16
    seed: int = 0
    difficulty: float = 2.0

    def validate(self) -> None:
        """Raise ValueError naming the first field that cannot produce a dataset."""
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        for name in ("n_train", "n_val", "n_test"):
            _require_int(name, getattr(self, name), minimum=1)
        _require_int("size", self.size, minimum=MIN_SIZE)
        _require_int("seed", self.seed, minimum=0)
        difficulty = self.difficulty
        if (
            isinstance(difficulty, bool)
            or not isinstance(difficulty, int | float)
            or not math.isfinite(difficulty)
            or difficulty < 0
        ):
            raise ValueError(f"difficulty must be a finite number >= 0, got {difficulty!r}")


def _require_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def make_dataset(spec: SyntheticSpec, out_dir: str | Path) -> Path:
    """Write out_dir/images/<subject>.nii.gz (float32, 3D) and out_dir/dataset.csv.

    Subjects are numbered across the splits in the order train, val, test. Every task but
    ``blobs`` also writes its lesion mask, ``masks/<subject>.nii.gz`` (uint8), which the CSV does
    not list; ``pvs`` and ``wmh`` write a region mask ``roi/<subject>.nii.gz`` (the CSV's ``roi``
    column). Returns the CSV path; paths in the CSV are relative to the CSV's folder.
    """
    spec.validate()
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    counts = (spec.n_train, spec.n_val, spec.n_test)
    splits = [split for split, n in zip(SPLITS, counts, strict=True) for _ in range(n)]
    width = max(4, len(str(len(splits) - 1)))
    rows = []
    for index, split in enumerate(splits):
        subject = f"{spec.task}_{index:0{width}d}"
        rng = subject_rng(spec.seed, spec.task, index)
        affine, masks = np.eye(4), {}
        if spec.task == "blobs":
            image, label = make_blobs_scan(rng, spec.size, spec.difficulty)
        elif spec.task == "lesions":
            image, mask = make_lesions_scan(rng, spec.size, spec.difficulty)
            label, masks = float(np.count_nonzero(mask)), {"masks": mask}
        else:
            scan = make_anatomy_scan(rng, spec.task, spec.size, spec.difficulty)
            image, label, affine = scan.image, scan.label, scan.affine
            masks = {"masks": scan.lesions, "roi": scan.region}
        for folder, mask in masks.items():
            (out / folder).mkdir(exist_ok=True)
            _save_nifti(mask.astype(np.uint8), out / folder / f"{subject}.nii.gz", affine)
        relative = f"images/{subject}.nii.gz"
        _save_nifti(image.astype(np.float32), out / relative, affine)
        roi = [f"roi/{subject}.nii.gz"] if "roi" in masks else []
        rows.append((subject, relative, repr(float(label)), split, *roi))
    csv_path = out / "dataset.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_COLUMNS + ("roi",) * (spec.task in ANATOMY_TASKS))
        writer.writerows(rows)
    return csv_path


def subject_rng(seed: int, task: str, index: int) -> np.random.Generator:
    """One independent stream per scan, so a scan does not change when the split counts do."""
    return np.random.default_rng([seed, TASKS.index(task), index])


def _save_nifti(array: np.ndarray, path: Path, affine: np.ndarray) -> None:
    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units("mm")
    nib.save(image, path)


# --- shared anatomy and nuisance factors -------------------------------------------------------


@lru_cache(maxsize=8)
def _grid(size: int) -> np.ndarray:
    """Voxel-centre coordinates, shape (3, size, size, size); read-only and cached per size."""
    grid = np.indices((size, size, size), dtype=np.float64)
    grid.flags.writeable = False
    return grid


def _ellipsoid_q(size: int, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Squared normalised radius of every voxel: < 1 inside the axis-aligned ellipsoid."""
    offsets = (_grid(size) - centre[:, None, None, None]) / radii[:, None, None, None]
    return np.einsum("i...,i...->...", offsets, offsets)


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to unit standard deviation: a texture field."""
    field = ndimage.gaussian_filter(rng.standard_normal((size,) * 3), sigma, mode="wrap")
    return field / (field.std() + 1e-12)


def _bias_field(rng: np.random.Generator, size: int, difficulty: float) -> np.ndarray:
    """A smooth multiplicative field (exp of a random quadratic), as from coil inhomogeneity."""
    u = _grid(size) / (size - 1) * 2.0 - 1.0
    linear = rng.normal(0.0, 0.12 * difficulty, 3)
    quadratic = rng.normal(0.0, 0.08 * difficulty, (3, 3))
    log_field = np.einsum("i,i...->...", linear, u)
    log_field += np.einsum("ij,i...,j...->...", quadratic, u, u)
    return np.exp(log_field)


@dataclass(frozen=True)
class _Head:
    """One scan's anatomy: the tissue ellipsoid and the intensities inside and outside it."""

    centre: np.ndarray
    radii: np.ndarray
    tissue: float
    outside: float


def _sample_head(rng: np.random.Generator, size: int, difficulty: float) -> _Head:
    """Vary the anatomy's size, position and contrast between scans, as subjects and scanners do."""
    centre = size / 2 - 0.5 + rng.uniform(-0.1, 0.1, 3) * size
    radii = rng.uniform(0.3, 0.45, 3) * size
    tissue = 250.0 * math.exp(rng.uniform(-0.2, 0.2) * difficulty)
    outside = tissue * (0.5 + rng.uniform(-0.15, 0.15) * difficulty)
    return _Head(centre, radii, tissue, outside)


def _acquire(
    rng: np.random.Generator, clean: np.ndarray, tissue: float, difficulty: float
) -> np.ndarray:
    """What the scanner adds to a clean volume: bias field, global scale/offset, noise."""
    size = clean.shape[0]
    scale = math.exp(rng.uniform(-0.25, 0.25) * difficulty)
    offset = rng.uniform(-20.0, 20.0) * difficulty
    noise_sigma = rng.uniform(0.02, 0.05) * tissue * difficulty
    image = clean * _bias_field(rng, size, difficulty) * scale + offset
    image += rng.normal(0.0, 1.0, clean.shape) * noise_sigma
    # A guard that keeps intensities positive; the ranges above make it bind almost never.
    return np.maximum(image, 1.0)


def _textured_head(
    rng: np.random.Generator, size: int, difficulty: float, head: _Head
) -> tuple[np.ndarray, np.ndarray]:
    """Soft-edged tissue ellipsoid on a darker background, both with smooth texture."""
    q = _ellipsoid_q(size, head.centre, head.radii)
    inside = 1.0 / (1.0 + np.exp((np.sqrt(q) - 1.0) * 8.0))
    base = head.outside + (head.tissue - head.outside) * inside
    texture = _smooth_noise(rng, size, rng.uniform(1.0, 2.0))
    return base * (1.0 + 0.06 * difficulty * texture), q


# --- blobs -------------------------------------------------------------------------------------


def max_blobs(size: int) -> int:
    """Largest blob count for a cube side: 20 at side 20, scaled with the volume."""
    return max(1, round(MAX_BLOBS_AT_20 * (size / REFERENCE_SIZE) ** 3))


def _place_blobs(rng: np.random.Generator, size: int, radii: np.ndarray) -> np.ndarray:
    """Blob centres by rejection: neighbours may touch, but never hide one another."""
    centres: list[np.ndarray] = []
    placed_radii: list[float] = []
    for radius in radii:
        margin = min(radius, size / 4)
        for _ in range(1000):
            candidate = rng.uniform(margin, size - 1 - margin, 3)
            if not centres:
                break
            distance = np.linalg.norm(np.asarray(centres) - candidate, axis=1)
            if np.all(distance >= np.maximum(2.5, 0.9 * (np.asarray(placed_radii) + radius))):
                break
        else:
            raise RuntimeError(f"could not place {len(radii)} blobs in a cube of side {size}")
        centres.append(candidate)
        placed_radii.append(float(radius))
    return np.asarray(centres).reshape(-1, 3)


def _blob_profile(distance: np.ndarray, radius: float, gaussian: bool) -> np.ndarray:
    """A blob's 0..1 intensity profile at each distance from its centre: gaussian or soft ball."""
    if gaussian:
        return np.exp(-0.5 * (distance / (radius / 1.5)) ** 2)
    return 1.0 / (1.0 + np.exp((distance - radius) / 0.35))


def _add_blobs(
    volume: np.ndarray,
    centres: np.ndarray,
    radii: np.ndarray,
    amplitudes: np.ndarray,
    gaussian: np.ndarray,
) -> np.ndarray:
    """Add each blob in a window around its centre, so the cost does not grow as count x volume.

    The window reaches 6 gaussian widths beyond the centre, where the profile is negligible.
    """
    out = volume.copy()
    size = volume.shape[0]
    for centre, radius, amplitude, is_gaussian in zip(
        centres, radii, amplitudes, gaussian, strict=True
    ):
        reach = math.ceil(3 * radius) + 2
        lo = np.maximum(np.floor(centre).astype(int) - reach, 0)
        hi = np.minimum(np.floor(centre).astype(int) + reach + 1, size)
        x, y, z = (np.arange(a, b) - c for a, b, c in zip(lo, hi, centre, strict=True))
        distance = np.sqrt(x[:, None, None] ** 2 + y[None, :, None] ** 2 + z[None, None, :] ** 2)
        window = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        out[window] += amplitude * _blob_profile(distance, radius, bool(is_gaussian))
    return out


def make_blobs_scan(
    rng: np.random.Generator, size: int, difficulty: float = 1.0
) -> tuple[np.ndarray, float]:
    """One ``blobs`` scan and its label, the number of blobs placed (drawn uniformly).

    Blobs are bright relative to the tissue (0.4-1.3x its intensity), so the brightest blob
    almost always sets the scan's maximum while the background stays noisy and structured.
    """
    count = int(rng.integers(0, max_blobs(size) + 1))
    head = _sample_head(rng, size, difficulty)
    clean, _ = _textured_head(rng, size, difficulty, head)
    radii = rng.uniform(1.0, 2.5, count)
    amplitudes = rng.uniform(0.4, 1.3, count) * head.tissue
    gaussian = rng.random(count) < 0.5
    centres = _place_blobs(rng, size, radii)
    clean = _add_blobs(clean, centres, radii, amplitudes, gaussian)
    return _acquire(rng, clean, head.tissue, difficulty), float(count)


# --- lesions -----------------------------------------------------------------------------------


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3D rotation (QR of a gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _lesion_q(rng: np.random.Generator, size: int, centre: np.ndarray) -> np.ndarray:
    """Union of 1-3 rotated, overlapping ellipsoids around ``centre``: < 1 inside the lesion."""
    scale = size / REFERENCE_SIZE
    q = np.full((size,) * 3, np.inf)
    for _ in range(int(rng.integers(1, 4))):
        part_centre = centre + rng.normal(0.0, 1.0 * scale, 3)
        radii = rng.uniform(1.0, 2.8, 3) * scale
        delta = _grid(size) - part_centre[:, None, None, None]
        local = (
            np.einsum("ij,i...->j...", _random_rotation(rng), delta) / radii[:, None, None, None]
        )
        q = np.minimum(q, np.einsum("i...,i...->...", local, local))
    return q


def _lesion_mask(
    rng: np.random.Generator, size: int, allowed: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """The binary lesion mask and the contrast map (each lesion its own contrast)."""
    mask = np.zeros(allowed.shape, dtype=bool)
    contrast = np.zeros(allowed.shape)
    candidates = np.argwhere(allowed)
    for _ in range(count if len(candidates) else 0):
        centre = candidates[rng.integers(len(candidates))] + rng.uniform(-0.5, 0.5, 3)
        # Smoothed noise added to the implicit surface gives irregular, non-convex borders.
        roughness = 0.35 * _smooth_noise(rng, size, 1.0)
        lesion = (_lesion_q(rng, size, centre) + roughness <= 1.0) & allowed
        contrast = np.where(lesion & ~mask, rng.uniform(0.25, 0.7), contrast)
        mask |= lesion
    return mask, contrast


def make_lesions_scan(
    rng: np.random.Generator, size: int, difficulty: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """One ``lesions`` scan and its binary lesion mask; the label is the mask's voxel count.

    The tissue has a darker outer rim and a dark central "ventricle"; lesions (0-8, drawn
    uniformly, of varying shape and contrast) lie only in the tissue between the two.
    """
    count = int(rng.integers(0, MAX_LESIONS + 1))
    head = _sample_head(rng, size, difficulty)
    clean, q_head = _textured_head(rng, size, difficulty, head)
    ventricle_centre = head.centre + rng.uniform(-0.05, 0.05, 3) * size
    ventricle_radii = head.radii * rng.uniform(0.2, 0.4, 3)
    q_ventricle = _ellipsoid_q(size, ventricle_centre, ventricle_radii)
    rim = np.clip((np.sqrt(q_head) - 0.75) / 0.25, 0.0, 1.0) * (q_head < 1.0)
    ventricle = ndimage.gaussian_filter((q_ventricle < 1.0).astype(float), 0.7)
    clean = clean * (1.0 - rng.uniform(0.1, 0.2) * rim)
    clean = clean * (1.0 - rng.uniform(0.35, 0.55) * ventricle)
    allowed = (q_head < 0.8**2) & ~ndimage.binary_dilation(q_ventricle < 1.0)
    mask, contrast = _lesion_mask(rng, size, allowed, count)
    # Partial-volume edges: the image sees a slightly blurred lesion, the label the binary mask.
    clean = clean * (1.0 + ndimage.gaussian_filter(contrast, 0.5))
    return _acquire(rng, clean, head.tissue, difficulty), mask
