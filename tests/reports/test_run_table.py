"""One row per run: each trial state said as such, and the grid points no trial stands for
(from the grid the study stored) reported as missing, never silently dropped."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from hydralab.reports import run_table
from hydralab.sweeps.storage import load_study
from hydralab.sweeps.trials import GRID, SWEEP
from tests.helpers.sweeps import small_spec

from .conftest import SPACE, build_fake_study, grid

UNSTARTED = {"model.method": "hydranet", "data.n_train": 16, "seed": 1}
"""The fake study's grid point that no trial ran."""


@pytest.fixture
def runs(fake_study: str) -> pd.DataFrame:
    return run_table.trial_runs(load_study(fake_study, "fake"))


def test_runs_hold_each_state(runs: pd.DataFrame) -> None:
    assert run_table.state_counts(runs) == {"complete": 5, "failed": 1, "missing": 1, "pruned": 1}
    failed = runs[runs["state"] == "failed"].iloc[0]
    assert (failed["method"], failed["seed"], failed["data.n_train"]) == ("baseline", 1, 16)
    assert failed["note"] == "ValueError: NaN loss"
    missing = runs[runs["state"] == "missing"]
    assert len(missing) == 1 and pd.isna(missing.iloc[0]["number"])
    point = missing.iloc[0][["method", "data.n_train", "seed"]].tolist()
    assert point == ["hydranet", 16, 1]
    assert run_table.missing_predictions(runs) == []


def test_a_study_without_a_stored_grid_reports_no_missing_point(tmp_path: Path) -> None:
    """Studies made before sweeps stored their grid: the report does not guess the grid."""
    study = load_study(build_fake_study(tmp_path, with_grid=False), "fake")
    runs = run_table.trial_runs(study)
    assert run_table.state_counts(runs) == {"complete": 5, "failed": 1, "pruned": 1}


@pytest.mark.parametrize("how", ["enqueue_trial", "add_trial"])
def test_a_queued_point_is_waiting_not_missing(tmp_path: Path, how: str) -> None:
    """A grid study may queue every point when it is made: an unstarted point is then a
    WAITING trial (its values held as Optuna's fixed params, or as params) and not missing."""
    study = load_study(build_fake_study(tmp_path), "fake")
    if how == "enqueue_trial":
        study.enqueue_trial(UNSTARTED)
    else:
        distributions = {key: CategoricalDistribution(values) for key, values in SPACE.items()}
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING, params=UNSTARTED, distributions=distributions
            )
        )
    runs = run_table.trial_runs(study)
    assert run_table.state_counts(runs) == {"complete": 5, "failed": 1, "pruned": 1, "waiting": 1}
    waiting = runs[runs["state"] == "waiting"].iloc[0]
    assert [waiting["method"], waiting["data.n_train"], waiting["seed"]] == [
        "hydranet",
        16,
        1,
    ]


def test_a_missing_baseline_point_stands_for_every_k(tmp_path: Path) -> None:
    """A baseline trains with k=1: the grid's baseline points at each k are one run."""
    space = {"model.method": ["baseline", "hydranet"], "model.k": [2, 4], "seed": [0]}
    study = optuna.create_study(study_name="k", storage=f"sqlite:///{tmp_path / 'k.db'}")
    study.set_user_attr(SWEEP, {"space": space})
    study.set_user_attr(GRID, grid(space))
    runs = run_table.trial_runs(study)
    assert (runs["state"] == "missing").all()
    ks = [None if pd.isna(k) else int(k) for k in runs["model.k"]]
    points = sorted(zip(runs["method"], ks, strict=True), key=str)
    assert points == [("baseline", None), ("hydranet", 2), ("hydranet", 4)]


def test_a_new_grid_study_is_all_waiting_none_missing(tmp_path: Path) -> None:
    """A study as the sweep makes it: its queued points are waiting, none is missing; the
    points the grid stores and those it queues describe the same runs."""
    from hydralab.sweeps.study import open_study

    space = {"model.method": ["baseline", "hydranet"], "model.k": [2, 4], "seed": [0, 1]}
    spec = small_spec(tmp_path, space=space, overrides={"data.batch_size": 4})
    study = open_study(spec, optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}"))
    runs = run_table.trial_runs(study)
    assert run_table.state_counts(runs) == {"waiting": len(spec.grid())} == {"waiting": 6}
    baseline = runs[runs["method"] == "baseline"]
    assert baseline["model.k"].isna().all() and sorted(baseline["seed"]) == [0, 1]
