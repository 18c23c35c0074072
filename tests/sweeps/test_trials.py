"""Trial bookkeeping: which trial runs a grid point (the queue's first), retries keeping their
point and seed, surplus trials of racing workers, and the counts against the target."""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.trial import TrialState

from hydralab.sweeps.spec import load_spec
from hydralab.sweeps.storage import default_storage_url, open_storage
from hydralab.sweeps.study import open_study, queued_points
from hydralab.sweeps.trials import RetryCallback, count_trials, surplus_reason
from tests.helpers.sweeps import write_sweep


def _skip(spec, study, trial) -> str | None:
    """What a worker's objective asks before it trains ``trial``."""
    trials = study.get_trials(deepcopy=False)
    frozen = next(t for t in trials if t.number == trial.number)
    return surplus_reason(trials, frozen, spec.target_trials(), queued_points(spec))


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_retry_keeps_its_point_and_a_trial_not_first_queued_for_a_point_is_surplus(
    tmp_path: Path, tiny_csv: Path
):
    """A retry takes its original's point; a trial that is not the first queued for a point in
    the target (a racing worker's fresh trial, a point two creators both queued) is surplus."""
    spec = load_spec(write_sweep(tmp_path / "sweep.yaml", tiny_csv, {"seed": [0, 1, 2]}))
    study = open_study(spec, open_storage(default_storage_url(tmp_path), spec))
    seeds = []
    first = study.ask()
    seeds.append(first.suggest_categorical("seed", [0, 1, 2]))
    study.tell(first, state=TrialState.FAIL)
    frozen = study.trials[0]
    RetryCallback(max_retry=1)(study, frozen)  # what the heartbeat does for a killed trial
    for _ in range(3):
        trial = study.ask()
        assert _skip(spec, study, trial) is None
        seeds.append(trial.suggest_categorical("seed", [0, 1, 2]))
        study.tell(trial, 0.0)
    assert RetryCallback.retried_trial_number(study.trials[3]) == 0
    assert seeds[-1] == seeds[0] and sorted(seeds[1:]) == [0, 1, 2]
    assert count_trials(study, 3).complete == 3 and count_trials(study, 3).failed == 0
    assert count_trials(study, 3).left == 0

    surplus = study.ask()  # the queue is empty: Optuna makes a fresh trial
    assert "not one of them" in _skip(spec, study, surplus)
    study.enqueue_trial({"seed": seeds[1]})  # a second creator queued a point again
    assert count_trials(study, 3).waiting == 0  # a second queueing stands for no run
    again = study.ask()
    assert again.number == 5 and _skip(spec, study, again) == "trial 1 holds its point"
    spec_of_2 = spec.with_changes(n_trials=2)
    past = study.trials[2]  # queued third: past a target of two
    assert queued_points(spec_of_2) == queued_points(spec)[:2]
    reason = surplus_reason(study.trials, past, 2, queued_points(spec_of_2))
    assert reason == "its point is not among the study's 2 points"


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_sampler_study_runs_its_first_n_trials_and_retries_keep_their_place(
    tmp_path: Path, tiny_csv: Path
):
    """TPE draws fresh trials: the first n_trials run, a later one (two workers racing for the
    last) is surplus, and a retry counts as the trial it replaces."""
    spec = load_spec(
        write_sweep(
            tmp_path / "sweep.yaml", tiny_csv, {"seed": [0, 1, 2]}, sampler="tpe", n_trials=2
        )
    )
    study = open_study(spec, open_storage(default_storage_url(tmp_path), spec))
    assert study.trials == []  # nothing is queued for a sampler
    for _ in range(3):
        study.tell(study.ask(), state=TrialState.FAIL)
    RetryCallback()(study, study.trials[1])
    assert study.ask().number == 3  # the retry, from the queue
    assert study.ask().number == 4  # a fresh one
    trials = study.get_trials()
    full = "the study already has its 2 trials"
    assert [surplus_reason(trials, t, 2) for t in trials] == [None, None, full, None, full]
    assert RetryCallback.retried_trial_number(trials[3]) == 1
