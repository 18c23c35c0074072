"""A study's trials: the attributes a trial records, which trials stand for a run, and retries.

Every name a trial's user attributes use is defined here once; the objective writes them and the
reports read them. A trial that failed because its worker stopped (no heartbeat) or because the
sweep was interrupted is queued again with the same parameters and seed; the failed original then
no longer counts (:func:`live_trials`), its retry does.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

try:  # optuna >= 4.9 renamed the callback and its storage argument
    from optuna.storages import RetryHeartbeatStaleTrialCallback as RetryCallback

    RETRY_ARGUMENT = "heartbeat_stale_trial_callback"
except ImportError:  # pragma: no cover - older optuna
    from optuna.storages import RetryFailedTrialCallback as RetryCallback

    RETRY_ARGUMENT = "failed_trial_callback"

# -- the user attributes of a trial (written by :mod:`.objective`) ------------------------------
SEED = "seed"
CONFIG = "config"
"""Every config key the trial set on top of the base config."""
OUTPUT_DIR = "output_dir"
RUN_DIR = "run_dir"
BEST_CHECKPOINT = "best_checkpoint"
STEPS = "steps"
"""Optimiser steps taken."""
TEST_PREDICTIONS = "test_predictions"
"""The CSV of the run's per-scan test predictions."""
ERROR = "error"
"""Why a failed trial failed."""
SKIPPED = "skipped"
"""Set on a trial that did not run because another trial holds its point."""
STOPPING_ATTRS = ("best_step", "last_step", "stop_reason")
"""Where and why a finished trial's training ended; ``plateau`` is the only ``stop_reason`` of a
run that converged."""
INTERRUPTED = "interrupted"
"""How ``error`` begins for a trial stopped by Ctrl-C or SIGTERM."""

# -- the study's own attributes -----------------------------------------------------------------
SWEEP = "sweep"
"""The sweep definition the study was made from (:meth:`SweepSpec.fingerprint`)."""
GRID = "grid"
"""A grid study's distinct points, in the order they are run."""


def attr_name(metric: str) -> str:
    """A metric as a user-attribute name: ``val/icc_c1`` -> ``val_icc_c1``."""
    return metric.replace("/", "_")


def best_attr(metric: str) -> str:
    """The attribute holding a trial's best value of ``metric`` (also the trial's value)."""
    return f"best_{attr_name(metric)}"


def grid_points(study: optuna.Study) -> list[dict[str, Any]]:
    """The grid points a study was made to run (empty for a sampler without a grid)."""
    return [dict(point) for point in study.user_attrs.get(GRID) or []]


@dataclass(frozen=True)
class Counts:
    """Where a study stands against its target."""

    complete: int
    pruned: int
    failed: int
    running: int
    waiting: int
    target: int

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed

    @property
    def left(self) -> int:
        """Trials still to start (queued retries not included)."""
        return max(0, self.target - self.finished - self.running)

    def line(self) -> str:
        return (
            f"{self.finished}/{self.target} done ({self.complete} complete, {self.pruned} "
            f"pruned, {self.failed} failed), {self.running} running, {self.left} left"
        )


def count_trials(study: optuna.Study, target: int) -> Counts:
    """Count the study's trials that stand for a run (see :func:`live_trials`)."""
    by_state: dict[TrialState, int] = dict.fromkeys(TrialState, 0)
    for trial in live_trials(study.get_trials(deepcopy=False)):
        by_state[trial.state] += 1
    return Counts(
        complete=by_state[TrialState.COMPLETE],
        pruned=by_state[TrialState.PRUNED],
        failed=by_state[TrialState.FAIL],
        running=by_state[TrialState.RUNNING],
        waiting=by_state[TrialState.WAITING],
        target=target,
    )


def live_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that stand for a run: not skipped, and not a FAIL that was queued again
    (that one counts through its retry)."""
    retried = {number for trial in trials for number in retry_history(trial)}
    return [
        trial
        for trial in trials
        if SKIPPED not in trial.user_attrs
        and not (trial.state == TrialState.FAIL and trial.number in retried)
    ]


def retried_from(trial: FrozenTrial) -> int | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryCallback.retried_trial_number(trial)


def retry_history(trial: FrozenTrial) -> list[int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryCallback.retry_history(trial)


def requeue_interrupted(study: optuna.Study) -> list[int]:
    """Queue again, once, each trial that Ctrl-C or a stopped sweep failed; return their numbers.

    Resuming must finish what an interruption (Ctrl-C, a ``timeout``, a lent machine taken
    back) cut short, as it does for a worker killed outright (the heartbeat's retry). A trial
    that failed on its own (a config the CLI rejects, a NaN loss) stays failed: it would fail
    again. The retry keeps the original's point and seed, as a heartbeat retry does, but not
    its ``error``.
    """
    trials = study.get_trials(deepcopy=False)
    retried = {number for trial in trials for number in retry_history(trial)}
    queued = []
    for trial in trials:
        interrupted = str(trial.user_attrs.get(ERROR, "")).startswith(INTERRUPTED)
        if trial.state != TrialState.FAIL or not interrupted or trial.number in retried:
            continue
        # The system attributes Optuna's RetryFailedTrialCallback writes, so that retry
        # counting, grid slots and reports treat both kinds of retry alike.
        history = [*trial.system_attrs.get("retry_history", []), trial.number]
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=trial.params,
                distributions=trial.distributions,
                user_attrs={k: v for k, v in trial.user_attrs.items() if k != ERROR},
                system_attrs={
                    "failed_trial": trial.number,
                    **trial.system_attrs,
                    "retry_history": history,
                },
            )
        )
        queued.append(trial.number)
    return queued


def trial_slot(trials: Sequence[FrozenTrial], trial: FrozenTrial) -> int:
    """The trial's place among the study's fresh trials: 0, 1, 2, ... without gaps or repeats.

    A trial's number counts every trial created before it, retries included; its slot does
    not count the retries. Numbers are unique, so slots are too, whatever order concurrent
    workers create trials in. A retry takes the slot of the trial it replaces.
    """
    number = retried_from(trial)
    number = trial.number if number is None else number
    retries_before = sum(1 for t in trials if t.number < number and retried_from(t) is not None)
    return number - retries_before
