"""Sweeps on a SLURM cluster: the workers submitted with submitit as one job array, every job
working on the study's shared storage.

``hydralab sweep FILE --launcher slurm --workers N`` prepares the study on the login node as a
local sweep does (every trial's config checked, the study made or resumed, interrupted trials
queued again), then submits N jobs, one :class:`SlurmWorker` each, shaped by the sweep file's
``slurm`` block (:class:`~hydralab.sweeps.schema.Slurm`). Each job runs trials until the study is
complete, like a local worker; the submitting command returns once the jobs are queued.

- **Storage.** The jobs run on other machines, so the study must be where they all reach it: a
  PostgreSQL (or other database server) URL, or a journal file on a shared file system.
  SQLite is refused (:func:`cluster_storage`). A URL's password never goes into the job files
  (the sweep folder): it stays in the environment, which the jobs inherit
  (``PGPASSWORD``, ``~/.pgpass`` or ``$HYDRALAB_STORAGE``).
- **Logs.** ``<sweep>/slurm/<job>_<task>_0_log.{out,err}``, next to the trials' runs.
- **Time limits and preemption.** A :class:`SlurmWorker` is checkpointable: when its job nears
  ``slurm.time`` (submitit's USR2 signal, 90 s before) submitit requeues it with the same call,
  up to 3 times in a row. SIGTERM (``scancel``, preemption, or SLURM's own after that requeue)
  stops the running fit at the next step; the worker then queues its interrupted trial again,
  with the same parameters and seed (:func:`requeue_trial_of`), before it exits. A completed
  trial is never rerun. A job killed outright (SIGKILL, a node lost) leaves its trial RUNNING:
  with a database the heartbeat finds it and retries it; a journal has no heartbeat, so prefer
  PostgreSQL on a cluster.
- **Watching.** :func:`status` lists the study's jobs (``squeue``, and ``sacct`` where the cluster
  keeps accounting) and its trial counts.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import submitit
from optuna.trial import FrozenTrial, TrialState
from submitit.slurm.slurm import SlurmJobEnvironment

from hydralab.sweeps.spec import SweepSpec
from hydralab.sweeps.storage import (
    STORAGE_ENV,
    StorageError,
    journal_path,
    load_study,
    masked,
    open_storage,
    resolve_storage_url,
)
from hydralab.sweeps.study import prepare_study, run_worker
from hydralab.sweeps.trials import (
    OUTPUT_DIR,
    Counts,
    count_trials,
    live_trials,
    requeue_interrupted,
    retry_history,
)
from hydralab.training.runs import RunInterrupted

LOGS = "slurm"
"""The folder, in the sweep's, that holds submitit's job files and the jobs' logs."""


def job_name(study: str) -> str:
    """The SLURM job name of a study's workers, by which :func:`status` finds them."""
    return f"hydralab-{study}"


# ------------------------------------------------------------------------------------------------
# Storage


def cluster_storage(storage_url: str | None, sweep_dir: Path) -> tuple[str, str | None]:
    """The storage the login node uses, and the URL the jobs get (None: the jobs read
    ``$HYDRALAB_STORAGE`` from their environment, because the URL holds a password).

    Raises:
        StorageError: SQLite (the default without ``--storage``), which jobs on other nodes
            cannot share; or a password in ``--storage``, which the job files would keep.
    """
    url = resolve_storage_url(storage_url, sweep_dir)
    if url.startswith("sqlite"):
        raise StorageError(
            f"storage {masked(url)}: SQLite cannot be shared by SLURM jobs (other nodes do not "
            "see this file, and its locks are unsafe on network file systems); use --storage "
            "postgresql://USER@HOST/DB (password in PGPASSWORD) or a journal file on a shared "
            "file system, --storage journal:///shared/path/study.log"
        )
    journal = journal_path(url)
    if journal is not None:  # the jobs may start elsewhere than here: an absolute path
        url = f"journal://{journal.resolve()}"
        return url, url
    if _password(url) is None:
        return url, url
    if storage_url is None and os.environ.get(STORAGE_ENV) == url:
        return url, None
    raise StorageError(
        f"storage {masked(url)}: the URL holds a password, which the job files in "
        f"{Path(sweep_dir) / LOGS} would keep; put it in PGPASSWORD or ~/.pgpass, or the whole "
        f"URL in ${STORAGE_ENV}"
    )


def _password(url: str) -> str | None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).password
    except ArgumentError:
        return None


# ------------------------------------------------------------------------------------------------
# The jobs


