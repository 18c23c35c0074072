"""Studies on a shared storage: created once, resumed by the same command, run by many workers.

Storage (``--storage``, else ``$HYDRALAB_STORAGE``, else a SQLite file in the sweep's folder):

- any SQLAlchemy URL: ``sqlite:///path/study.db`` on one machine, ``postgresql://user@host/db``
  for many (the password from ``PGPASSWORD`` or ``~/.pgpass``, or in the URL given through
  ``$HYDRALAB_STORAGE``; hydralab prints such URLs masked and never writes them anywhere);
- an Optuna journal file, ``journal:///abs/path/study.log`` or any path ending in ``.log``, for a
  shared file system without a database server. A journal has no heartbeat: a trial whose worker
  was killed stays RUNNING there and is not retried.

With a database, a worker records a heartbeat every ``heartbeat.interval`` seconds while a trial
runs. A trial whose heartbeat is older than ``heartbeat.grace_period`` (twice the interval by
default) is failed by the next worker that looks, and Optuna's retry callback queues it again
(same parameters, and the same seed) up to ``heartbeat.max_retry`` times. A worker therefore
waits for RUNNING trials before it exits, so that one killed mid-trial is picked up.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import optuna
from optuna.samplers import BaseSampler, GridSampler, TPESampler
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from hydralab.sweeps.spec import SweepSpec, SweepSpecError

try:  # optuna >= 4.9 renamed the callback and its storage argument
    from optuna.storages import RetryHeartbeatStaleTrialCallback as RetryCallback

    _RETRY_ARGUMENT = "heartbeat_stale_trial_callback"
except ImportError:  # pragma: no cover - older optuna
    from optuna.storages import RetryFailedTrialCallback as RetryCallback

    _RETRY_ARGUMENT = "failed_trial_callback"

DEFAULT_ROOT = "runs/sweeps"
STORAGE_ENV = "HYDRALAB_STORAGE"
T = TypeVar("T")


# ------------------------------------------------------------------------------------------------
# Storage


def default_storage_url(sweep_dir: Path) -> str:
    """The embedded storage: a SQLite file in the sweep's folder."""
    return f"sqlite:///{(Path(sweep_dir) / 'study.db').resolve()}"


def journal_path(url: str) -> Path | None:
    """The file of a journal storage (``journal:///abs/x.log`` or ``path.log``), else None."""
    if url.startswith("journal://"):
        return Path(url.removeprefix("journal://"))
    if "://" not in url and url.endswith(".log"):
        return Path(url)
    return None


def masked(url: str) -> str:
    """The URL fit to print: any password replaced by ``***``."""
    if journal_path(url) is not None:
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable storage URL>"


def open_storage(url: str, spec: SweepSpec) -> BaseStorage:
    """The storage behind ``url``, with heartbeat and retry where the backend has them."""
    journal = journal_path(url)
    if journal is not None:
        from optuna.storages.journal import JournalFileBackend

        journal.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(journal)))
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Workers and their heartbeat threads write to one file: wait for its lock, don't fail.
        engine_kwargs["connect_args"] = {"timeout": 60}
        database = url.split(":///", 1)[-1]
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = RetryCallback(max_retry=spec.max_retry)
        return _retry_races(
            lambda: RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=spec.heartbeat_interval,
                grace_period=spec.grace_period,
                **{_RETRY_ARGUMENT: callback},
            )
        )


def _retry_races(make: Callable[[], T], attempts: int = 12) -> T:
    """Call ``make`` again when another process won a race for the same new database.

    Two workers starting on a fresh SQLite file both create Optuna's tables and its schema
    version row: the loser gets "table ... already exists", a UNIQUE constraint failure or
    "database is locked". The winner's work is then done, so trying again succeeds.
    """
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(1, attempts + 1):
        try:
            return make()
        except (IntegrityError, OperationalError, optuna.exceptions.StorageInternalError) as e:
            racy = isinstance(e, IntegrityError) or any(
                word in str(e) for word in ("already exists", "locked", "UNIQUE")
            )
            if not racy or attempt == attempts:
                raise
            time.sleep(random.uniform(0.05, 0.25) * attempt)
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------------------------
# Study


class DistinctGridSampler(GridSampler):
    """Optuna's GridSampler over the points that train distinct models.

    A grid of method x k holds one baseline point per k, all training the same baseline (k=1).
    ``point_key`` names what a point trains; the grid keeps the first point of each key. The
    grid sampler's guarantees hold: trial number n < grid size runs point n (so concurrent
    workers never share a point), and later trials take the points not yet visited.
    """

    def __init__(
        self,
        search_space: Mapping[str, Sequence[Any]],
        point_key: Callable[[dict[str, Any]], Any],
        seed: int = 0,
    ) -> None:
        super().__init__(search_space, seed=seed)
        seen: set[Any] = set()
        distinct = []
        for values in self._all_grids:
            key = point_key(dict(zip(self._param_names, values, strict=True)))
            if key not in seen:
                seen.add(key)
                distinct.append(values)
        self._all_grids = distinct
        self._n_min_trials = len(distinct)


def make_sampler(spec: SweepSpec, worker_index: int = 0) -> BaseSampler:
    """The sweep's sampler; every worker of a grid must build the same one (same seed)."""
    if spec.sampler == "grid":
        return DistinctGridSampler(spec.grid_space(), spec.grid_point_key, spec.sampler_seed or 0)
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
    study = _retry_races(
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
    stored = study.user_attrs.get("sweep")
    if stored is None:
        study.set_user_attr("sweep", fingerprint)
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
    """Count the study's trials; a FAIL that was queued again counts through its retry."""
    trials = study.get_trials(deepcopy=False)
    retried = {number for trial in trials for number in _retry_history(trial)}
    by_state: dict[TrialState, int] = dict.fromkeys(TrialState, 0)
    for trial in trials:
        if not (trial.state == TrialState.FAIL and trial.number in retried):
            by_state[trial.state] += 1
    return Counts(
        complete=by_state[TrialState.COMPLETE],
        pruned=by_state[TrialState.PRUNED],
        failed=by_state[TrialState.FAIL],
        running=by_state[TrialState.RUNNING],
        waiting=by_state[TrialState.WAITING],
        target=target,
    )


def _retry_history(trial: FrozenTrial) -> list[int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryCallback.retry_history(trial)


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
    return SweepObjective(spec, sweep_dir)


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
    url = storage_url or os.environ.get(STORAGE_ENV) or default_storage_url(sweep_dir)
    print(
        f"[{spec.study}] {spec.target_trials()} trials ({spec.sampler}), {workers} worker(s), "
        f"storage {masked(url)}, runs in {sweep_dir}",
        flush=True,
    )
    if workers == 1:
        counts = run_worker(spec, sweep_dir, url)
    else:
        # Made here first, so the workers only load it.
        _quiet_logs()
        open_study(spec, open_storage(url, spec))
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
