"""Studies: race-safe creation, one trial per distinct grid point with its run and attributes,
failed trials recorded while the sweep goes on, resume without rerunning, storage URLs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.storages import JournalStorage, RDBStorage
from optuna.trial import TrialState

from hydralab.sweeps.spec import SweepSpecError, load_spec
from hydralab.sweeps.storage import (
    default_storage_url,
    fail_trials_without_heartbeat,
    journal_path,
    masked,
    open_storage,
)
from hydralab.sweeps.study import open_study, run_sweep, surplus_reason
from hydralab.sweeps.trials import RetryCallback, count_trials, requeue_interrupted
from hydralab.training.tracking import local_run_dirs, read_offline_run

ROOT = Path(__file__).resolve().parents[2]


def write_sweep(path: Path, csv: Path, space: dict, **extra) -> Path:
    """A sweep over the tiny scans: a few steps of training, validation every epoch."""
    overrides = {
        "data.csv": str(csv),
        "data.n_train": None,
        "data.batch_size": 4,
        "trainer.max_steps": 4,
        "trainer.check_val_every_n_epoch": 1,
        "trainer.val_check_interval": 1.0,
        "trainer.log_every_n_steps": 1,
        "trainer.enable_model_summary": False,
        "tracking.wandb_mode": "disabled",
        **extra.pop("overrides", {}),
    }
    overrides = {key: value for key, value in overrides.items() if key not in space}
    raw = {
        "base_config": str(ROOT / "configs" / "blobs" / "hydranet.yaml"),
        "study": "tiny",
        "overrides": overrides,
        "space": space,
        "heartbeat": {"interval": 1, "grace_period": 2},
        **extra,
    }
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_workers_creating_one_study_at_once_do_not_crash(tmp_path: Path, tiny_csv: Path):
    """Optuna's schema creation races on a fresh SQLite file; every worker must get the study."""
    sweep = write_sweep(tmp_path / "sweep.yaml", tiny_csv, {"seed": [0, 1]})
    url = default_storage_url(tmp_path / "fresh")
    go = tmp_path / "go"
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from hydralab.sweeps.spec import load_spec
        from hydralab.sweeps.storage import open_storage
        from hydralab.sweeps.study import open_study
        spec = load_spec({str(sweep)!r})
        Path({str(tmp_path)!r}, "ready-" + sys.argv[1]).touch()
        while not Path({str(go)!r}).exists():
            time.sleep(0.001)
        study = open_study(spec, open_storage({url!r}, spec))
        print("study", study._study_id)
        """
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", code, str(i)], stdout=subprocess.PIPE, text=True)
        for i in range(3)
    ]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # all imported: release them together
    outputs = [worker.communicate(timeout=60)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0, 0]
    assert all(out.strip() == "study 1" for out in outputs), outputs


@pytest.mark.slow
def test_grid_sweep_runs_each_point_once_records_failures_and_resumes(
    tmp_path: Path, tiny_csv: Path, capsys: pytest.CaptureFixture[str]
):
    space = {
        "model.method": ["baseline", "hydranet"],
        "data.n_train": [6, 99],  # the tiny train split has 8 scans: 99 fails at set-up
    }
    sweep = write_sweep(
        tmp_path / "sweep.yaml",
        tiny_csv,
        space,
        overrides={"tracking.wandb_mode": "offline"},
        tags=["unit"],
    )
    spec = load_spec(sweep)
    assert spec.target_trials() == 4

    counts = run_sweep(spec, out=tmp_path / "sweeps")
    assert (counts.complete, counts.failed, counts.left) == (2, 2, 0)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[tiny]")]
    assert sum(" trial " in line for line in lines) == 4
    assert "4/4 done (2 complete, 0 pruned, 2 failed)" in lines[-1]

    sweep_dir = tmp_path / "sweeps" / "tiny"
    storage = default_storage_url(sweep_dir)
    study = optuna.load_study(study_name="tiny", storage=storage)
    trials = study.get_trials()
    assert len(trials) == 4
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4
    baseline = [t for t in trials if t.params["model.method"] == "baseline"]
    for trial in baseline:  # the base config is Hydranet's (k=4, p=0.1)
        assert trial.user_attrs["config"]["model.k"] == 1
        assert trial.user_attrs["config"]["model.p"] == 0.0

    for trial in trials:
        if trial.params["data.n_train"] == 99:
            assert trial.state == TrialState.FAIL
            assert "n_train=99 is larger than the train split" in trial.user_attrs["error"]
            continue
        assert trial.state == TrialState.COMPLETE
        attrs = trial.user_attrs
        run_dir = Path(attrs["run_dir"])
        assert run_dir.parent == sweep_dir / "trials" / f"trial-{trial.number:04d}"
        assert attrs["best_val_icc_c1"] == pytest.approx(trial.value)
        predictions = pd.read_csv(attrs["test_predictions"])
        assert len(predictions) == 4 and {"test_icc_c1", "test_icc_a1", "test_mse"} <= set(attrs)
        assert attrs["seed"] == trial.number  # no seed in the space: each trial its own
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["seed_everything"] == config["data"]["seed"] == trial.number
        assert config["checkpoint"]["monitor"] == "val/icc_c1"
        assert "study.db" not in (run_dir / "config.yaml").read_text()  # no storage in configs
        (wandb_run,) = local_run_dirs(run_dir)
        record = read_offline_run(wandb_run)["run"]
        assert record["group"] == "tiny"
        assert record["job_type"] == trial.params["model.method"]
        assert set(record["tags"]) == {"unit", "study:tiny", f"trial:{trial.number}"}

    # The same command again: the study is complete, nothing runs.
    again = run_sweep(spec, out=tmp_path / "sweeps")
    assert again == counts
    assert len(optuna.load_study(study_name="tiny", storage=storage).trials) == 4

    # A changed sweep under the same study name is refused rather than mixed in.
    changed = spec.with_changes(overrides={"trainer.max_steps": 5})
    with pytest.raises(SweepSpecError, match=r"'tiny' exists .* overrides differ"):
        run_sweep(changed, out=tmp_path / "sweeps")


def test_journal_storage_and_masked_urls(tmp_path: Path, tiny_csv: Path):
    spec = load_spec(write_sweep(tmp_path / "sweep.yaml", tiny_csv, {"seed": [0, 1, 2]}))
    log = tmp_path / "shared" / "study.log"
    assert journal_path(f"journal://{log}") == log and journal_path(str(log)) == log
    assert journal_path("sqlite:///x.log") is None
    storage = open_storage(f"journal://{log}", spec)
    assert isinstance(storage, JournalStorage) and log.is_file()
    study = open_study(spec, storage)
    assert count_trials(study, spec.target_trials()).left == 3
    assert isinstance(open_storage(default_storage_url(tmp_path), spec), RDBStorage)

    url = "postgresql://hydra:s3cret@db.example.org:5432/sweeps"
    assert "s3cret" not in masked(url) and "db.example.org" in masked(url)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_grid_slots_survive_retries_and_surplus_trials_are_skipped(tmp_path: Path, tiny_csv: Path):
    """Each grid point has one fresh trial; a retry takes its original's point; a trial started
    past the last point (two workers racing for it) is surplus."""
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
        assert surplus_reason(spec, study, trial) is None
        seeds.append(trial.suggest_categorical("seed", [0, 1, 2]))
        study.tell(trial, 0.0)
    assert RetryCallback.retried_trial_number(study.trials[1]) == 0
    assert seeds[1] == seeds[0] and sorted(seeds[1:]) == [0, 1, 2]
    surplus = study.ask()
    assert "already has its 3 trials" in surplus_reason(spec, study, surplus)
    assert count_trials(study, 3).complete == 3 and count_trials(study, 3).failed == 0


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_trial_killed_before_its_first_heartbeat_is_failed_and_queued_once(
    tmp_path: Path, tiny_csv: Path
):
    """Optuna's stale check skips a trial with no heartbeat yet; it must not block the study."""
    spec = load_spec(
        write_sweep(
            tmp_path / "sweep.yaml",
            tiny_csv,
            {"seed": [0, 1]},
            heartbeat={"interval": 1, "grace_period": 1},
        )
    )
    storage = open_storage(default_storage_url(tmp_path), spec)
    study = open_study(spec, storage)
    study.ask()  # RUNNING, and no heartbeat thread ever started
    fail_trials_without_heartbeat(study, storage)
    assert study.trials[0].state == TrialState.RUNNING  # still within the grace period
    time.sleep(1.2)
    fail_trials_without_heartbeat(study, storage)
    fail_trials_without_heartbeat(study, storage)
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.WAITING]
    assert RetryCallback.retried_trial_number(study.trials[1]) == 0


