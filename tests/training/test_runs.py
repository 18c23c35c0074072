"""Run folders: a failed start leaves none behind; a run that computed something keeps its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydralab.training.runs import discard_run_dir


@pytest.mark.parametrize(
    ("files", "trained_steps", "removed"),
    [
        (["config.yaml", "hparams.yaml", "train_subjects.csv", "wandb/run-1/run-1.wandb"], 0, True),
        ([], 0, True),
        (["config.yaml"], 1, False),  # a run that trained keeps its folder
        (["config.yaml", "checkpoints/last.ckpt"], 0, False),
        (["config.yaml", "test_predictions.csv"], 0, False),
        (["config.yaml", "notes.txt"], 0, False),  # whatever it is, it was not ours to delete
    ],
)
def test_discard_run_dir_removes_only_a_folder_with_nothing_computed(
    tmp_path: Path, files: list[str], trained_steps: int, removed: bool
):
    run_dir = tmp_path / "version_0"
    run_dir.mkdir()
    for name in files:
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text("x")
    assert discard_run_dir(run_dir, trained_steps) == removed
    assert run_dir.exists() != removed
    assert tmp_path.is_dir()
