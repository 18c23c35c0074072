"""Sweeps on SLURM: the `slurm` block of a sweep file, the storage a cluster may use, the job
array's parameters, a worker's requeue of its own interrupted trial; then, on a real single-node
cluster (tests/helpers/slurm.py), a 2-worker sweep submitted through the launcher, and a worker
cancelled mid-trial whose trial is retried after a resubmission."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hydralab.sweeps.slurm import (
    LOGS,
    SlurmWorker,
    cluster_storage,
    executor_parameters,
    requeue_trial_of,
    status,
    stop_at_a_step_on_requeue,
    submit_sweep,
)
from hydralab.sweeps.spec import SweepSpecError, load_spec
from hydralab.sweeps.storage import STORAGE_ENV, StorageError
from hydralab.sweeps.trials import ERROR, OUTPUT_DIR, SEED, SKIPPED, RetryCallback
from tests.helpers.slurm import job_logs, slurm_cluster, wait_for_jobs  # noqa: F401 (a fixture)
from tests.helpers.sweeps import small_spec, write_sweep

# -- the slurm block -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"partiton": "gpu"}, "slurm.partiton: unknown key; expected one of partition, account"),
        ({"time": "4h"}, "slurm.time: must be at least 1 minute, as minutes or D-HH:MM[:SS]"),
        ({"time": 0}, "slurm.time: must be at least 1 minute"),
        ({"time": 1.5}, "slurm.time: must be minutes, or [days-]hours:minutes[:seconds]"),
        ({"gpus": -1}, "slurm.gpus: must be an integer >= 0 (GPUs per worker), got -1"),
        ({"cpus": 0}, "slurm.cpus: must be an integer >= 1 (CPUs per worker), got 0"),
        ({"mem": "16GB"}, "slurm.mem: must be GB as an integer >= 1, or a size such as 16G"),
        ({"setup": "module load cuda"}, "slurm.setup: must be a list of shell lines"),
        ({"options": ["qos=high"]}, "slurm.options: must be a mapping of sbatch options"),
        ("gpu", "slurm: must be a mapping, got 'gpu'"),
    ],
)
def test_a_bad_slurm_block_names_the_file_and_the_key(tmp_path: Path, block, message: str):
    with pytest.raises(SweepSpecError) as error:
        small_spec(tmp_path, slurm=block)
    assert str(error.value).startswith(f"{tmp_path / 'sweep.yaml'}: {message}")


def test_slurm_times_are_read_as_slurm_writes_them(tmp_path: Path):
    """``4:00:00`` is four hours, not YAML 1.1's base-60 number 14400 (read as minutes: 10 days)."""
    path = tmp_path / "sweep.yaml"
    written = small_spec(tmp_path).path.read_text()
    for text, minutes in [("4:00:00", 240), ("1-00:00", 1440), ("0:01:30", 2), ("90", 90)]:
        path.write_text(written + f"slurm:\n  time: {text}\n  mem: 16\n")
        spec = load_spec(path)
        assert spec.slurm.minutes == minutes, text
        assert spec.slurm.memory == "16G"


def test_the_array_takes_its_shape_from_the_slurm_block(tmp_path: Path):
    block = {
        "partition": "gpu",
        "time": "2:00:00",
        "gpus": 1,
        "cpus": 8,
        "mem": "32G",
        "setup": ["module load cuda"],
        "options": {"qos": "high"},
    }
    spec = small_spec(tmp_path, study="curve", slurm=block)
    parameters = executor_parameters(spec, workers=3)
    assert parameters == {
        "job_name": "hydralab-curve",
        "time": 120,
        "cpus_per_task": 8,
        "ntasks_per_node": 1,
        "array_parallelism": 3,
        "setup": ["module load cuda"],
        "partition": "gpu",
        "mem": "32G",
        "gpus_per_node": 1,
        "additional_parameters": {"qos": "high"},
    }
    assert executor_parameters(spec, workers=3, gpus=2)["gpus_per_node"] == 2  # the flag wins
    # without a block: the defaults, and nothing the cluster should choose (partition, memory)
    plain = executor_parameters(small_spec(tmp_path), workers=1)
    assert plain["time"] == 240 and plain["cpus_per_task"] == 1
    assert not {"partition", "mem", "gpus_per_node", "account"} & set(plain)
    # a change from the command line is validated like the file's block
    assert executor_parameters(spec.with_changes(slurm={"cpus": 2}), 1)["cpus_per_task"] == 2
    with pytest.raises(SweepSpecError, match="slurm.cpus: must be an integer >= 1"):
        spec.with_changes(slurm={"cpus": 0})


# -- the storage a cluster may use -----------------------------------------------------------------


def test_a_share_of_a_gpu_is_refused_for_a_slurm_job(tmp_path: Path):
    with pytest.raises(ValueError, match="a SLURM job takes whole GPUs"):
        submit_sweep(small_spec(tmp_path), tmp_path, "journal:///x.log", gpus_per_worker=0.5)