@pytest.mark.slow
def test_resume_reruns_a_trial_a_ctrl_c_failed_but_not_one_that_failed_on_its_own(
    tmp_path: Path, tiny_csv: Path, capsys: pytest.CaptureFixture[str]
):
    """A sweep stopped by Ctrl-C (or a timeout's SIGTERM) records its running trial as FAIL;
    the same command again must finish that point, and only once."""
    spec = load_spec(write_sweep(tmp_path / "sweep.yaml", tiny_csv, {"seed": [0, 1, 2]}))
    sweep_dir = tmp_path / "sweeps" / "tiny"
    study = open_study(spec, open_storage(default_storage_url(sweep_dir), spec))
    seeds = []
    for error in ("interrupted (Ctrl-C or SIGTERM)", "ValueError: NaN loss"):
        trial = study.ask()
        seeds.append(trial.suggest_categorical("seed", [0, 1, 2]))
        trial.set_user_attr("seed", seeds[-1])
        trial.set_user_attr("error", error)
        study.tell(trial, state=TrialState.FAIL)
    interrupted = seeds[0]
    (left,) = {0, 1, 2} - set(seeds)

    counts = run_sweep(spec, out=tmp_path / "sweeps")
    assert "[tiny] trial 0 was interrupted: queued again" in capsys.readouterr().out
    assert (counts.complete, counts.failed, counts.left) == (2, 1, 0)
    trials = optuna.load_study(study_name="tiny", storage=default_storage_url(sweep_dir)).trials
    retry = next(t for t in trials if RetryCallback.retried_trial_number(t) == 0)
    assert retry.state == TrialState.COMPLETE and retry.params == {"seed": interrupted}
    assert retry.user_attrs["seed"] == interrupted and "error" not in retry.user_attrs
    done = sorted(t.params["seed"] for t in trials if t.state == TrialState.COMPLETE)
    assert done == sorted([interrupted, left])
    assert [t.params["seed"] for t in trials if t.state == TrialState.FAIL] == seeds

    # Queued once: a second resume finds the point done and queues nothing.
    assert (
        requeue_interrupted(
            optuna.load_study(study_name="tiny", storage=default_storage_url(sweep_dir))
        )
        == []
    )
    assert run_sweep(spec, out=tmp_path / "sweeps") == counts
