"""Per-scan predictions in W&B: a table and a prediction-vs-label scatter per evaluation.

Scalars say how well a model agrees with the labels; the predictions say where it fails (the
high labels it underestimates, the one scan it gets wildly wrong). At every validation, and at
the test, the run gets ``<split>/predictions``, a Table of (subject, split, label, prediction),
and ``<split>/predictions_vs_labels``, W&B's scatter of that table. Both are logged against the
global step, so W&B's step slider replays how the validation predictions evolved.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import pandas as pd
from lightning.pytorch.loggers import WandbLogger

from hydralab.training.callbacks import prediction_table
from hydralab.training.outputs import LABEL, PREDICTION, SUBJECT

SPLIT = "split"
COLUMNS = (SUBJECT, SPLIT, LABEL, PREDICTION)
"""The columns of a predictions Table."""
TABLE_KEY = "{split}/predictions"
SCATTER_KEY = "{split}/predictions_vs_labels"


class WandbPredictions(pl.Callback):
    """Log each validation's and the test's per-scan predictions to every W&B logger.

    Reads the arrays :class:`~hydralab.training.module.HydraModule` keeps in
    ``last_predictions`` after each evaluation; the sanity check's few batches are skipped.
    """

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.log_split(trainer, pl_module, "val")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.log_split(trainer, pl_module, "test")

    def log_split(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        arrays = getattr(pl_module, "last_predictions", {}).get(split)
        if not loggers or arrays is None or not trainer.is_global_zero:
            return
        table = predictions_frame(trainer.datamodule, split, arrays)
        for logger in loggers:
            logger.log_metrics(wandb_media(table, split, trainer.global_step), trainer.global_step)


def predictions_frame(datamodule: Any, split: str, arrays: dict[str, Any]) -> pd.DataFrame:
    """One row per scan of ``split``: subject, split, label, prediction."""
    table = prediction_table(
        datamodule, split, arrays["index"], arrays["prediction"], arrays["label"]
    )
    return table.assign(**{SPLIT: split})[list(COLUMNS)]


def wandb_media(table: pd.DataFrame, split: str, step: int) -> dict[str, Any]:
    """The Table and its scatter, keyed as :data:`TABLE_KEY` and :data:`SCATTER_KEY`."""
    import wandb

    rows = wandb.Table(dataframe=table.astype({LABEL: float, PREDICTION: float}))
    title = f"{split}: prediction vs label (step {step})"
    return {
        TABLE_KEY.format(split=split): rows,
        SCATTER_KEY.format(split=split): wandb.plot.scatter(rows, LABEL, PREDICTION, title=title),
    }
