"""What a run prints: step progress with an ETA, rounded metric tables, a closing summary, and
none of Lightning's tips and banners.

Training is counted in optimiser steps (``trainer.max_steps``), so Lightning's per-epoch bar
(``Epoch 5/-2 ... 2/2``) says nothing about how far a run is; :class:`StepProgressBar` counts
steps toward the budget instead. The summary says where everything went, so nobody has to find
the run folder, the best checkpoint or the ``wandb sync`` command in the logs.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import RichProgressBar

VAL_METRIC = "val/icc_c1"
"""The validation metric the bar shows: what the checkpoint and the sweeps select on."""

SIGNIFICANT_DIGITS = 4

LIGHTNING_NOISE = ("💡 Tip:", "GPU available:", "TPU available:", "LOCAL_RANK:")
"""Info lines Lightning prints on every run: an advert, and device banners that repeat the
config (``GPU available but not used``, a warning that applies, is kept)."""

NOISY_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.accelerators.cuda",  # LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [0]
)
"""The loggers those lines come from (a logger's filter does not apply to its children)."""

STEP_BASED_WARNING = r"The number of training batches \(\d+\) is smaller than the logging interval"
"""Lightning warns when an epoch has fewer batches than ``log_every_n_steps``; it logs by global
step across epochs, so at a small N with a step budget nothing is lost and the warning is wrong."""


class _DropLightningNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(LIGHTNING_NOISE)


def quiet_lightning() -> None:
    """Drop Lightning's tip and device banners and its logging-interval warning, nothing else.

    Targeted on purpose: every other Lightning info line and warning still shows.
    """
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLightningNoise) for f in logger.filters):
            logger.addFilter(_DropLightningNoise())
    warnings.filterwarnings("ignore", message=STEP_BASED_WARNING)


class StepProgressBar(RichProgressBar):
    """One bar for the whole fit, in optimiser steps toward ``trainer.max_steps``, with the
    elapsed time, an ETA and the latest validation ICC.

    Lightning's bar restarts every epoch, and an epoch is N/K steps: a few steps at small N.
    A resumed run starts its bar at the checkpoint's step, so the ETA counts what is left.
    """

    def __init__(self, metric: str = VAL_METRIC, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metric = metric

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.is_disabled or self.progress is None:
            return
        if self.train_progress_bar_id is None:
            self._add_steps_task(trainer)
        self.refresh()

    def _add_steps_task(self, trainer: pl.Trainer) -> None:
        if self.progress is None:
            return
        total = trainer.estimated_stepping_batches  # max_steps, else epochs x batches
        style = self.theme.description
        self.train_progress_bar_id = self.progress.add_task(
            f"[{style}]Steps" if style else "Steps", total=total, completed=trainer.global_step
        )

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.is_disabled:
            return
        if self.train_progress_bar_id is None:
            self._add_steps_task(trainer)
        if self.progress is not None and self.train_progress_bar_id is not None:
            self.progress.update(self.train_progress_bar_id, completed=trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()

    def get_metrics(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> dict[str, int | str | float | dict[str, float]]:
        """``train/loss`` and the latest validation metric; not ``v_num`` (the W&B id)."""
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        value = trainer.callback_metrics.get(self.metric)
        if value is not None:
            items[self.metric] = float(value)
        return items


def format_metrics(metrics: Mapping[str, float], digits: int = SIGNIFICANT_DIGITS) -> str:
    """Metrics as aligned ``name  value`` lines, each value to ``digits`` significant digits."""
    if not metrics:
        return ""
    width = max(len(name) for name in metrics)
    return "\n".join(
        f"{name:<{width}}  {float(value):.{digits}g}" for name, value in sorted(metrics.items())
    )


@dataclass
class RunSummary:
    """Where a finished command left its outputs (None: the command made no such thing)."""

    run_dir: Path | None = None
    best_checkpoint: str | None = None
    monitor: str | None = None
    best_score: float | None = None
    test_metrics: Mapping[str, float] | None = None
    test_predictions: Path | None = None
    predictions: Path | None = None
    wandb_offline_run: Path | None = None

    def lines(self) -> list[str]:
        """The summary, one fact a line; only what this run made."""
        rows: list[tuple[str, str]] = []
        if self.run_dir is not None:
            rows.append(("run folder", str(self.run_dir)))
        if self.best_checkpoint:
            score = "" if self.best_score is None else f" ({self.monitor} {self.best_score:.4g})"
            rows.append(("best checkpoint", f"{self.best_checkpoint}{score}"))
        if self.test_metrics:
            values = [
                f"{label} {self.test_metrics[key]:.4g}"
                for key, label in (("test/icc_c1", "ICC(3,1)"), ("test/mse", "MSE"))
                if key in self.test_metrics
            ]
            where = f" ({self.test_predictions})" if self.test_predictions else ""
            rows.append(("test", ", ".join(values) + where))
        if self.predictions is not None:
            rows.append(("predictions", str(self.predictions)))
        if self.wandb_offline_run is not None:
            rows.append(("W&B (offline)", f"upload with: wandb sync {self.wandb_offline_run}"))
        width = max((len(name) for name, _ in rows), default=0)
        return [f"{name:<{width}}  {text}" for name, text in rows]

    def print(self, file: Any = None) -> None:
        lines = self.lines()
        if lines:
            print("\n".join(lines), file=file or sys.stdout)


def wandb_offline_run() -> Path | None:
    """The folder of the active W&B run if it is offline (``wandb sync`` uploads it), else None.

    Read before the run is finished: the active run knows its own folder, whatever mode it fell
    back to.
    """
    wandb = sys.modules.get("wandb")
    run = None if wandb is None else getattr(wandb, "run", None)
    if run is None or not getattr(run, "offline", False):
        return None
    try:
        return Path(run.settings.sync_dir)
    except Exception:  # another wandb version's settings
        return None
