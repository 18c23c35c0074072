"""Shared fixtures: tiny NIfTI datasets written on the fly, and a CPU-only, offline environment."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch


@pytest.fixture(autouse=True)
def _offline_and_small(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing leaves tmp_path or the machine; two threads keep parallel tests fair on 2 cores."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    torch.set_num_threads(2)


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


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    return make_tiny_dataset(tmp_path / "tiny")


@pytest.fixture
def additive_csv(tmp_path: Path) -> Path:
    """64 scans of the bright-voxel count: enough for either method to learn it in 150 steps."""
    return make_tiny_dataset(tmp_path / "additive", n=64, size=10)
