"""The sweep engine: open a study, hand its trials to workers, and run them until it is complete.

Storage URLs live in :mod:`.storage`, trial bookkeeping (attributes, counts, retries) in
:mod:`.trials`. With a database storage, a worker waits for RUNNING trials before it exits, so
that one killed mid-trial (its heartbeat stale) is picked up again by a live worker.

A study is complete when its finished trials (COMPLETE, PRUNED, or FAIL and not retried) reach
the target: every distinct grid point, or ``n_trials``. Running the same command again resumes
a study and starts nothing once it is complete.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.samplers import BaseSampler, TPESampler
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from hydralab.sweeps.spec import SweepSpec, SweepSpecError
from hydralab.sweeps.storage import (
    DEFAULT_ROOT,
    fail_trials_without_heartbeat,
    masked,
    open_storage,
    resolve_storage_url,
    retry_races,
)
from hydralab.sweeps.trials import (
    GRID,
    SKIPPED,
    SWEEP,
    Counts,
    count_trials,
    requeue_interrupted,
    trial_slot,
)

GRID_POINT = "hydralab:grid_point"
"""System attribute: the index of the grid point a trial runs."""


class GridPointSampler(BaseSampler):
    """Grid search in which each point runs exactly once, whatever the number of workers.

    Trial slot i (see :func:`trial_slot`) runs ``points[i]``; a retry of a killed trial runs
    its point again, and the objective skips fresh trials past the last point. Optuna's
    GridSampler maps trial numbers to points instead: retries use up numbers, and when
    workers race for the last points it hands out points already running (its documentation
    warns of such duplicates). The points are given in full, so a grid of method x k holds
    one baseline point, not one per k (see :meth:`SweepSpec.grid`).
    """

    def __init__(self, points: Sequence[Mapping[str, Any]]) -> None:
        self.points = [dict(point) for point in points]

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict) -> dict:
        return {}

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if GRID_POINT not in trial.system_attrs:
            slot = trial_slot(study.get_trials(deepcopy=False), trial)
            # Samplers keep their state in system attributes (Optuna's GridSampler does too).
            study._storage.set_trial_system_attr(trial._trial_id, GRID_POINT, slot)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: optuna.distributions.BaseDistribution,
    ) -> Any:
        slot = trial.system_attrs.get(GRID_POINT)
        if slot is None or not 0 <= slot < len(self.points):
            raise RuntimeError(f"trial {trial.number} is past the grid's last point")
        return self.points[slot][param_name]


def grid_order(spec: SweepSpec) -> list[dict[str, Any]]:
    """The grid's distinct points in the order they run; the same for every worker.

    A fixed shuffle: a sweep stopped half-way holds a spread of points, not one corner.
    """
    points = spec.grid()
    random.Random(spec.sampler_seed or 0).shuffle(points)
    return points


def make_sampler(spec: SweepSpec, worker_index: int = 0) -> BaseSampler:
    """The sweep's sampler; every worker of a grid builds the same one."""
    if spec.sampler == "grid":
        return GridPointSampler(grid_order(spec))
    seed = None if spec.sampler_seed is None else spec.sampler_seed + worker_index
    return TPESampler(seed=seed)


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    if not spec.pruning:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=spec.pruning_startup_trials, n_warmup_steps=spec.pruning_warmup_steps
    )


def open_study(spec: SweepSpec, storage: BaseStorage, worker_index: int = 0) -> optuna.Study:
    """Create the study, or load it when it exists (also when another worker just made it).

    Raises:
        SweepSpecError: the stored study was made from a different sweep (another space,
            overrides, sampler or objective): resuming it would mix two experiments.
    """
    study = retry_races(
        lambda: optuna.create_study(
            storage=storage,
            study_name=spec.study,
            direction=spec.direction,
            sampler=make_sampler(spec, worker_index),
            pruner=make_pruner(spec),
            load_if_exists=True,
        )
    )
    fingerprint = spec.fingerprint()
    stored = study.user_attrs.get(SWEEP)
    if stored is None:
        study.set_user_attr(SWEEP, fingerprint)
        if spec.sampler == "grid":
            study.set_user_attr(GRID, grid_order(spec))
    elif stored != fingerprint:
        changed = sorted(key for key in fingerprint if stored.get(key) != fingerprint[key])
        raise SweepSpecError(
            f"study {spec.study!r} exists and was made by a different sweep (its "
            f"{', '.join(changed)} differ from {spec.path}); rerun it unchanged, or start "
            "another with --study NAME"
        )
    return study


# ------------------------------------------------------------------------------------------------
# Progress


def surplus_reason(spec: SweepSpec, study: optuna.Study, trial: optuna.Trial) -> str | None:
    """Why this just-started trial must not run, or None when it should.

    Workers count what is left, then start a trial, so two of them can start one for the last
    slot. The trial whose slot is past the target is the surplus one.
    """
    trials = study.get_trials(deepcopy=False)
    slot = trial_slot(trials, next(t for t in trials if t.number == trial.number))
    if slot >= spec.target_trials():
        return f"the study already has its {spec.target_trials()} trials"
    return None


