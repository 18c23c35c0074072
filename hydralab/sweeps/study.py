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
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import optuna
from optuna.samplers import BaseSampler, TPESampler
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
GRID_POINT = "hydralab:grid_point"
SKIPPED = "skipped"
"""User attribute of a trial that did not run because another trial holds its point."""
STORAGE_ENV = "HYDRALAB_STORAGE"
T = TypeVar("T")


# ------------------------------------------------------------------------------------------------
# Storage


def default_storage_url(sweep_dir: Path) -> str:
    """The embedded storage: a SQLite file in the sweep's folder."""
    return f"sqlite:///{(Path(sweep_dir) / 'study.db').resolve()}"


def resolve_storage_url(storage_url: str | None, sweep_dir: Path) -> str:
    """The storage a sweep or a report uses: the one given, else ``$HYDRALAB_STORAGE``, else
    the SQLite file in the sweep's folder."""
    return storage_url or os.environ.get(STORAGE_ENV) or default_storage_url(sweep_dir)


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
        callback = ReportingRetry(max_retry=spec.max_retry)
        storage = _retry_races(
            lambda: RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=spec.heartbeat_interval,
                grace_period=spec.grace_period,
                **{_RETRY_ARGUMENT: callback},
            )
        )
    if url.startswith("sqlite"):
        _serialize_sqlite(storage.engine)
    return storage


class ReportingRetry(RetryCallback):
    """Optuna's retry of a trial whose worker stopped, with a progress line saying so."""

    def __init__(self, max_retry: int | None) -> None:
        super().__init__(max_retry=max_retry)
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        tries = len(_retry_history(trial)) + 1
        again = self.max_retry is None or tries <= self.max_retry
        print(
            f"[{study.study_name}] trial {trial.number} FAIL: its worker stopped (no heartbeat); "
            + (f"queued again (retry {tries})" if again else "not retried (heartbeat.max_retry)"),
            flush=True,
        )
        super().__call__(study, trial)


def _serialize_sqlite(engine: Any) -> None:
    """Make each SQLite transaction take the database's write lock as it begins.

    Optuna changes a trial's state by reading it, checking it, then writing it, relying on
    ``SELECT ... FOR UPDATE``, which SQLite ignores; and Python's sqlite3 does not even begin
    a transaction before a SELECT. Two workers could then both take the same queued trial,
    or both fail the same stale one and queue two retries. ``BEGIN IMMEDIATE`` makes those
    read-check-write steps atomic across processes (SQLAlchemy's recipe for pysqlite).
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened while creating the tables come back with the hooks


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
            text = f"{e} {e.__cause__}"  # Optuna wraps the database's error
            racy = isinstance(e, IntegrityError) or any(
                word in text for word in ("already exists", "locked", "UNIQUE")
            )
            if not racy or attempt == attempts:
                raise
            time.sleep(random.uniform(0.05, 0.25) * attempt)
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------------------------
# Study


def trial_slot(trials: Sequence[FrozenTrial], trial: FrozenTrial) -> int:
    """The trial's place among the study's fresh trials: 0, 1, 2, ... without gaps or repeats.

    A trial's number counts every trial created before it, retries included; its slot does
    not count the retries. Numbers are unique, so slots are too, whatever order concurrent
    workers create trials in. A retry takes the slot of the trial it replaces.
    """
    number = _retried_from(trial)
    number = trial.number if number is None else number
    retries_before = sum(1 for t in trials if t.number < number and _retried_from(t) is not None)
    return number - retries_before


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


def make_sampler(spec: SweepSpec, worker_index: int = 0) -> BaseSampler:
    """The sweep's sampler; every worker of a grid builds the same one."""
    if spec.sampler == "grid":
        points = spec.grid()
        # A fixed shuffle: a sweep stopped half-way holds a spread of points, not one corner.
        random.Random(spec.sampler_seed or 0).shuffle(points)
        return GridPointSampler(points)
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
    retried = {number for trial in trials for number in _retry_history(trial)}
    return [
        trial
        for trial in trials
        if SKIPPED not in trial.user_attrs
        and not (trial.state == TrialState.FAIL and trial.number in retried)
    ]


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


def _retried_from(trial: FrozenTrial) -> int | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryCallback.retried_trial_number(trial)


def _retry_history(trial: FrozenTrial) -> list[int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryCallback.retry_history(trial)


INTERRUPTED = "interrupted"
"""How the objective's ``error`` attribute begins for a trial stopped by Ctrl-C or SIGTERM."""


def requeue_interrupted(study: optuna.Study) -> list[int]:
    """Queue again, once, each trial that Ctrl-C or a stopped sweep failed; return their numbers.

    Resuming must finish what an interruption (Ctrl-C, a ``timeout``, a lent machine taken
    back) cut short, as it does for a worker killed outright (the heartbeat's retry). A trial
    that failed on its own (a config the CLI rejects, a NaN loss) stays failed: it would fail
    again. The retry keeps the original's point and seed, as a heartbeat retry does, but not
    its ``error``.
    """
    trials = study.get_trials(deepcopy=False)
    retried = {number for trial in trials for number in _retry_history(trial)}
    queued = []
    for trial in trials:
        interrupted = str(trial.user_attrs.get("error", "")).startswith(INTERRUPTED)
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
                user_attrs={k: v for k, v in trial.user_attrs.items() if k != "error"},
                system_attrs={
                    "failed_trial": trial.number,
                    **trial.system_attrs,
                    "retry_history": history,
                },
            )
        )
        queued.append(trial.number)
    return queued


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


def fail_trials_without_heartbeat(study: optuna.Study, storage: RDBStorage) -> None:
    """Fail, and queue again, RUNNING trials that never recorded a heartbeat.

    Optuna's ``fail_stale_trials`` skips those: a worker killed between creating its trial and
    starting the heartbeat thread leaves a trial RUNNING for ever, and the study could never
    complete. One older than the grace period is treated like a stale one. Optuna has no API
    for heartbeats, so this reads its tables (``trials``, ``trial_heartbeats``) directly.
    """
    from sqlalchemy import DateTime, bindparam, text

    grace = storage.grace_period or 2 * (storage.heartbeat_interval or 0)
    started_before = datetime.now() - timedelta(seconds=grace)  # Optuna stores local time
    query = text(
        "SELECT t.trial_id FROM trials t LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
        "WHERE t.study_id = :study AND t.state = 'RUNNING' AND h.trial_id IS NULL "
        "AND t.datetime_start < :started_before"
    ).bindparams(bindparam("started_before", type_=DateTime()))
    study_id = storage.get_study_id_from_name(study.study_name)
    with storage.engine.connect() as connection:
        rows = connection.execute(query, {"study": study_id, "started_before": started_before})
        trial_ids = [row[0] for row in rows]
    callback = storage.get_heartbeat_stale_trial_callback()
    for trial_id in trial_ids:
        try:
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        if callback is not None:
            callback(study, storage.get_trial(trial_id))


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
