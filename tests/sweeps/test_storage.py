"""Storage: URLs (SQLite, journal files, masked passwords) and the heartbeat check Optuna lacks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from optuna.storages import JournalStorage, RDBStorage
from optuna.trial import TrialState

from hydralab.sweeps.spec import load_spec
from hydralab.sweeps.storage import (
    default_storage_url,
    fail_trials_without_heartbeat,
    journal_path,
    masked,
    open_storage,
)
from hydralab.sweeps.study import open_study
from hydralab.sweeps.trials import RetryCallback, count_trials, queued_point
from tests.helpers.sweeps import write_sweep


def test_journal_storage_and_masked_urls(tmp_path: Path, tiny_csv: Path):
    spec = load_spec(write_sweep(tmp_path / "sweep.yaml", tiny_csv, {"seed": [0, 1, 2]}))
    log = tmp_path / "shared" / "study.log"
    assert journal_path(f"journal://{log}") == log and journal_path(str(log)) == log
    assert journal_path("sqlite:///x.log") is None
    storage = open_storage(f"journal://{log}", spec)
    assert isinstance(storage, JournalStorage) and log.is_file()
    study = open_study(spec, storage)
    assert count_trials(study, spec.target_trials()).left == 3
    assert isinstance(open_storage(default_storage_url(tmp_path), spec), RDBStorage)

    url = "postgresql://hydra:s3cret@db.example.org:5432/sweeps"
    assert "s3cret" not in masked(url) and "db.example.org" in masked(url)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_trial_killed_before_its_first_heartbeat_is_failed_and_queued_once(
    tmp_path: Path, tiny_csv: Path
):
    """Optuna's stale check skips a trial with no heartbeat yet; it must not block the study."""
    spec = load_spec(
        write_sweep(
            tmp_path / "sweep.yaml",
            tiny_csv,
            {"seed": [0, 1]},
            heartbeat={"interval": 1, "grace_period": 1},
        )
    )
    storage = open_storage(default_storage_url(tmp_path), spec)
    study = open_study(spec, storage)
    study.ask()  # RUNNING (the first queued point), and no heartbeat thread ever started
    fail_trials_without_heartbeat(study, storage)
    assert study.trials[0].state == TrialState.RUNNING  # still within the grace period
    time.sleep(1.2)
    fail_trials_without_heartbeat(study, storage)
    fail_trials_without_heartbeat(study, storage)
    trials = study.get_trials()  # trial 1 is the other point, still queued
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING, TrialState.WAITING]
    assert [RetryCallback.retried_trial_number(t) for t in trials] == [None, None, 0]
    assert queued_point(trials[2]) == queued_point(trials[0])