class ProgressLine:
    """After each trial, one line: its state, metric and parameters, then the study's counts."""

    def __init__(self, spec: SweepSpec) -> None:
        self.spec = spec

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        params = ", ".join(f"{key}={_short(value)}" for key, value in trial.params.items())
        if trial.state == TrialState.COMPLETE:
            outcome = f"{self.spec.metric}={trial.value:.4g}"
        elif trial.state == TrialState.FAIL:
            outcome = trial.user_attrs.get("error", "failed")
        elif SKIPPED in trial.user_attrs:
            outcome = f"skipped, {trial.user_attrs[SKIPPED]}"
        else:
            outcome = f"pruned at epoch {trial.last_step}"
        counts = count_trials(study, self.spec.target_trials())
        print(
            f"[{self.spec.study}] trial {trial.number} {trial.state.name}: {outcome} "
            f"({params}) | {counts.line()}",
            flush=True,
        )


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# ------------------------------------------------------------------------------------------------
# Workers


def run_worker(
    spec: SweepSpec,
    sweep_dir: Path,
    storage_url: str,
    worker_index: int = 0,
    n_workers: int = 1,
) -> Counts:
    """Run trials until the study is complete; what several processes or machines each run.

    Failed trials are recorded and the worker goes on. While trials of other (or killed)
    workers are RUNNING and the storage has a heartbeat, the worker waits and checks for stale
    ones, which come back as queued retries for it to run.
    """
    _quiet_logs()
    storage = open_storage(storage_url, spec)
    study = open_study(spec, storage, worker_index)
    heartbeat = isinstance(storage, RDBStorage) and storage.heartbeat_interval is not None
    objective: Callable[[optuna.Trial], float] | None = None
    while True:
        if heartbeat:
            optuna.storages.fail_stale_trials(study)
            fail_trials_without_heartbeat(study, storage)
        counts = count_trials(study, spec.target_trials())
        if counts.left == 0 and counts.waiting == 0:
            if not (heartbeat and counts.running):
                return counts
            time.sleep(min(spec.heartbeat_interval, 10))
            continue
        # Torch and Lightning are imported once there is a trial to run: resuming a complete
        # study answers at once.
        objective = objective or _make_objective(spec, sweep_dir, n_workers)
        study.optimize(
            objective,
            n_trials=1,
            catch=(Exception,),
            callbacks=[ProgressLine(spec)],
            gc_after_trial=True,
        )


def _make_objective(
    spec: SweepSpec, sweep_dir: Path, n_workers: int
) -> Callable[[optuna.Trial], float]:
    import torch

    from hydralab.sweeps.objective import SweepObjective
    from hydralab.training.runner import quiet_environment

    quiet_environment()
    _quiet_logs()
    if n_workers > 1:  # local workers share the CPU cores instead of each taking them all
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // n_workers))
    return SweepObjective(
        spec, sweep_dir, skip=lambda trial: surplus_reason(spec, trial.study, trial)
    )


def _quiet_logs() -> None:
    """A sweep prints one line per trial; keep Optuna's and Lightning's info logs out of it."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_sweep(
    spec: SweepSpec,
    out: str | Path = DEFAULT_ROOT,
    storage_url: str | None = None,
    workers: int = 1,
) -> Counts:
    """Run (or resume) a sweep with ``workers`` local processes sharing one storage.

    Returns:
        The study's counts at the end.

    Raises:
        RuntimeError: a worker process died (a failed trial does not count: it is recorded).
    """
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    sweep_dir = (Path(out) / spec.study).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    url = resolve_storage_url(storage_url, sweep_dir)
    print(
        f"[{spec.study}] {spec.target_trials()} trials ({spec.sampler}), {workers} worker(s), "
        f"storage {masked(url)}, runs in {sweep_dir}",
        flush=True,
    )
    _quiet_logs()
    # Made here first, so that workers only load it; interrupted trials are queued once.
    study = open_study(spec, open_storage(url, spec))
    for number in requeue_interrupted(study):
        print(f"[{spec.study}] trial {number} was interrupted: queued again", flush=True)
    if workers == 1:
        counts = run_worker(spec, sweep_dir, url)
    else:
        counts = _run_processes(spec, sweep_dir, url, workers)
    print(f"[{spec.study}] finished: {counts.line()}", flush=True)
    return counts


def _run_processes(spec: SweepSpec, sweep_dir: Path, url: str, workers: int) -> Counts:
    # Spawned, not forked: each worker starts clean (its own CUDA context, no shared torch
    # state), and the storage URL travels through a pipe rather than a visible command line.
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=run_worker,
            args=(spec, sweep_dir, url, index, workers),
            name=f"{spec.study}-worker-{index}",
        )
        for index in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            process.terminate()
        raise
    dead = [f"{p.name} (exit code {p.exitcode})" for p in processes if p.exitcode != 0]
    if dead:
        raise RuntimeError(f"sweep worker(s) stopped with an error: {', '.join(dead)}")
    study = optuna.load_study(study_name=spec.study, storage=open_storage(url, spec))
    return count_trials(study, spec.target_trials())
