"""A sweep is checked before its first trial: each distinct trial config goes through the
Lightning CLI's check, a refusal is one line naming the sweep file and the point, and nothing
(no sweep folder, no study) is created. A sweep whose every trial failed exits 2 saying why."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from hydralab.cli import main
from hydralab.sweeps import preflight
from hydralab.sweeps.objective import cli_args
from hydralab.sweeps.spec import SweepSpecError, load_spec
from hydralab.sweeps.storage import default_storage_url, open_storage
from hydralab.sweeps.study import SweepFailed, open_study, queued_points, run_sweep
from hydralab.sweeps.trials import ERROR
from tests.helpers.sweeps import write_sweep

ROOT = Path(__file__).resolve().parents[2]
# The tests below finish trials by hand (ask and tell) on a storage with a heartbeat.
ASKED_BY_HAND = pytest.mark.filterwarnings("ignore:Heartbeat of storage")


def _refusal(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line ``hydralab`` printed on stderr (and no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    return line


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        ({"model.kk": [1, 2]}, "space point model.kk=1: unrecognized arguments: --model.kk=1"),
        (
            {"model.method": ["hydranet"], "model.k": ["four"]},
            'space point model.method=hydranet, model.k=four: Parser key "model.k": '
            "Expected a <class 'int'>. Got value: four",
        ),
    ],
    ids=["unknown key", "wrong type"],
)
def test_a_space_the_cli_refuses_stops_the_sweep_before_anything_is_made(
    tmp_path: Path, tiny_csv: Path, space: dict, expected: str
):
    sweep = write_sweep(tmp_path / "sweep.yaml", tiny_csv, space)
    out = tmp_path / "sweeps"
    with pytest.raises(SweepSpecError) as refused:
        run_sweep(load_spec(sweep), out=out)
    assert str(refused.value) == f"{sweep}: {expected}"
    assert not out.exists()


def test_a_wrong_typed_choice_is_found_whichever_point_comes_first(tmp_path: Path, tiny_csv: Path):
    space = {"model.method": ["hydranet"], "model.k": [2, "four"]}
    spec = load_spec(write_sweep(tmp_path / "sweep.yaml", tiny_csv, space))
    with pytest.raises(SweepSpecError, match=r"model\.k=four: Parser key \"model\.k\""):
        preflight.check_sweep(spec, tmp_path / "sweeps" / "tiny", queued_points(spec))


def test_a_set_key_the_cli_does_not_know_is_refused_in_one_line(
    tmp_path: Path, tiny_csv: Path, capsys: pytest.CaptureFixture[str]
):
    sweep = write_sweep(tmp_path / "sweep.yaml", tiny_csv, {"seed": [0, 1]})
    storage = tmp_path / "study.db"
    command = ["sweep", str(sweep), "--out", str(tmp_path / "out"), "--storage"]
    assert main([*command, f"sqlite:///{storage}", "--set", "model.kk=3"]) == 2
    line = _refusal(capsys)
    assert line == (
        f"hydralab: error: {sweep}: the trials' config: unrecognized arguments: --model.kk=3"
    )
    assert not (tmp_path / "out").exists() and not storage.exists()


def test_the_built_in_sweep_before_make_data_says_how_to_make_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    """A fresh checkout: sweeps/learning_curve.yaml reads data/pvs/dataset.csv, not made yet."""
    monkeypatch.chdir(tmp_path)
    sweep = ROOT / "sweeps" / "learning_curve.yaml"
    assert main(["sweep", str(sweep), "--out", "out"]) == 2
    line = _refusal(capsys)
    assert line.startswith(f"hydralab: error: {sweep}: space point model.method=")
    assert line.endswith(
        "dataset CSV not found: data/pvs/dataset.csv (the built-in pvs data: run "
        "`hydralab make-data pvs data/pvs --size 24` first)"
    )
    assert list(tmp_path.iterdir()) == []


def test_each_distinct_config_is_checked_once_as_the_objective_builds_it(
    tmp_path: Path, tiny_csv: Path, monkeypatch: pytest.MonkeyPatch
):
    """40 grid points, 4 configs: the seeds share everything else."""
    space = {
        "model.method": ["baseline", "hydranet"],
        "data.n_train": [4, 8],
        "seed": list(range(10)),
    }
    spec = load_spec(write_sweep(tmp_path / "sweep.yaml", tiny_csv, space))
    assert spec.target_trials() == 40
    sweep_dir = tmp_path / "sweeps" / "tiny"
    checked: list[list[str]] = []
    monkeypatch.setattr("hydralab.training.runner.check_config", checked.append)
    assert preflight.check_sweep(spec, sweep_dir, queued_points(spec)) == 4
    expected = {
        (method, n): cli_args(
            spec,
            spec.trial_overrides({"model.method": method, "data.n_train": n, "seed": 0}, 0),
            sweep_dir,
            0,
        )
        for method in ("baseline", "hydranet")
        for n in (4, 8)
    }
    assert sorted(checked) == sorted(expected.values())
    baseline = expected["baseline", 4]
    assert "--model.k=1" in baseline and "--checkpoint.monitor=val/icc_c1" in baseline

    monkeypatch.undo()  # the real check of the 4 configs takes seconds, not a trial each
    start = time.monotonic()
    assert preflight.check_sweep(spec, sweep_dir, queued_points(spec)) == 4
    assert time.monotonic() - start < 30
    assert not sweep_dir.exists()


def test_a_sampler_is_checked_at_every_choice_and_both_ends_of_every_range(tmp_path: Path):
    space = {
        "model.method": ["baseline", "hydranet"],
        "model.k": {"low": 2, "high": 8},
        "model.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
    }
    sweep = write_sweep(tmp_path / "s.yaml", tmp_path / "x.csv", space, sampler="tpe", n_trials=5)
    spec = load_spec(sweep)
    points = preflight.sampler_points(spec)
    hydranet: dict[str, Any] = {"model.method": "hydranet", "model.lr": 1.0e-4}
    assert points == [
        {"model.method": "baseline", "model.lr": 1.0e-4},
        {**hydranet, "model.k": 2},
        {**hydranet, "model.k": 2},  # k varied with a method that samples it
        {**hydranet, "model.k": 8},
        {"model.method": "baseline", "model.lr": 1.0e-4},
        {"model.method": "baseline", "model.lr": 1.0e-2},
    ]


@ASKED_BY_HAND
def test_a_complete_study_is_not_checked_again(
    tmp_path: Path, tiny_csv: Path, monkeypatch: pytest.MonkeyPatch
):
    """Resuming a finished sweep starts nothing, even after its dataset moved."""
    spec = load_spec(write_sweep(tmp_path / "sweep.yaml", tiny_csv, {"seed": [0, 1]}))
    out = tmp_path / "sweeps"
    study = open_study(spec, open_storage(default_storage_url(out / "tiny"), spec))
    for _ in range(2):
        trial = study.ask()
        trial.suggest_categorical("seed", [0, 1])
        study.tell(trial, 0.5)
    tiny_csv.unlink()
    monkeypatch.setattr("hydralab.training.runner.check_config", _never)
    assert run_sweep(spec, out=out).complete == 2


def _never(args: list[str]) -> None:
    raise AssertionError(f"checked {args}")


def _finish(study: optuna.Study, errors: list[str | None]) -> None:
    """Finish the study's queued trials: FAIL with the error given, or COMPLETE for None."""
    for error in errors:
        trial = study.ask()
        trial.suggest_categorical("seed", [0, 1, 2])
        if error is None:
            study.tell(trial, 0.5)
            continue
        trial.set_user_attr(ERROR, error)
        study.tell(trial, state=TrialState.FAIL)


