"""Studies: race-safe creation, each distinct grid point queued once and run once with its run
and attributes, failed trials recorded while the sweep goes on, resume without rerunning."""

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
from optuna.trial import TrialState

from hydralab.sweeps.spec import SweepSpecError, load_spec
from hydralab.sweeps.storage import default_storage_url, open_storage
from hydralab.sweeps.study import open_study, queue_grid, queued_points, run_sweep
from hydralab.sweeps.trials import (
    CONFIG,
    ERROR,
    GRID,
    SEED,
    RetryCallback,
    grid_points,
    queued_point,
    requeue_interrupted,
    surplus_reason,
)
from hydralab.training.tracking import local_run_dirs
from tests.helpers.sweeps import write_sweep
from tests.helpers.wandb_log import read_offline_run


def test_workers_creating_one_study_at_once_do_not_crash(tmp_path: Path, tiny_csv: Path):
    """Optuna's schema creation races on a fresh SQLite file; every worker must get the study,
    and each grid point must have one trial to run it, however the workers' queueing raced."""
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
    # Each queued its points; any point queued twice is run by its first trial only.
    spec = load_spec(sweep)
    trials = optuna.load_study(study_name="tiny", storage=url).get_trials()
    runs = [t for t in trials if surplus_reason(trials, t, 2, queued_points(spec)) is None]
    assert sorted(queued_point(t)["seed"] for t in runs) == [0, 1]


def test_a_grid_study_queues_each_distinct_point_once(tmp_path: Path, tiny_csv: Path):
    """One baseline point (without model.k, which it does not sample), one per Hydranet k;
    opening the study again, or after its creator stopped half-way, queues only what is missing."""
    space = {"model.method": ["baseline", "hydranet"], "model.k": [2, 4]}
    spec = load_spec(write_sweep(tmp_path / "sweep.yaml", tiny_csv, space))
    storage = open_storage(default_storage_url(tmp_path), spec)
    study = open_study(spec, storage)
    queued = [queued_point(t) for t in study.trials]
    assert [t.state for t in study.trials] == [TrialState.WAITING] * 3
    assert queued == queued_points(spec)
    assert sorted(queued, key=str) == [
        {"model.method": "baseline"},
        {"model.method": "hydranet", "model.k": 2},
        {"model.method": "hydranet", "model.k": 4},
    ]
    assert len(grid_points(study)) == 3 and study.user_attrs[GRID] == grid_points(study)
    assert open_study(spec, storage) and len(study.get_trials()) == 3  # nothing queued again

    half = spec.with_changes(study="half")
    made = optuna.create_study(study_name="half", storage=storage, direction="maximize")
    made.enqueue_trial(queued_points(half)[1])  # a creator that stopped after one point
    resumed = open_study(half, storage)
    assert sorted(map(str, map(queued_point, resumed.trials))) == sorted(map(str, queued))
    assert queue_grid(half, resumed) == 0


@pytest.mark.slow
def test_grid_sweep_runs_each_point_once_records_failures_and_resumes(
    tmp_path: Path, tiny_csv: Path, capsys: pytest.CaptureFixture[str]
):
    # A scan that is not NIfTI passes the check before the sweep (which reads no image) and
    # fails its trials at set-up; the sweep records them and goes on.
    (tiny_csv.parent / "images" / "garbage.nii.gz").write_bytes(b"not a NIfTI file")
    broken = tiny_csv.with_name("broken.csv")
    broken.write_text(tiny_csv.read_text().replace("s00.nii.gz", "garbage.nii.gz"))
    space = {"model.method": ["baseline", "hydranet"], "data.csv": [str(tiny_csv), str(broken)]}
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
        assert trial.user_attrs[CONFIG]["model.k"] == 1
        assert trial.user_attrs[CONFIG]["model.p"] == 0.0

    for trial in trials:
        if trial.params["data.csv"] == str(broken):
            assert trial.state == TrialState.FAIL
            assert "DatasetError: cannot read scan" in trial.user_attrs[ERROR]
            assert "garbage.nii.gz" in trial.user_attrs[ERROR]
            continue
        assert trial.state == TrialState.COMPLETE
        attrs = trial.user_attrs
        run_dir = Path(attrs["run_dir"])
        assert run_dir.parent == sweep_dir / "trials" / f"trial-{trial.number:04d}"
        assert attrs["best_val_icc_c1"] == pytest.approx(trial.value)
        predictions = pd.read_csv(attrs["test_predictions"])
        assert len(predictions) == 4 and {"test_icc_c1", "test_icc_a1", "test_mse"} <= set(attrs)
        assert attrs[SEED] == trial.number  # no seed in the space: each trial its own
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
