"""The Lightning CLI of hydralab: ``fit | validate | test | predict`` with one folder per run.

LightningCLI gives the conventions Lightning users know (``--config``, ``--print_config``,
``class_path``/``init_args``, a ``config.yaml`` saved with each run). On top of it this adds:
one fresh run folder per run (CSV metrics, W&B offline run, checkpoints, predictions), the model's
``method``/``k``/``p`` linked into the data module, a best-epoch checkpoint by a configurable
monitor, and, after ``fit``, a test of that best checkpoint.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger

from hydralab.data.datamodule import HydraDataModule
from hydralab.training.callbacks import PredictionsCSV, TestPredictionsCSV
from hydralab.training.module import HydraModule
from hydralab.training.tracking import WandbSummaryCallback, finish_wandb, make_wandb_logger


@dataclass
class Tracking:
    """Where a run's outputs go and how it appears in W&B.

    Args:
        root: folder holding all runs; each run gets ``root/name/version_N``.
        name: experiment name (the run folder's parent, and the W&B run name prefix).
        project: W&B project.
        group: W&B group (e.g. a sweep's study name).
        tags: W&B tags.
        wandb_mode: ``offline`` (default: no key, no network), ``online`` (needs WANDB_API_KEY
            in the environment) or ``disabled``.
    """

    root: str = "runs"
    name: str = "hydralab"
    project: str = "hydralab"
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"


def claim_run_dir(parent: Path) -> Path:
    """Create and return the first free ``parent/version_N``.

    ``mkdir`` either creates the folder or fails, so two runs starting at the same moment (sweep
    workers) never share one.
    """
    parent.mkdir(parents=True, exist_ok=True)
    number = sum(1 for p in parent.iterdir() if p.name.startswith("version_"))
    while True:
        candidate = parent / f"version_{number}"
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            number += 1


class HydraCLI(LightningCLI):
    """LightningCLI with hydralab's run folders, tracking, links and test-after-fit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.run_dir: Path | None = None
        self.test_metrics: dict[str, float] = {}
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("trainer_defaults", {"callbacks": [TestPredictionsCSV()]})
        super().__init__(HydraModule, HydraDataModule, *args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_class_arguments(Tracking, "tracking")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(PredictionsCSV, "predictions")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/icc_c1",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-{epoch}-{step}",
            }
        )
        for key in ("method", "k", "p"):
            parser.link_arguments(f"model.{key}", f"data.{key}")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        tracking: Tracking = self._get(self.config_init, "tracking")
        self.run_dir = claim_run_dir(Path(tracking.root) / tracking.name)
        loggers: list[Any] = [CSVLogger(self.run_dir, name="", version="")]
        if tracking.wandb_mode != "disabled" and self.subcommand in ("fit", "validate", "test"):
            config = self.config.get(str(self.subcommand), self.config).as_dict()
            loggers.append(
                make_wandb_logger(
                    self.run_dir,
                    project=tracking.project,
                    name=f"{tracking.name}/{self.run_dir.name}",
                    group=tracking.group,
                    job_type=self.model.hparams.method,
                    tags=tracking.tags,
                    mode=tracking.wandb_mode,
                    config=config,
                )
            )
            kwargs.setdefault("callbacks", []).append(WandbSummaryCallback())
        trainer = super().instantiate_trainer(
            logger=loggers, default_root_dir=str(self.run_dir), **kwargs
        )
        # The checkpoint callback's folder follows the run, not Lightning's default location.
        for callback in trainer.callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = str(self.run_dir / "checkpoints")
        return trainer

    def after_fit(self) -> None:
        """Test the best checkpoint, as a paper reports it, when the data has a test split."""
        if not self.datamodule.scans.get("test"):
            return
        checkpoint = self.trainer.checkpoint_callback
        ckpt_path = "best" if checkpoint is not None and checkpoint.best_model_path else None
        results = self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path)
        self.test_metrics = dict(results[0]) if results else {}

    def after_test(self) -> None:
        self.test_metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items()}


def run_cli(args: Sequence[str] | None = None, callbacks: Sequence[Callback] = ()) -> HydraCLI:
    """Run one ``fit | validate | test | predict`` command; W&B is finished whatever happens.

    ``callbacks`` are added to the trainer's (e.g. a sweep's pruning callback, which holds a live
    Optuna trial and so cannot come from a config).
    """
    argv = sys.argv
    if args is not None:
        # Called from Python (demo, sweeps): LightningCLI must not also look at our own argv.
        sys.argv = argv[:1]
    try:
        defaults = {"callbacks": [TestPredictionsCSV(), *callbacks]}
        return HydraCLI(args=list(args) if args is not None else None, trainer_defaults=defaults)
    finally:
        sys.argv = argv
        finish_wandb()


def quiet_environment() -> None:
    """Defaults that keep offline W&B quiet and local; the user's environment wins."""
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")
    # The run folder is ours and already holds config.yaml when the CSV logger first writes.
    warnings.filterwarnings(
        "ignore", message="Experiment logs directory .* exists and is not empty"
    )
