"""The Lightning CLI of hydralab: ``fit | validate | test | predict`` with one folder per run.

LightningCLI gives the conventions Lightning users know (``--config``, ``--print_config``,
``class_path``/``init_args``, a ``config.yaml`` saved with each run). On top of it this adds:
one fresh run folder per run (CSV metrics, W&B offline run, checkpoints, predictions), the model's
``method``/``k``/``p`` linked into the data module, a best-epoch checkpoint by a configurable
monitor, and, after ``fit``, a test of that best checkpoint.

Work is not lost quietly (docs/robustness.md): a run folder that cannot be created stops the run
before any scan is read; checkpoints are written atomically (hydralab.training.checkpoints);
Ctrl-C keeps ``last.ckpt``, and ``--ckpt_path last`` resumes from the newest ``last.ckpt`` of the
same ``tracking.root/name``. Checkpoints are loaded with ``weights_only=True`` unless
``--weights_only=false`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import signal
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger

from hydralab.data.datamodule import HydraDataModule
from hydralab.training.callbacks import PredictionsCSV, TestPredictionsCSV, TrainSubjectsCSV
from hydralab.training.checkpoints import (
    CKPT_KEYWORDS,
    LAST_CHECKPOINT,
    AtomicCheckpointIO,
    RunCheckpoint,
    check_weights,
    find_last_checkpoint,
    read_checkpoint,
)
from hydralab.training.module import HydraModule
from hydralab.training.runs import RunFolderError, RunInterrupted, claim_run_dir, discard_run_dir
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


class ConfigRejected(ValueError):
    """The Lightning CLI rejected the arguments or config; the message is its one-line error.

    Raised by :func:`run_cli` with ``exit_on_error=False`` (a sweep trial), where the CLI would
    otherwise print its usage and exit.
    """


def run_outputs() -> list[Callback]:
    """The callbacks that write what every run folder holds beside its checkpoints: the
    training subjects it used and its per-scan test predictions."""
    return [TrainSubjectsCSV(), TestPredictionsCSV()]


class HydraCLI(LightningCLI):
    """LightningCLI with hydralab's run folders, tracking, links and test-after-fit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.run_dir: Path | None = None
        self.checkpoint: tuple[str, dict[str, Any]] | None = None  # --ckpt_path, its weights
        self.test_metrics: dict[str, float] = {}
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("trainer_defaults", {"callbacks": run_outputs()})
        try:
            super().__init__(HydraModule, HydraDataModule, *args, **kwargs)
        except Exception:
            # No litter: a start that failed before its first step leaves no run folder.
            if self.run_dir is not None:
                finish_wandb(1)  # W&B writes into the folder until its run is finished
                trainer = getattr(self, "trainer", None)
                discard_run_dir(self.run_dir, trainer.global_step if trainer else 0)
            raise

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_class_arguments(Tracking, "tracking")
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
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

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, then make checkpoint loading safe and ``--ckpt_path last`` find the last run.

        The resolved values go into the saved ``config.yaml``: it names the checkpoint resumed.
        """
        try:
            super().parse_arguments(parser, args)
        except argparse.ArgumentError as error:  # only with parser_kwargs exit_on_error=False
            lines = (line.strip() for line in str(error).splitlines())
            raise ConfigRejected(" ".join(line for line in lines if line)) from None
        subcommand = self.config.get("subcommand")
        if subcommand is None:
            return
        section = self.config[subcommand]
        # torch >= 2.6 already defaults to weights_only=True; say so rather than rely on it.
        if section.get("weights_only") is None:
            section["weights_only"] = True
        if section.get("ckpt_path") == "last":
            parent = Path(section["tracking"]["root"]) / section["tracking"]["name"]
            last = find_last_checkpoint(parent)
            if last is not None:
                section["ckpt_path"] = str(last)
            elif subcommand == "fit":
                # Lightning's convention: "last" with nothing to resume trains from scratch.
                warnings.warn(
                    f"--ckpt_path=last: no {LAST_CHECKPOINT} in {parent}/version_*/checkpoints; "
                    "training from scratch",
                    UserWarning,
                    stacklevel=2,
                )
                section["ckpt_path"] = None
            else:
                raise RunFolderError(
                    f"--ckpt_path=last: no {LAST_CHECKPOINT} in {parent}/version_*/checkpoints"
                )
        path = section.get("ckpt_path")
        if path is None and subcommand != "fit":  # an untrained model's numbers look like results
            raise ConfigRejected(f"{subcommand} needs --ckpt_path (a checkpoint file, or 'last')")
        if path is not None and str(path) not in CKPT_KEYWORDS and "://" not in str(path):
            # Before Lightning reads the saved hyperparameters from it: which file, what is wrong.
            init_args = inspect.signature(HydraModule).parameters
            safe = section.get("weights_only") is not False
            saved = read_checkpoint(path, subcommand == "fit", init_args, safe)["state_dict"]
            self.checkpoint = (path, saved)

    def check_ckpt_path(self) -> None:
        """Refuse weights that do not fit the model before the run folder is claimed."""
        if self.checkpoint is not None:
            check_weights(*self.checkpoint, self.model.state_dict())
            self.checkpoint = None

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        self.check_ckpt_path()
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
                    job_type=self.model.sets.method,
                    tags=tracking.tags,
                    mode=tracking.wandb_mode,
                    config=config,
                )
            )
            # LightningCLI lets a ``callbacks`` keyword replace the config's trainer.callbacks
            # (a plateau rule, early stopping): add to them instead.
            configured = self._get(self.config_init, "trainer", default={}).get("callbacks")
            configured = _as_list(configured)
            kwargs["callbacks"] = [
                *configured,
                *kwargs.get("callbacks", []),
                WandbSummaryCallback(),
            ]
        plugins = self._get(self.config_init, "trainer", default={}).get("plugins") or []
        plugins = _as_list(plugins)
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            plugins.append(AtomicCheckpointIO())
        trainer = super().instantiate_trainer(
            logger=loggers, default_root_dir=str(self.run_dir), plugins=plugins, **kwargs
        )
        # The checkpoint callback's folder follows the run, not Lightning's default location.
        for callback in trainer.callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = str(self.run_dir / "checkpoints")
        return trainer

    def _run_subcommand(self, subcommand: str) -> None:
        """Run the subcommand; Ctrl-C becomes :class:`RunInterrupted` instead of ``exit(1)``.

        Lightning answers Ctrl-C by shutting down gracefully, ignoring further SIGINTs, and
        calling ``sys.exit(1)``; a sweep would take that for a rejected config and go on with
        Ctrl-C disabled.
        """
        try:
            super()._run_subcommand(subcommand)
        except SystemExit:
            if not self.trainer.interrupted:
                raise
            checkpoints = self.run_dir / "checkpoints" if self.run_dir else None
            last = checkpoints / LAST_CHECKPOINT if checkpoints else None
            raise RunInterrupted(self.run_dir, last if last and last.is_file() else None) from None

    def after_fit(self) -> None:
        """Test the best checkpoint, as a paper reports it, when the data has a test split."""
        if not self.datamodule.scans.get("test"):
            return
        checkpoint = self.trainer.checkpoint_callback
        ckpt_path = "best" if checkpoint is not None and checkpoint.best_model_path else None
        results = self.trainer.test(
            self.model, datamodule=self.datamodule, ckpt_path=ckpt_path, weights_only=True
        )
        self.test_metrics = dict(results[0]) if results else {}

    def after_test(self) -> None:
        self.test_metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items()}


def run_cli(
    args: Sequence[str] | None = None,
    callbacks: Sequence[Callback] = (),
    exit_on_error: bool = True,
) -> HydraCLI:
    """Run one ``fit | validate | test | predict`` command; W&B is finished whatever happens.

    ``callbacks`` are added to the trainer's (e.g. a sweep's pruning callback, which holds a live
    Optuna trial and so cannot come from a config).

    A config the CLI rejects prints the usage and exits with 2 (the command line's convention);
    with ``exit_on_error=False`` it raises :class:`ConfigRejected` instead, so a caller that runs
    many configs (a sweep) records the error and goes on.

    Ctrl-C: from the command line (``args`` None) the resume hint is printed and the process
    exits with 130; a Python caller gets :class:`RunInterrupted`. Either way the SIGINT handler
    Lightning switched off is restored, and the W&B run is marked as not successful.
    """
    argv = sys.argv
    if args is not None:
        # Called from Python (demo, sweeps): LightningCLI must not also look at our own argv.
        sys.argv = argv[:1]
    sigint = signal.getsignal(signal.SIGINT)
    exit_code: int | None = None
    try:
        defaults = {"callbacks": [*run_outputs(), *callbacks]}
        return HydraCLI(
            args=list(args) if args is not None else None,
            trainer_defaults=defaults,
            parser_kwargs={"exit_on_error": exit_on_error},
        )
    except RunInterrupted as interrupt:
        exit_code = 130
        if args is None:
            print(f"hydralab: {interrupt.resume_hint()}", file=sys.stderr)
            raise SystemExit(130) from None
        raise
    except Exception:
        exit_code = 1
        raise
    finally:
        sys.argv = argv
        _restore_sigint(sigint)
        finish_wandb(exit_code)


class _ConfigCheck(HydraCLI):
    """HydraCLI that stops after building the model and the data module: no trainer, no run
    folder, no W&B run, no scan read; its subcommand only reads the dataset table."""

    def _set_seed(self) -> None:
        """Leave the caller's random state (and the log) alone: nothing is drawn here."""

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        self.check_ckpt_path()
        return None

    def _run_subcommand(self, subcommand: str) -> None:
        if subcommand == "predict":
            self.datamodule.predict_records()
        else:
            self.datamodule.records()


def check_config(args: Sequence[str]) -> None:
    """Validate a ``fit | validate | test | predict`` command line without running it.

    A sweep checks every grid point before its first trial: the parser checks keys and types,
    the model's and data module's ``__init__`` check values, and the dataset table is read and
    its rows checked (no image is loaded). Nothing is written.

    Raises:
        ConfigRejected: the parser rejected a key or a value (the key is named).
        ValueError: the model or the data module refused a value.
        DatasetError: the dataset CSV is missing or a row is invalid (the file is named).
    """
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        _ConfigCheck(args=list(args), parser_kwargs={"exit_on_error": False})
    finally:
        sys.argv = argv


def _as_list(value: Any) -> list[Any]:
    """A trainer setting that takes one object or a list of them, as a list."""
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _restore_sigint(handler: Any) -> None:
    if handler is None or signal.getsignal(signal.SIGINT) == handler:
        return
    # Outside the main thread handlers cannot be set, and Lightning could not have changed it.
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGINT, handler)


def quiet_environment() -> None:
    """Defaults that keep offline W&B quiet and local; the user's environment wins."""
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")
    # The run folder is ours and already holds config.yaml when the CSV logger first writes.
    warnings.filterwarnings(
        "ignore", message="Experiment logs directory .* exists and is not empty"
    )
