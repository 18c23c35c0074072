"""The sweep engine: open a study, hand its trials to workers, and run them until it is complete.

Storage URLs live in :mod:`.storage`, trial bookkeeping (attributes, counts, retries) in
:mod:`.trials`. With a database storage, a worker waits for RUNNING trials before it exits, so
that one killed mid-trial (its heartbeat stale) is picked up again by a live worker.

A grid study queues each of its distinct points once (Optuna's ``enqueue_trial``) and workers
take them from the queue; a sampler's study (TPE) draws a fresh trial each time. A study is
complete when its finished trials (COMPLETE, PRUNED, or FAIL and not retried) reach the target:
every distinct grid point, or ``n_trials``. Running the same command again resumes a study and
starts nothing once it is complete.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from hydralab.sweeps.artifacts import record_store
from hydralab.sweeps.devices import assignment_line, run_with_environment, worker_environments
from hydralab.sweeps.preflight import check_sweep, needs_check, sampler_points
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
    ERROR,
    GRID,
    SKIPPED,
    SWEEP,
    Counts,
    count_trials,
    live_trials,
    queued_point,
    requeue_interrupted,
    surplus_reason,
)


class SweepFailed(ValueError):
    """Every trial of a sweep failed: one line saying how many, and why the first did."""


def grid_order(spec: SweepSpec) -> list[dict[str, Any]]:
    """The grid's distinct points in the order they run; the same for every worker.

    A fixed shuffle: a sweep stopped half-way holds a spread of points, not one corner.
    """
    points = spec.grid()
    random.Random(spec.sampler_seed or 0).shuffle(points)
    return points


def queued_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """The parameters a grid study queues: its first ``target`` points, each as a trial samples
    it (a baseline point without ``model.k`` and ``model.p``)."""
    points = grid_order(spec)[: spec.target_trials()]
    return [spec.sample(lambda dim, point=point: point[dim.key]) for point in points]


def queue_grid(spec: SweepSpec, study: optuna.Study) -> int:
    """Queue each grid point no trial holds yet; return how many were queued.

    Done on every open, so a study whose creator stopped half-way gets its full queue. Two
    processes queueing at once can both queue a point (``skip_if_exists`` reads, then
    writes); the later trial is skipped when it starts (:func:`~.trials.surplus_reason`).
    """
    held = [queued_point(trial) or trial.params for trial in study.get_trials(deepcopy=False)]
    added = 0
    for params in queued_points(spec):
        if params not in held:
            study.enqueue_trial(params, skip_if_exists=True)
            added += 1
    return added


def make_sampler(spec: SweepSpec, worker_index: int = 0) -> BaseSampler:
    """The sweep's sampler. A grid's trials take their values from the queue, so its sampler
    draws nothing."""
    seed = None if spec.sampler_seed is None else spec.sampler_seed + worker_index
    if spec.sampler == "grid":
        return RandomSampler(seed=seed)
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
    if study.metric_names != [spec.metric]:  # the dashboard's name for the objective value
        with warnings.catch_warnings():  # experimental since Optuna 3.2, still in 5.x
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([spec.metric])
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
    if spec.sampler == "grid":
        queue_grid(spec, study)
    return study


# ------------------------------------------------------------------------------------------------
# Progress


class ProgressLine:
    """After each trial, one line: its state, metric and parameters, then the study's counts."""

    def __init__(self, spec: SweepSpec) -> None:
        self.spec = spec

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        params = ", ".join(f"{key}={_short(value)}" for key, value in trial.params.items())
        if trial.state == TrialState.COMPLETE:
            outcome = f"{self.spec.metric}={trial.value:.4g}"
        elif trial.state == TrialState.FAIL:
            outcome = trial.user_attrs.get(ERROR, "failed")
        elif SKIPPED in trial.user_attrs:
            outcome = f"skipped, {trial.user_attrs[SKIPPED]}"
        else:
            outcome = f"pruned at step {trial.last_step}"
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
    record_store(study, sweep_dir)
    heartbeat = isinstance(storage, RDBStorage) and storage.heartbeat_interval is not None
    objective: Callable[[optuna.Trial], float] | None = None
    while True:
        if heartbeat:
            optuna.storages.fail_stale_trials(study)
            fail_trials_without_heartbeat(study, storage)
        counts = count_trials(study, spec.target_trials())
        if counts.left == 0:  # a queued trial past the target (a smaller n_trials) stays queued
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
    points = queued_points(spec) if spec.sampler == "grid" else None

    def skip(trial: optuna.Trial) -> str | None:
        trials = trial.study.get_trials(deepcopy=False)
        frozen = next(t for t in trials if t.number == trial.number)
        return surplus_reason(trials, frozen, spec.target_trials(), points)

    return SweepObjective(spec, sweep_dir, skip=skip)


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
    gpus_per_worker: float | None = None,
) -> Counts:
    """Run (or resume) a sweep with ``workers`` local processes sharing one storage.

    Before anything is created (the sweep's folder, the study), the config of every trial to
    run is checked (:mod:`.preflight`); a complete study is not checked again.

    Returns:
        The study's counts at the end; some trials may have failed (their progress lines and
        ``error`` attributes say why).

    Raises:
        SweepSpecError: a trial's config is refused, or the study was made by another sweep.
        StorageError: the storage cannot be opened.
        SweepFailed: every trial failed.
        RuntimeError: a worker process died (a failed trial does not count: it is recorded).
    """
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    sweep_dir = (Path(out) / spec.study).resolve()
    url = resolve_storage_url(storage_url, sweep_dir)
    print(
        f"[{spec.study}] {spec.target_trials()} trials ({spec.sampler}), {workers} worker(s), "
        f"storage {masked(url)}, runs in {sweep_dir}",
        flush=True,
    )
    _quiet_logs()
    prepare_study(spec, sweep_dir, url)
    if workers == 1 and gpus_per_worker is None:
        counts = run_worker(spec, sweep_dir, url)
    else:
        counts = _run_processes(spec, sweep_dir, url, workers, gpus_per_worker)
    print(f"[{spec.study}] finished: {counts.line()}", flush=True)
    if counts.failed and not counts.complete and not counts.pruned:
        study = optuna.load_study(study_name=spec.study, storage=open_storage(url, spec))
        raise SweepFailed(_all_failed(spec, study, counts.failed))
    return counts


