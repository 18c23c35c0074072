"""PostgreSQL, for real: a throwaway server on 127.0.0.1 (:mod:`tests.helpers.postgres`), two
workers on one study, every grid point completed exactly once, and the password nowhere in the
output or the run folders; it reaches the sweep only through ``HYDRALAB_STORAGE``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from hydralab.sweeps.trials import SKIPPED

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_workers_on_postgres_run_each_grid_point_once(
    tmp_path: Path, tiny_csv: Path, postgres_url: str
):
    sweep = tmp_path / "sweep.yaml"
    raw = {
        "base_config": str(ROOT / "configs" / "blobs" / "hydranet.yaml"),
        "study": "on-postgres",
        "overrides": {
            "data.csv": str(tiny_csv),
            "data.n_train": None,
            "data.batch_size": 4,
            "trainer.max_steps": 2,
            "trainer.check_val_every_n_epoch": 1,
            "trainer.val_check_interval": 1.0,
            "trainer.log_every_n_steps": 1,
            "trainer.enable_model_summary": False,
            "tracking.wandb_mode": "disabled",
        },
        "space": {"model.method": ["baseline", "hydranet"], "model.k": [2, 4]},
        "heartbeat": {"interval": 1},
    }
    sweep.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = tmp_path / "sweeps"
    command = [sys.executable, "-m", "hydralab.cli", "sweep", str(sweep), "--out", str(out)]
    env = {**os.environ, "HYDRALAB_STORAGE": postgres_url}
    done = subprocess.run(
        [*command, "--workers", "2"], env=env, capture_output=True, text=True, timeout=300
    )
    password = make_url(postgres_url).password
    assert password not in done.stdout + done.stderr
    assert done.returncode == 0, done.stderr[-3000:]
    assert "postgresql://hydra:***@127.0.0.1" in done.stdout

    study = optuna.load_study(study_name="on-postgres", storage=postgres_url)
    ran = [t for t in study.trials if SKIPPED not in t.user_attrs]
    points = sorted(tuple(sorted(t.params.items())) for t in ran)
    assert len(ran) == 3 and len(set(points)) == 3  # baseline once, hydranet with k=2 and k=4
    assert all(t.state == TrialState.COMPLETE for t in ran)
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".csv", ".log", ".json", ".txt"):
            assert password not in path.read_text(errors="ignore"), path
