"""Sweep files for tests: tiny sweeps over the tiny scans that train in seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hydralab.sweeps.spec import SweepSpec, load_spec

ROOT = Path(__file__).resolve().parents[2]
BASE_CONFIG = ROOT / "configs" / "blobs" / "hydranet.yaml"


def write_sweep(path: Path, csv: Path, space: dict, **extra) -> Path:
    """A sweep over the tiny scans: a few steps of training, validation every epoch."""
    overrides = {
        "data.csv": str(csv),
        "data.n_train": None,
        "data.batch_size": 4,
        "trainer.max_steps": 4,
        "trainer.check_val_every_n_epoch": 1,
        "trainer.val_check_interval": 1.0,
        "trainer.log_every_n_steps": 1,
        "trainer.enable_model_summary": False,
        "tracking.wandb_mode": "disabled",
        **extra.pop("overrides", {}),
    }
    overrides = {key: value for key, value in overrides.items() if key not in space}
    raw = {
        "base_config": str(BASE_CONFIG),
        "study": "tiny",
        "overrides": overrides,
        "space": space,
        "heartbeat": {"interval": 1, "grace_period": 2},
        **extra,
    }
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def small_spec(tmp_path: Path, **changes: Any) -> SweepSpec:
    """A sweep over both methods with ``changes`` to its top-level keys, written and loaded."""
    raw = {
        "base_config": str(BASE_CONFIG),
        "study": "s",
        "space": {"model.method": ["baseline", "hydranet"]},
        **changes,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_spec(path)