class SlurmWorker(submitit.helpers.Checkpointable):
    """What each job of the array runs: one sweep worker (:func:`~.study.run_worker`) on the
    shared storage, until the study is complete.

    Checkpointable with submitit's default ``checkpoint``: a job requeued at its time limit or
    on preemption runs the same call again; everything else it needs is in the study.
    """

    def __init__(self, spec: SweepSpec, sweep_dir: Path, storage_url: str | None) -> None:
        """``storage_url`` None: read ``$HYDRALAB_STORAGE`` in the job (a URL with a password)."""
        self.spec = spec
        self.sweep_dir = Path(sweep_dir)
        self.storage_url = storage_url

    def __call__(self, index: int) -> str:
        """Run worker ``index``; return the study's counts line when it is complete."""
        # torch's threads: the CPUs SLURM gave this job, not every core of the node
        os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("SLURM_CPUS_PER_TASK", "1"))
        stop_at_a_step_on_requeue()
        url = resolve_storage_url(self.storage_url, self.sweep_dir)
        try:
            counts = run_worker(self.spec, self.sweep_dir, url, worker_index=index, n_workers=1)
        except RunInterrupted as interrupt:  # scancel, preemption, or a requeue at the time limit
            if interrupt.run_dir is not None:
                study = optuna.load_study(
                    study_name=self.spec.study, storage=open_storage(url, self.spec)
                )
                for number in requeue_trial_of(study, Path(interrupt.run_dir)):
                    print(
                        f"[{self.spec.study}] trial {number} was interrupted: queued again",
                        flush=True,
                    )
            raise
        return counts.line()


def stop_at_a_step_on_requeue() -> None:
    """Let submitit's time-limit handler requeue the job, but not exit from inside the handler.

    submitit answers its signal (USR2) by requeueing the job and calling ``sys.exit`` wherever
    the worker happens to be: inside ``torch.save`` that exit becomes a failed checkpoint write,
    and the trial fails for a reason it does not have. The requeue makes SLURM send SIGTERM,
    which Lightning turns into a stop at the next step; the trial is then queued again as for
    ``scancel`` (:class:`SlurmWorker`).
    """
    signum = getattr(signal, f"SIG{SlurmJobEnvironment.USR_SIG}")
    requeue = signal.getsignal(signum)
    if not callable(requeue):
        return

    def requeue_without_exit(number: int, frame: Any) -> None:
        try:
            requeue(number, frame)
        except SystemExit:
            print("[hydralab] time limit near: job requeued, stopping at the next step", flush=True)
        except submitit.core.utils.UncompletedJobError as error:  # out of requeues
            print(f"[hydralab] time limit near: {error}", flush=True)  # SIGTERM follows

    signal.signal(signum, requeue_without_exit)


def requeue_trial_of(study: optuna.Study, run_dir: Path) -> list[int]:
    """Queue again the interrupted trial that trained in ``run_dir``; return its number (or
    nothing, when no such trial is found or it was queued again already).

    Only that trial: the worker that ran it is the one process that knows it stopped, so no
    two workers queue it twice (which :func:`~.trials.requeue_interrupted` on the whole study,
    run by several jobs at once, could). The retry is the one ``requeue_interrupted`` makes: same
    parameters and seed, counted instead of the failed trial.
    """
    trials = study.get_trials(deepcopy=False)
    folder = str(Path(run_dir).parent)  # the trial's output_dir holds its version_0
    own = next((t for t in trials if t.user_attrs.get(OUTPUT_DIR) == folder), None)
    if own is None:
        return []
    return requeue_interrupted(_OneTrial(study, own, trials))  # type: ignore[arg-type]


class _OneTrial:
    """A study as :func:`~.trials.requeue_interrupted` reads it, narrowed to one trial and its
    retries (so that it sees whether that trial was queued again already)."""

    def __init__(self, study: optuna.Study, trial: FrozenTrial, trials: Sequence[FrozenTrial]):
        self._study = study
        self._trials = [trial, *(t for t in trials if trial.number in retry_history(t))]

    def get_trials(self, deepcopy: bool = True) -> list[FrozenTrial]:
        return list(self._trials)

    def add_trial(self, trial: FrozenTrial) -> None:
        self._study.add_trial(trial)


def executor_parameters(spec: SweepSpec, workers: int, gpus: int | None = None) -> dict[str, Any]:
    """The sbatch parameters of the array (submitit's ``SlurmExecutor`` names), from the
    sweep file's ``slurm`` block; ``gpus`` (``--gpus-per-worker``) replaces ``slurm.gpus``."""
    slurm = spec.slurm
    gpus = slurm.gpus if gpus is None else gpus
    parameters: dict[str, Any] = {
        "job_name": job_name(spec.study),
        "time": slurm.minutes,
        "cpus_per_task": slurm.cpus,
        "ntasks_per_node": 1,
        "array_parallelism": workers,
        "setup": list(slurm.setup),
    }
    optional = {
        "partition": slurm.partition,
        "account": slurm.account,
        "mem": slurm.memory,
        "gpus_per_node": gpus or None,
    }
    parameters.update({key: value for key, value in optional.items() if value is not None})
    if slurm.options:
        parameters["additional_parameters"] = dict(slurm.options)
    return parameters


