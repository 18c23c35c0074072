"""Shared fixtures: tiny NIfTI datasets (tests/helpers/scans.py), and a CPU-only, offline run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers.scans import make_tiny_dataset


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


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    return make_tiny_dataset(tmp_path / "tiny")


@pytest.fixture
def additive_csv(tmp_path: Path) -> Path:
    """64 scans of the bright-voxel count: enough for either method to learn it in 150 steps."""
    return make_tiny_dataset(tmp_path / "additive", n=64, size=10)
