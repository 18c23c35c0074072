"""Fault tolerance, for real: SIGKILL a sweep worker mid-trial, run the command again, and check
that the killed trial was failed through its stale heartbeat and retried, with every grid point
completed exactly once and no completed trial redone."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hydralab.cli import main
from hydralab.sweeps.trials import SEED, SKIPPED, RetryCallback
from tests.helpers.sweeps import write_sweep

ROOT = Path(__file__).resolve().parents[2]


def _states(db: Path) -> dict[int, str]:
    """Trial number -> state (``RUNNING+`` once its heartbeat is recorded), read straight from
    the SQLite file (no Optuna cache)."""
    query = (
        "SELECT t.number, t.state || CASE WHEN h.trial_id IS NULL THEN '' ELSE '+' END "
        "FROM trials t LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id"
    )
    if not db.is_file():
        return {}
    try:
        with sqlite3.connect(db, timeout=10) as connection:
            return dict(connection.execute(query).fetchall())
    except sqlite3.OperationalError:  # tables not created yet
        return {}


def _sweep(command: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, stdout=log.open("a"), stderr=subprocess.STDOUT, env=env)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_killed_worker_trial_is_retried_and_no_completed_trial_is_redone(
    tmp_path: Path, tiny_csv: Path, capsys: pytest.CaptureFixture[str]
):
    sweep = write_sweep(
        tmp_path / "sweep.yaml",
        tiny_csv,
        {"seed": [0, 1, 2]},
        study="killed",
        sampler="grid",
        heartbeat={"interval": 1, "grace_period": 2, "max_retry": 2},
    )
    out = tmp_path / "sweeps"
    db = out / "killed" / "study.db"
    log = tmp_path / "sweep.log"
    command = [sys.executable, "-m", "hydralab.cli", "sweep", str(sweep), "--out", str(out)]

    # 1. One worker: wait until trial 0 is done and trial 1 trains, then SIGKILL it.
    worker = _sweep(command, log)
    deadline = time.monotonic() + 120
    trial_1 = out / "killed" / "trials" / "trial-0001"
    while _states(db).get(1) != "RUNNING+" or not trial_1.is_dir():
        assert worker.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"no second trial started: {_states(db)}"
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    assert _states(db) == {0: "COMPLETE+", 1: "RUNNING+", 2: "WAITING"}  # 2: the last point
    first_run = (out / "killed" / "trials" / "trial-0000" / "version_0").stat().st_mtime_ns

    # 2. The same command, now with two workers: the study resumes and completes.
    restarted = _sweep([*command, "--workers", "2"], log)
    assert restarted.wait(timeout=240) == 0, log.read_text()[-3000:]

    study = optuna.load_study(study_name="killed", storage=f"sqlite:///{db}")
    trials = study.get_trials()
    killed = trials[1]
    assert killed.state == TrialState.FAIL  # failed by a worker that found it stale
    retries = [t for t in trials if RetryCallback.retried_trial_number(t) == 1]
    assert len(retries) == 1
    (retry,) = retries
    assert retry.state == TrialState.COMPLETE and RetryCallback.retry_history(retry) == [1]
    assert retry.params == killed.params and retry.user_attrs[SEED] == killed.user_attrs[SEED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["seed"] for t in complete) == [0, 1, 2]  # each point exactly once
    # 3 points + 1 retry ran; a trial started by racing workers past the last point is skipped.
    ran = [t for t in trials if SKIPPED not in t.user_attrs]
    assert len(ran) == 4
    assert trials[0].state == TrialState.COMPLETE
    # Trial 0 was not redone: its run folder is untouched and no other folder holds seed 0.
    assert (out / "killed" / "trials" / "trial-0000" / "version_0").stat().st_mtime_ns == first_run
    assert not (out / "killed" / "trials" / "trial-0000" / "version_1").exists()

    # 3. Once more on the complete study: nothing new runs (and torch is not even imported).
    assert main(command[3:]) == 0
    assert "3/3 done (3 complete" in capsys.readouterr().out
    assert len(optuna.load_study(study_name="killed", storage=f"sqlite:///{db}").trials) == len(
        trials
    )
