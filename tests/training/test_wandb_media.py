"""What a run puts in W&B beyond scalars, read back from its offline log: the per-scan
predictions of every validation and of the test (a Table and a scatter chart), the best
checkpoint as a model artifact (unless ``tracking.log_model`` is off), a readable run name and
the console."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import pytest

from hydralab.training.outputs import LABEL, PREDICTION, SUBJECT, TEST_PREDICTIONS
from hydralab.training.runner import HydraCLI, run_cli
from hydralab.training.tracking import local_run_dirs
from hydralab.training.wandb_media import COLUMNS
from tests.helpers.wandb_log import logged_tables, read_offline_run

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
STDOUT_MARK = "a line the run printed to stdout"
STDERR_MARK = "a line the run printed to stderr"


class _Prints(pl.Callback):
    """Print one line to each stream while the W&B run is live."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        print(STDOUT_MARK)
        print(STDERR_MARK, file=sys.stderr)


def _fit(tmp_path: Path, csv: Path, *extra: str) -> HydraCLI:
    """Four steps of Hydranet on the tiny scans (8 train, 4 val, 4 test), validating at steps
    2 and 4, with an offline W&B run."""
    args = [
        "fit",
        f"--config={CONFIGS / 'blobs' / 'hydranet.yaml'}",
        f"--data.csv={csv}",
        "--data.n_train=null",
        "--data.batch_size=4",
        "--trainer.max_steps=4",
        "--trainer.val_check_interval=2",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        f"--tracking.root={tmp_path / 'runs'}",
        "--tracking.name=media",
        "--tracking.wandb_mode=offline",
        *extra,
    ]
    return run_cli(args, callbacks=[_Prints()])


def _wandb_run(cli: HydraCLI) -> Path:
    assert cli.run_dir is not None
    (run,) = local_run_dirs(cli.run_dir)
    return run


def test_a_run_logs_predictions_checkpoint_and_console_to_wandb(tmp_path: Path, tiny_csv: Path):
    cli = _fit(tmp_path, tiny_csv, "--tracking.run_name=hydranet-N8-s0")
    folder = _wandb_run(cli)
    run = read_offline_run(folder)
    assert run["run"]["name"] == "hydranet-N8-s0"
    scans = pd.read_csv(tiny_csv)

    # Every validation's predictions, at its step, one row per validation scan.
    val = logged_tables(folder, "val/predictions")
    assert [step for step, _ in val] == [2, 4]
    expected = scans[scans["split"] == "val"].set_index(SUBJECT)[LABEL]
    for _, table in val:
        assert list(table.columns) == list(COLUMNS)
        assert set(table["split"]) == {"val"}
        assert table.set_index(SUBJECT)[LABEL].sort_index().equals(expected.sort_index())
    assert not val[0][1][PREDICTION].equals(val[1][1][PREDICTION])  # two steps, two models

    # The test table is the best checkpoint's test predictions, as the run's CSV holds them.
    ((_, test),) = logged_tables(folder, "test/predictions")
    written = pd.read_csv(cli.run_dir / TEST_PREDICTIONS).set_index(SUBJECT)
    assert set(test["split"]) == {"test"}
    assert set(test[SUBJECT]) == set(written.index) == set(scans[scans["split"] == "test"].subject)
    for _, row in test.iterrows():
        assert row[PREDICTION] == pytest.approx(written.loc[row[SUBJECT], PREDICTION], rel=1e-5)

    # A scatter of prediction against label for both splits.
    for split in ("val", "test"):
        chart = run["charts"][f"{split}/predictions_vs_labels"]["panel_config"]
        assert chart["fieldSettings"] == {"x": LABEL, "y": PREDICTION}

    # The best checkpoint, as a model artifact aliased "best".
    models = [a for a in run["artifacts"] if a["type"] == "model"]
    best = [a for a in models if "best" in a["aliases"]]
    assert len(best) == 1 and best[0]["files"] == ["model.ckpt"]
    best_path = Path(cli.trainer.checkpoint_callback.best_model_path)
    assert best[0]["metadata"]["original_filename"] == best_path.name
    assert best[0]["metadata"]["score"] == pytest.approx(
        float(cli.trainer.checkpoint_callback.best_model_score)
    )

    # The console, both streams.
    assert STDOUT_MARK in run["console"]
    assert STDERR_MARK in run["console"]
    assert STDOUT_MARK in (folder / "files" / "output.log").read_text()


def test_log_model_false_keeps_checkpoints_out_of_wandb(tmp_path: Path, tiny_csv: Path):
    cli = _fit(tmp_path, tiny_csv, "--tracking.log_model=false")
    run = read_offline_run(_wandb_run(cli))
    assert not [a for a in run["artifacts"] if a["type"] == "model"]
    assert Path(cli.trainer.checkpoint_callback.best_model_path).is_file()  # still on disk
    assert run["run"]["name"] == "media/version_0"  # no run_name: the folder's
    assert logged_tables(_wandb_run(cli), "test/predictions")  # the media do not depend on it