def test_sqlite_is_refused_for_a_cluster_saying_why_and_what_to_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    for given in (None, f"sqlite:///{tmp_path}/study.db"):  # None: the default SQLite file
        with pytest.raises(StorageError) as error:
            cluster_storage(given, tmp_path)
        message = str(error.value)
        assert "SQLite cannot be shared by SLURM jobs" in message and "\n" not in message
        assert "postgresql://" in message and "journal:///" in message


def test_the_jobs_get_a_shared_storage_and_never_a_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    # a relative journal file: the jobs may start in another folder
    url, job_url = cluster_storage("shared/study.log", tmp_path)
    assert url == job_url == f"journal://{tmp_path / 'shared' / 'study.log'}"
    # a server without a password in its URL (PGPASSWORD or ~/.pgpass hold it)
    plain = "postgresql://hydra@db:5432/sweeps"
    assert cluster_storage(plain, tmp_path) == (plain, plain)
    # a password on the command line would be written into the job files: refused
    secret = "postgresql://hydra:s3cret@db:5432/sweeps"
    with pytest.raises(StorageError) as error:
        cluster_storage(secret, tmp_path)
    assert "s3cret" not in str(error.value) and "PGPASSWORD" in str(error.value)
    # from the environment: the jobs inherit it and read it there
    monkeypatch.setenv(STORAGE_ENV, secret)
    assert cluster_storage(None, tmp_path) == (secret, None)


# -- a worker's own interrupted trial --------------------------------------------------------------


def _interrupted(study: optuna.Study, folder: Path, seed: int) -> None:
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.FAIL,
            params={"seed": seed},
            distributions={"seed": optuna.distributions.CategoricalDistribution([0, 1, 2])},
            user_attrs={OUTPUT_DIR: str(folder), SEED: seed, ERROR: "interrupted (Ctrl-C)"},
        )
    )


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_worker_queues_again_its_own_interrupted_trial_once(tmp_path: Path):
    """Two workers stopped together each queue their own trial: neither queues the other's
    (which would make two retries of one point), and asking twice queues nothing more."""
    study = optuna.create_study()
    _interrupted(study, tmp_path / "trial-0000", seed=0)
    _interrupted(study, tmp_path / "trial-0001", seed=1)

    assert requeue_trial_of(study, tmp_path / "trial-0001" / "version_0") == [1]
    assert requeue_trial_of(study, tmp_path / "trial-0001" / "version_0") == []
    assert requeue_trial_of(study, tmp_path / "elsewhere" / "version_0") == []
    (retry,) = study.get_trials(states=[TrialState.WAITING])
    assert RetryCallback.retried_trial_number(retry) == 1
    assert retry.params == {"seed": 1} and retry.user_attrs[SEED] == 1
    assert ERROR not in retry.user_attrs  # the retry has not failed
    assert requeue_trial_of(study, tmp_path / "trial-0000" / "version_0") == [0]


def test_a_requeued_job_runs_the_same_worker_again(tmp_path: Path):
    """submitit's checkpoint at a time limit or preemption resubmits the same call."""
    worker = SlurmWorker(small_spec(tmp_path), tmp_path, "journal:///shared/study.log")
    again = worker.checkpoint(1)
    assert again.function is worker and again.args == (1,)


def test_the_time_limit_signal_requeues_without_exiting_mid_step():
    """submitit's handler exits wherever the worker is (inside torch.save, a failed write);
    after the wrapper the requeue still happens and the SIGTERM that follows stops the fit."""
    calls = []

    def submitit_handler(signum, frame):
        calls.append(signum)
        raise SystemExit(-1)

    before = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        stop_at_a_step_on_requeue()
        signal.getsignal(signal.SIGUSR2)(signal.SIGUSR2, None)  # no SystemExit
        assert calls == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, before)


# -- on a real cluster -----------------------------------------------------------------------------


def _journal(tmp_path: Path) -> str:
    return f"journal://{tmp_path / 'shared' / 'study.log'}"