def submit_sweep(
    spec: SweepSpec,
    out: str | Path,
    storage_url: str | None = None,
    workers: int = 1,
    gpus_per_worker: float | None = None,
) -> list[submitit.Job[str]]:
    """Prepare the study here, then submit ``workers`` jobs; return them (none when the study is
    already complete). ``gpus_per_worker`` (``--gpus-per-worker``) replaces ``slurm.gpus``.

    Raises:
        StorageError: the storage cannot be shared by the jobs (see :func:`cluster_storage`),
            or cannot be opened.
        SweepSpecError: a trial's config is refused, or the study was made by another sweep.
        ValueError: ``workers`` below 1, a share of a GPU, or no ``sbatch`` here to submit with.
    """
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if gpus_per_worker is not None and not float(gpus_per_worker).is_integer():
        raise ValueError(
            f"--gpus-per-worker {gpus_per_worker:g}: a SLURM job takes whole GPUs (slurm.gpus)"
        )
    if shutil.which("sbatch") is None:
        raise ValueError("--launcher slurm: no sbatch on this machine (submit from a login node)")
    sweep_dir = (Path(out) / spec.study).resolve()
    url, job_url = cluster_storage(storage_url, sweep_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per step, as a local sweep
    print(
        f"[{spec.study}] {spec.target_trials()} trials ({spec.sampler}), {workers} SLURM job(s), "
        f"storage {masked(url)}, runs in {sweep_dir}",
        flush=True,
    )
    counts = _prepare(spec, sweep_dir, url)
    if counts.left == 0 and counts.running == 0:
        print(f"[{spec.study}] nothing to submit: {counts.line()}", flush=True)
        return []
    executor = submitit.SlurmExecutor(folder=sweep_dir / LOGS / "%j")
    gpus = None if gpus_per_worker is None else int(gpus_per_worker)
    executor.update_parameters(**executor_parameters(spec, workers, gpus))
    jobs = executor.map_array(SlurmWorker(spec, sweep_dir, job_url), range(workers))
    array = jobs[0].job_id.split("_")[0]
    print(
        f"[{spec.study}] submitted job array {array} ({workers} worker(s)); logs in "
        f"{sweep_dir / LOGS}; watch with: hydralab sweep {spec.path} --status",
        flush=True,
    )
    return jobs


def _prepare(spec: SweepSpec, sweep_dir: Path, url: str) -> Counts:
    """What a local sweep does before its workers start (:func:`~.study.prepare_study`), and
    the study's counts after it."""
    return count_trials(prepare_study(spec, sweep_dir, url), spec.target_trials())


# ------------------------------------------------------------------------------------------------
# Watching


def slurm_jobs(study: str) -> list[str]:
    """The study's jobs, one line each: queued and running ones from ``squeue``, finished ones
    from ``sacct`` where the cluster keeps accounting. Empty without SLURM commands."""
    name = job_name(study)
    lines: list[str] = []
    if shutil.which("squeue"):
        queued = _run(["squeue", "--noheader", f"--name={name}", "--format=%i|%T|%M|%l|%R"])
        for row in queued:
            job, state, elapsed, limit, where = row.split("|", 4)
            lines.append(f"{job:>12}  {state:<10} {elapsed:>10} of {limit:<10} {where}")
    if shutil.which("sacct"):
        live = {line.split()[0] for line in lines}
        command = ["sacct", "--noheader", "--parsable2", "--allocations", f"--name={name}"]
        finished = _run([*command, "--starttime=now-7days", "--format=JobID,State,Elapsed"])
        for row in finished:
            job, state, elapsed = [*row.split("|"), "", ""][:3]
            if job and job not in live:
                lines.append(f"{job:>12}  {state:<10} {elapsed:>10}")
    return lines


def _run(command: list[str]) -> list[str]:
    """A SLURM command's output lines; none when it fails (no accounting: sacct refuses)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0:
        return []
    return [line for line in done.stdout.splitlines() if line.strip()]


def status(spec: SweepSpec, out: str | Path, storage_url: str | None = None) -> str:
    """What ``hydralab sweep FILE --status`` prints: the study's SLURM jobs (if any), its trial
    counts, and its running trials. Reads the storage only; works for local sweeps too.

    Raises:
        StorageError: the storage cannot be reached, or its file does not exist.
        ValueError: the storage holds no such study (yet).
    """
    sweep_dir = (Path(out) / spec.study).resolve()
    url = resolve_storage_url(storage_url, sweep_dir)
    study = load_study(url, spec.study)
    jobs = slurm_jobs(spec.study)
    lines = [f"[{spec.study}] storage {masked(url)}, runs in {sweep_dir}"]
    lines.append(f"SLURM jobs ({job_name(spec.study)}): {len(jobs) if jobs else 'none'}")
    lines += [f"  {job}" for job in jobs]
    trials = live_trials(study.get_trials(deepcopy=False))
    lines.append(f"trials: {count_trials(study, spec.target_trials()).line()}")
    for trial in trials:
        if trial.state == TrialState.RUNNING:
            params = ", ".join(f"{key}={value}" for key, value in trial.params.items())
            started = f"{trial.datetime_start:%Y-%m-%d %H:%M}" if trial.datetime_start else "?"
            lines.append(f"  trial {trial.number} RUNNING since {started} ({params})")
    return "\n".join(lines)
