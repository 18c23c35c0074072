"""Tiny NIfTI datasets written on the fly: scans whose label is a count of bright voxels."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd


def write_scan(path: Path, array: np.ndarray, spacing: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.float32), np.diag([spacing] * 3 + [1.0])), path)
    return path


def make_tiny_dataset(
    root: Path, n: int = 16, size: int = 10, splits: bool = True, seed: int = 0
) -> Path:
    """Scans whose label is the number of bright voxels; a CSV with paths relative to it."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        volume = rng.normal(100.0, 5.0, size=(size, size, size))
        count = int(rng.integers(0, 10))
        flat = rng.choice(volume.size, size=count, replace=False)
        volume.flat[flat] += 200.0
        image = write_scan(root / "images" / f"s{i:02d}.nii.gz", volume)
        row = {"subject": f"s{i:02d}", "image": str(image.relative_to(root)), "label": float(count)}
        if splits:
            row["split"] = "train" if i < n // 2 else ("val" if i < 3 * n // 4 else "test")
        rows.append(row)
    csv = root / "dataset.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv
