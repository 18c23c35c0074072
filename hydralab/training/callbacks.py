"""Callbacks that write a run's per-scan tables as CSV next to its other outputs.

Reports and statistical tests (Williams' test, bootstrap intervals) need the per-scan test
predictions, not only the aggregate metrics, so every run keeps them; and every run records which
training scans it used (``data.n_train`` and ``data.subset_seed`` pick them), so a result can be
traced to its data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pandas as pd
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from hydralab.training.outputs import (
    IMAGE,
    LABEL,
    PREDICTION,
    PREDICTIONS,
    SUBJECT,
    TEST_PREDICTIONS,
    TRAIN_SUBJECTS,
)


def prediction_table(
    datamodule: Any, split: str, index: Any, prediction: Any, label: Any | None = None
) -> pd.DataFrame:
    """Name each prediction by its scan, in the loader's order."""
    records = datamodule.subjects(split)
    rows = [records[int(i)] for i in index]
    table = pd.DataFrame(
        {
            SUBJECT: [r.subject for r in rows],
            IMAGE: [str(r.image) for r in rows],
            LABEL: [r.label for r in rows] if label is None else list(label),
            PREDICTION: [float(v) for v in prediction],
        }
    )
    return table


class TestPredictionsCSV(pl.Callback):
    """After testing, write (subject, image, label, prediction) to ``test_predictions.csv``."""

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        arrays = getattr(pl_module, "last_predictions", {}).get("test")
        if arrays is None or not trainer.is_global_zero:
            return
        table = prediction_table(
            trainer.datamodule, "test", arrays["index"], arrays["prediction"], arrays["label"]
        )
        path = Path(trainer.log_dir or trainer.default_root_dir) / TEST_PREDICTIONS
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path, index=False)


class TrainSubjectsCSV(pl.Callback):
    """At fit start, write the training scans (subject, image, label) to ``train_subjects.csv``.

    The subset of ``n_train`` scans is drawn from ``data.subset_seed``; writing it down lets a
    run be checked (or its subset compared with another run's) without re-deriving the draw.
    """

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        if datamodule is None or not trainer.is_global_zero:
            return
        records = datamodule.subjects("train")
        table = pd.DataFrame(
            {
                SUBJECT: [r.subject for r in records],
                IMAGE: [str(r.image) for r in records],
                LABEL: [r.label for r in records],
            }
        )
        path = Path(trainer.log_dir or trainer.default_root_dir) / TRAIN_SUBJECTS
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path, index=False)


class PredictionsCSV(BasePredictionWriter):
    """Write (subject, image, prediction) for every predicted scan to one CSV.

    Args:
        output: the CSV ``predict`` writes (default ``predictions.csv`` in the working
            directory).
    """

    def __init__(self, output: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output = output

    def write_on_epoch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        predictions: Any,
        batch_indices: Any,
    ) -> None:
        index = torch.cat([p["index"] for p in predictions])
        values = torch.cat([p["prediction"] for p in predictions])
        table = prediction_table(trainer.datamodule, "predict", index, values).drop(columns="label")
        path = Path(self.output or PREDICTIONS)
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path, index=False)
        self.written = path