@ASKED_BY_HAND
def test_a_sweep_whose_every_trial_failed_exits_2_saying_why(
    tmp_path: Path, tiny_csv: Path, capsys: pytest.CaptureFixture[str]
):
    sweep = write_sweep(tmp_path / "sweep.yaml", tiny_csv, {"seed": [0, 1, 2]})
    spec = load_spec(sweep)
    out = tmp_path / "sweeps"
    study = open_study(spec, open_storage(default_storage_url(out / "tiny"), spec))
    _finish(study, ["DatasetError: cannot read scan\nx.nii.gz", "ValueError: NaN loss", "E"])
    with pytest.raises(SweepFailed) as failed:
        run_sweep(spec, out=out)
    assert str(failed.value) == (
        f"{sweep}: all 3 trial(s) of study 'tiny' failed; the first (trial 0): "
        "DatasetError: cannot read scan x.nii.gz"
    )
    capsys.readouterr()
    assert main(["sweep", str(sweep), "--out", str(out)]) == 2
    assert _refusal(capsys).startswith(f"hydralab: error: {sweep}: all 3 trial(s)")


@ASKED_BY_HAND
def test_a_sweep_with_some_trials_failed_returns_normally(tmp_path: Path, tiny_csv: Path):
    spec = load_spec(write_sweep(tmp_path / "sweep.yaml", tiny_csv, {"seed": [0, 1, 2]}))
    out = tmp_path / "sweeps"
    study = open_study(spec, open_storage(default_storage_url(out / "tiny"), spec))
    _finish(study, ["ValueError: NaN loss", None, "ValueError: NaN loss"])
    counts = run_sweep(spec, out=out)
    assert (counts.complete, counts.failed, counts.left) == (1, 2, 0)
