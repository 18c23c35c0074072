"""A study's trials: the attributes a trial records, which trials stand for a run, and retries.

Every name a trial's user attributes use is defined here once; the objective writes them and the
reports read them. A trial that failed because its worker stopped (no heartbeat) or because the
sweep was interrupted is queued again with the same parameters and seed; the failed original then
no longer counts (:func:`live_trials`), its retry does.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
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
DEVICE = "device"
"""The device the trial trained on: ``cpu``, or ``cuda:0 = GPU 3 (NVIDIA H200)``
(:func:`~hydralab.sweeps.devices.describe_device`)."""
SKIPPED = "skipped"
"""Set on a trial that did not run: another trial holds its point, or it was started past the
study's target (see :func:`surplus_reason`)."""
STOPPING_ATTRS = ("best_step", "last_step", "stop_reason")
"""Where and why a finished trial's training ended; ``plateau`` is the only ``stop_reason`` of a
run that converged."""
INTERRUPTED = "interrupted"
"""How ``error`` begins for a trial stopped by Ctrl-C or SIGTERM."""

# -- Optuna's system attributes of a trial ------------------------------------------------------
QUEUED = "fixed_params"
"""The parameters :meth:`optuna.Study.enqueue_trial` queued the trial with; a retry copies it.
A grid study queues each of its points once, when it is created."""

# -- the study's own attributes -----------------------------------------------------------------
SWEEP = "sweep"
"""The sweep definition the study was made from (:meth:`SweepSpec.fingerprint`)."""
GRID = "grid"
"""A grid study's distinct points, in the order they are run."""
ARTIFACTS = "artifacts"
"""The folder of the study's Optuna artifact store (:mod:`.artifacts`): Optuna does not record
which store a study uses, so the dashboard and the report read it from here."""


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
        """Runs still to start: the target less the trials finished or running (so queued
        trials, grid points and retries alike, are in it)."""
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
    """The trials that stand for a run: not skipped, not a second queueing of a grid point
    (see :func:`holder`), and not a FAIL that was queued again (that one counts through its
    retry)."""
    retried = {number for trial in trials for number in retry_history(trial)}
    first = _first_queued(trials)
    return [
        trial
        for trial in trials
        if SKIPPED not in trial.user_attrs
        and holder(first, trial) is None
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


def queued_point(trial: FrozenTrial) -> dict[str, Any] | None:
    """The parameters a trial was queued with (:meth:`optuna.Study.enqueue_trial`; a retry
    inherits its original's), or None for a trial its sampler drew."""
    return trial.system_attrs.get(QUEUED)


def _first_queued(trials: Sequence[FrozenTrial]) -> dict[str, int]:
    """Each queued point (as JSON) -> the number of the first trial queued with it."""
    first: dict[str, int] = {}
    for trial in sorted(trials, key=lambda t: t.number):
        point = queued_point(trial)
        if point is not None and retried_from(trial) is None:
            first.setdefault(json.dumps(point, sort_keys=True), trial.number)
    return first


def holder(first: Mapping[str, int], trial: FrozenTrial) -> int | None:
    """The earlier trial queued with this trial's point (two processes queueing a grid at
    once can both queue it), or None; ``first`` is :func:`_first_queued` of the study."""
    point = queued_point(trial)
    if point is None:
        return None
    number = first.get(json.dumps(point, sort_keys=True))
    return number if number is not None and number < original_number(trial) else None


def original_number(trial: FrozenTrial) -> int:
    """The number of the trial a retry replaces (its own number for a first try)."""
    number = retried_from(trial)
    return trial.number if number is None else number


def surplus_reason(
    trials: Sequence[FrozenTrial],
    trial: FrozenTrial,
    target: int,
    points: Sequence[Mapping[str, Any]] | None = None,
) -> str | None:
    """Why a just-started trial must not run, or None when it should.

    Workers count what is left and then start a trial, so two of them can start one for the
    last run: Optuna then hands one the queued trial and makes a fresh one for the other. For a
    grid (``points``: the queued parameters of the target's points) a trial runs only if it
    was queued for one of those points and no earlier trial was queued for the same point (two
    machines creating the study at once can both queue it). Otherwise (a sampler's study) the
    first ``target`` first tries run. A retry is judged as the trial it replaces.
    """
    if points is None:
        first = original_number(trial)
        if sum(t.number < first and retried_from(t) is None for t in trials) >= target:
            return f"the study already has its {target} trials"
        return None
    point = queued_point(trial)
    if point is None:
        return "every grid point is queued, and this trial is not one of them"
    if point not in points:
        return f"its point is not among the study's {target} points"
    held_by = holder(_first_queued(trials), trial)
    return None if held_by is None else f"trial {held_by} holds its point"
