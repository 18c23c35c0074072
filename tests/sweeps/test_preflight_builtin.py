"""A sweep on a built-in dataset not made yet is refused before its first trial, in one line
that gives the exact `hydralab make-data` command, from any folder and by its packaged name."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydralab.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("task", "options"), [("pvs", " --size 24"), ("wmh", " --size 24"), ("lesions", "")]
)
def test_a_sweep_on_missing_built_in_data_exits_2_with_the_make_data_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, task: str, options: str
):
    monkeypatch.chdir(tmp_path)  # an empty folder: no data/ yet
    command = [
        "sweep",
        "learning_curve",
        "--out",
        "out",
        "--set",
        f"data.csv=data/{task}/dataset.csv",
    ]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"hydralab: error: {ROOT / 'sweeps' / 'learning_curve.yaml'}: ")
    assert line.endswith(
        f"dataset CSV not found: data/{task}/dataset.csv (the built-in {task} data: run "
        f"`hydralab make-data {task} data/{task}{options}` first)"
    )
    assert list(tmp_path.iterdir()) == []  # no study, no sweep folder: refused before trial 0


def test_a_missing_dataset_elsewhere_is_named_without_a_make_data_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    monkeypatch.chdir(tmp_path)
    command = ["sweep", "learning_curve", "--out", "out", "--set", "data.csv=mine/dataset.csv"]
    assert main(command) == 2
    line = capsys.readouterr().err.strip()
    assert line.endswith("dataset CSV not found: mine/dataset.csv")
