"""Runs that continue: ``fit --ckpt_path last`` goes on in the run's own folder, ``predict``
makes no run folder, and a start that fails or is interrupted before training leaves none."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import pytest
import torch

from hydralab.data.nifti import DatasetError
from hydralab.training.checkpoints import LAST_CHECKPOINT
from hydralab.training.runner import run_cli
from hydralab.training.runs import RunInterrupted
from hydralab.training.tracking import local_run_dirs, run_id

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _fit(csv: Path, root: Path, *extra: str, subcommand: str = "fit") -> list[str]:
    return [
        subcommand,
        f"--config={CONFIGS / 'blobs' / 'hydranet.yaml'}",
        f"--data.csv={csv}",
        "--data.n_train=null",
        "--trainer.val_check_interval=2",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        f"--tracking.root={root}",
        *extra,
    ]


@pytest.mark.slow
def test_ckpt_path_last_continues_the_same_run_folder(tiny_csv: Path, tmp_path: Path):
    root = tmp_path / "runs"
    first = run_cli(_fit(tiny_csv, root, "--trainer.max_steps=4"))
    run = first.run_dir
    before = pd.read_csv(run / "metrics.csv")

    again = run_cli(
        _fit(tiny_csv, root, "--trainer.max_steps=8", "--ckpt_path=last"),
    )
    assert again.run_dir == run and again.continued
    assert [p.name for p in run.parent.iterdir()] == [run.name]  # one folder, no version_1
    last = torch.load(run / "checkpoints" / LAST_CHECKPOINT, weights_only=True)
    assert last["global_step"] == 8
    # metrics.csv holds the whole run: the first part's rows before its checkpoint (step 4)
    # come first, as they were, then the resumed part's.
    metrics = pd.read_csv(run / "metrics.csv")
    kept = before[before["step"] < 4].reset_index(drop=True)
    assert len(kept) > 0
    pd.testing.assert_frame_equal(
        metrics[kept.columns].iloc[: len(kept)].reset_index(drop=True), kept, check_dtype=False
    )
    assert metrics["step"].max() >= 7 and metrics["val/icc_c1"].notna().sum() >= 4
    # Both parts' W&B runs are in the run's folder, as one W&B run: the second resumes the id.
    parts = local_run_dirs(run)
    assert len(parts) == 2 and run_id(parts[0]) == run_id(parts[1])


@pytest.mark.slow
def test_predict_writes_where_asked_and_makes_no_run_folder(
    tiny_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    fit = run_cli(_fit(tiny_csv, tmp_path / "runs", "--trainer.max_steps=2"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    out = tmp_path / "out" / "predictions.csv"
    run_cli(
        [
            "predict",
            f"--config={fit.run_dir / 'config.yaml'}",
            f"--ckpt_path={fit.run_dir / 'checkpoints' / LAST_CHECKPOINT}",
            f"--data.predict_path={tiny_csv.parent / 'images'}",
            f"--predictions.output={out}",
            f"--tracking.root={tmp_path / 'predict-runs'}",
        ]
    )
    assert len(pd.read_csv(out)) == 16
    assert not (tmp_path / "predict-runs").exists()
    assert list(work.iterdir()) == []  # no config.yaml, no lightning_logs


class _CtrlCInSetup(pl.Callback):
    """Ctrl-C while the scans are being read, before the first step."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        raise KeyboardInterrupt


@pytest.mark.slow
def test_a_start_that_fails_or_is_interrupted_leaves_no_run_folder(tiny_csv: Path, tmp_path: Path):
    root = tmp_path / "runs"
    with pytest.raises(RunInterrupted, match="nothing to resume"):
        run_cli(_fit(tiny_csv, root, "--trainer.max_steps=2"), callbacks=[_CtrlCInSetup()])
    assert not list((root / "blobs-hydranet").iterdir())

    table = pd.read_csv(tiny_csv)
    table.loc[0, "image"] = "images/missing.nii.gz"  # found when the scans are read, in setup
    table.to_csv(tiny_csv, index=False)
    with pytest.raises(DatasetError):
        run_cli(_fit(tiny_csv, root, "--trainer.max_steps=2"))
    assert not list((root / "blobs-hydranet").iterdir())