def prepare_study(spec: SweepSpec, sweep_dir: Path, url: str) -> optuna.Study:
    """What runs once before any worker starts (here, or on a cluster's login node): check
    every trial's config, make or resume the study so that workers only load it, and queue
    interrupted trials again (in one process, so once)."""
    if needs_check(spec, url):
        points = queued_points(spec) if spec.sampler == "grid" else sampler_points(spec)
        checked = check_sweep(spec, sweep_dir, points)
        print(f"[{spec.study}] {checked} distinct config(s) checked", flush=True)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(spec, open_storage(url, spec))
    for number in requeue_interrupted(study):
        print(f"[{spec.study}] trial {number} was interrupted: queued again", flush=True)
    return study


def _all_failed(spec: SweepSpec, study: optuna.Study, failed: int) -> str:
    """The one line of :class:`SweepFailed`: how many trials failed, and the first's error."""
    trials = [t for t in live_trials(study.get_trials()) if t.state == TrialState.FAIL]
    first = min(trials, key=lambda trial: trial.number)
    error = " ".join(str(first.user_attrs.get(ERROR, "no error recorded")).split())
    return (
        f"{spec.path}: all {failed} trial(s) of study {spec.study!r} failed; "
        f"the first (trial {first.number}): {error}"
    )


def _run_processes(
    spec: SweepSpec, sweep_dir: Path, url: str, workers: int, gpus_per_worker: float | None
) -> Counts:
    # Spawned, not forked: each worker starts clean (its own CUDA context, no shared torch
    # state), and the storage URL travels through a pipe rather than a visible command line.
    environments = worker_environments(workers, gpus_per_worker)  # each worker its own GPUs
    assigned = assignment_line(environments)
    if assigned:
        print(f"[{spec.study}] {assigned}", flush=True)
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=run_with_environment,
            args=(environments[index], run_worker, spec, sweep_dir, url, index, workers),
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