def _trials(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    from hydralab.sweeps.storage import load_study

    return load_study(url, study).get_trials()


@pytest.mark.slow
@pytest.mark.usefixtures("slurm_cluster")
def test_a_two_worker_sweep_on_slurm_completes_every_point_once(tmp_path: Path, tiny_csv: Path):
    sweep = write_sweep(
        tmp_path / "sweep.yaml",
        tiny_csv,
        {"model.method": ["baseline", "hydranet"], "seed": [0, 1]},
        study="slurm-grid",
        sampler="grid",
        slurm={"cpus": 1, "time": 10},
    )
    spec, out, url = load_spec(sweep), tmp_path / "sweeps", _journal(tmp_path)
    sweep_dir = out / "slurm-grid"

    jobs = submit_sweep(spec, out, url, workers=2)
    assert len(jobs) == 2 and {job.job_id.split("_")[1] for job in jobs} == {"0", "1"}
    wait_for_jobs("slurm-grid", sweep_dir)

    trials = _trials(url, "slurm-grid")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    points = sorted((t.params["model.method"], t.params["seed"]) for t in complete)
    grid = [("baseline", 0), ("baseline", 1), ("hydranet", 0), ("hydranet", 1)]
    assert points == grid, job_logs(sweep_dir)
    assert all(t.state == TrialState.COMPLETE or SKIPPED in t.user_attrs for t in trials)
    # both array tasks ran as workers, each with its log in the sweep folder
    assert len(list((sweep_dir / LOGS).glob("*/*_log.out"))) == 2
    assert "4/4 done (4 complete" in status(spec, out, url)
    # resubmitting a complete study submits nothing
    assert submit_sweep(spec, out, url, workers=2) == []


@pytest.mark.slow
@pytest.mark.usefixtures("slurm_cluster")
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_cancelled_worker_trial_is_retried_after_a_resubmission(tmp_path: Path, tiny_csv: Path):
    """scancel mid-trial: the worker queues its trial again before it exits; resubmitted, the
    sweep completes every point once, and the trial completed before is not run again."""
    sweep = write_sweep(
        tmp_path / "sweep.yaml",
        tiny_csv,
        {"seed": [0, 1, 2]},
        study="slurm-cancel",
        sampler="grid",
        slurm={"cpus": 1, "time": 10},
        overrides={"trainer.max_steps": 80},
    )
    spec, out, url = load_spec(sweep), tmp_path / "sweeps", _journal(tmp_path)
    sweep_dir = out / "slurm-cancel"

    # 1. One worker: once trial 0 is complete and trial 1 has saved a checkpoint, cancel it.
    (job,) = submit_sweep(spec, out, url, workers=1)
    second = sweep_dir / "trials" / "trial-0001" / "version_0" / "checkpoints" / "last.ckpt"
    _wait_until(second.is_file, sweep_dir, "trial 1 never saved a checkpoint")
    assert [t.state for t in _trials(url, "slurm-cancel")][:2] == [
        TrialState.COMPLETE,
        TrialState.RUNNING,
    ]
    first_run = (sweep_dir / "trials" / "trial-0000" / "version_0").stat().st_mtime_ns
    subprocess.run(["scancel", job.job_id], check=True)
    wait_for_jobs("slurm-cancel", sweep_dir, timeout=120)
    trials = _trials(url, "slurm-cancel")
    assert trials[1].state == TrialState.FAIL, job_logs(sweep_dir)
    assert trials[1].user_attrs[ERROR].startswith("interrupted")
    assert "trial 1 was interrupted: queued again" in job_logs(sweep_dir)

    # 2. Resubmitted with two workers: the study completes.
    jobs = submit_sweep(spec, out, url, workers=2)
    assert len(jobs) == 2
    wait_for_jobs("slurm-cancel", sweep_dir)
    trials = _trials(url, "slurm-cancel")
    retries = [t for t in trials if RetryCallback.retried_trial_number(t) == 1]
    assert len(retries) == 1, job_logs(sweep_dir)
    (retry,) = retries
    assert retry.state == TrialState.COMPLETE
    assert retry.params == trials[1].params and retry.user_attrs[SEED] == trials[1].user_attrs[SEED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["seed"] for t in complete) == [0, 1, 2]  # each point exactly once
    # trial 0 was not redone: its run folder is untouched, and it has no second run
    assert (sweep_dir / "trials" / "trial-0000" / "version_0").stat().st_mtime_ns == first_run
    assert not (sweep_dir / "trials" / "trial-0000" / "version_1").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("slurm_cluster")
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_job_at_its_time_limit_is_requeued_and_reruns_its_trial(tmp_path: Path, tiny_csv: Path):
    """submitit's signal before the time limit (USR2; sent here by hand): the job checkpoints,
    requeues itself, and once it starts again runs the interrupted trial with its seed."""
    sweep = write_sweep(
        tmp_path / "sweep.yaml",
        tiny_csv,
        {"seed": [0, 1]},
        study="slurm-requeue",
        sampler="grid",
        slurm={"cpus": 1, "time": 10},
        overrides={"trainer.max_steps": 80},
    )
    spec, out, url = load_spec(sweep), tmp_path / "sweeps", _journal(tmp_path)
    sweep_dir = out / "slurm-requeue"

    (job,) = submit_sweep(spec, out, url, workers=1)
    first = sweep_dir / "trials" / "trial-0000" / "version_0" / "checkpoints" / "last.ckpt"
    _wait_until(first.is_file, sweep_dir, "trial 0 never saved a checkpoint")
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True)
    wait_for_jobs("slurm-requeue", sweep_dir, timeout=240)  # requeued, then done

    logs = job_logs(sweep_dir)
    assert "Requeued job" in logs and "trial 0 was interrupted: queued again" in logs, logs
    trials = _trials(url, "slurm-requeue")
    assert trials[0].state == TrialState.FAIL
    (retry,) = [t for t in trials if RetryCallback.retried_trial_number(t) == 0]
    assert retry.state == TrialState.COMPLETE
    assert retry.params == trials[0].params and retry.user_attrs[SEED] == trials[0].user_attrs[SEED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["seed"] for t in complete) == [0, 1]


def _wait_until(condition, sweep_dir: Path, what: str, timeout: float = 240) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            subprocess.run(["scancel", f"--name=hydralab-{sweep_dir.name}"], check=False)
            pytest.fail(f"{what} within {timeout} s:\n{job_logs(sweep_dir)}")
        time.sleep(0.2)
