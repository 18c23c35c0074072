"""The Lightning CLI of hydralab: ``fit | validate | test | predict`` with one folder per run.

LightningCLI gives the conventions Lightning users know (``--config``, ``--print_config``,
``class_path``/``init_args``, a ``config.yaml`` saved with each run). On top of it this adds:
one fresh run folder per run (CSV metrics, W&B offline run, checkpoints, predictions), the model's
``method``/``k``/``p`` linked into the data module, a best-epoch checkpoint by a configurable
monitor, and, after ``fit``, a test of that best checkpoint.

Work is not lost quietly (docs/robustness.md): a run folder that cannot be created stops the run
before any scan is read; checkpoints are written atomically (hydralab.training.checkpoints);
Ctrl-C keeps ``last.ckpt``, and ``fit --ckpt_path last`` resumes from the newest ``last.ckpt`` of
the same ``tracking.root/name`` and goes on in that run's folder (its metrics.csv, checkpoints and
W&B folder). ``predict`` makes no run folder; a start that fails or is interrupted before its first
step leaves none. Checkpoints are loaded with ``weights_only=True`` unless ``--weights_only=false``
is given.

What a run prints (hydralab.training.console): one step progress bar with an ETA and the latest
validation ICC, metrics rounded to four significant digits, and from the command line a closing
summary of where the outputs went. ``--help`` is kept short (hydralab.training.cli_help), and the
optimiser is set one way only, ``model.optimizer``/``model.lr`` (LightningCLI's own
``--optimizer``/``--lr_scheduler`` are off).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import re
import signal
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from hydralab.data.datamodule import HydraDataModule
from hydralab.resources import available, find_file, is_packaged
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
from hydralab.training.cli_help import USAGE, HydraArgumentParser
from hydralab.training.console import (
    RunSummary,
    StepProgressBar,
    format_metrics,
    quiet_lightning,
    wandb_offline_run,
)
from hydralab.training.module import HydraModule
from hydralab.training.outputs import TEST_PREDICTIONS
from hydralab.training.runs import (
    RunCSVLogger,
    RunFolderError,
    RunInterrupted,
    claim_run_dir,
    discard_run_dir,
    run_dir_of,
)
from hydralab.training.tracking import (
    Tracking,
    WandbSummaryCallback,
    finish_wandb,
    make_wandb_logger,
)
from hydralab.training.wandb_media import WandbPredictions


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
    """LightningCLI with hydralab's run folders, tracking, links and test-after-fit.

    ``fit --ckpt_path last`` continues the run folder that holds the last checkpoint; ``predict``
    makes no run folder (its CSV goes where ``--predictions.output`` says); a start that fails
    before its first step leaves no folder behind.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.run_dir: Path | None = None
        self.continued = False  # run_dir is an earlier run's folder, resumed by --ckpt_path last
        self.resume_step = 0  # the checkpoint's global step when resuming
        self.checkpoint: tuple[str, dict[str, Any]] | None = None  # --ckpt_path, its weights
        self.test_metrics: dict[str, float] = {}
        self.show_metrics = True  # --verbose of validate and test: print the rounded metrics
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("trainer_defaults", {"callbacks": run_outputs()})
        # One way to set the optimiser: the module's own model.optimizer and model.lr.
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("parser_class", HydraArgumentParser)  # a --help of a few screens
        parser_kwargs = dict(kwargs.get("parser_kwargs") or {})
        for command in self.subcommands():
            parser_kwargs.setdefault(command, {}).setdefault("usage", USAGE.format(command=command))
        kwargs["parser_kwargs"] = parser_kwargs
        quiet_lightning()
        try:
            super().__init__(HydraModule, HydraDataModule, *args, **kwargs)
        except BaseException:
            # No litter: a start that failed (or was interrupted) before its first step leaves
            # no run folder. A continued run's folder holds the earlier run: it always stays.
            if self.run_dir is not None and not self.continued:
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

        ``--config`` values are resolved first: a packaged name, and the data paths of a
        user's config file relative to that file (:func:`config_arguments`).

        The resolved values go into the saved ``config.yaml``: it names the checkpoint resumed.
        """
        argv = sys.argv
        if not isinstance(args, Mapping | argparse.Namespace):
            # Given as args, not also in sys.argv: LightningCLI warns when it sees both.
            args, sys.argv = config_arguments(argv[1:] if args is None else args), argv[:1]
        try:
            super().parse_arguments(parser, args)
        except argparse.ArgumentError as error:  # only with parser_kwargs exit_on_error=False
            lines = (line.strip() for line in str(error).splitlines())
            raise ConfigRejected(" ".join(line for line in lines if line)) from None
        finally:
            sys.argv = argv
        subcommand = self.config.get("subcommand")
        if subcommand is None:
            return
        section = self.config[subcommand]
        # torch >= 2.6 already defaults to weights_only=True; say so rather than rely on it.
        if section.get("weights_only") is None:
            section["weights_only"] = True
        if subcommand in ("validate", "test"):
            # Lightning's table prints 16-digit floats; the runner prints them rounded.
            self.show_metrics = section.get("verbose", True) is not False
            section["verbose"] = False
        continue_last = False
        if section.get("ckpt_path") == "last":
            parent = Path(section["tracking"]["root"]) / section["tracking"]["name"]
            last = find_last_checkpoint(parent)
            if last is not None:
                section["ckpt_path"] = str(last)
                continue_last = subcommand == "fit"
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
            saved = read_checkpoint(path, subcommand == "fit", init_args, safe)
            self.checkpoint = (path, saved["state_dict"])
            if continue_last:
                # The run goes on in the folder that holds its last checkpoint.
                self.run_dir = run_dir_of(Path(path))
                self.continued = True
                self.resume_step = int(saved.get("global_step", 0))

    def check_ckpt_path(self) -> None:
        """Refuse weights that do not fit the model before the run folder is claimed."""
        if self.checkpoint is not None:
            check_weights(*self.checkpoint, self.model.state_dict())
            self.checkpoint = None

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        self.check_ckpt_path()
        trainer_config = self._get(self.config_init, "trainer", default={})
        # LightningCLI lets a ``callbacks`` keyword replace the config's trainer.callbacks
        # (a plateau rule, early stopping): add to them instead.
        configured = _as_list(trainer_config.get("callbacks"))
        callbacks = [*configured, *kwargs.pop("callbacks", [])]
        show_bar = trainer_config.get("enable_progress_bar") is not False
        if show_bar and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(StepProgressBar())
        plugins = _as_list(trainer_config.get("plugins"))
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            plugins.append(AtomicCheckpointIO())
        if self.subcommand == "predict":
            # Predictions go where --predictions.output says: no run folder, no logs, no
            # config.yaml (LightningCLI would write one into the working directory).
            self.save_config_callback = None
            return super().instantiate_trainer(
                logger=False, plugins=plugins, callbacks=callbacks, **kwargs
            )
        tracking: Tracking = self._get(self.config_init, "tracking")
        if self.run_dir is None:
            self.run_dir = claim_run_dir(Path(tracking.root) / tracking.name)
        keep = self.resume_step if self.continued else 0
        if self.continued:  # its checkpoints are the run's own, not another run's to overwrite
            checkpoints = re.escape(str(self.run_dir / "checkpoints"))
            warnings.filterwarnings("ignore", f"Checkpoint directory {checkpoints} exists")
        loggers: list[Any] = [RunCSVLogger(self.run_dir, keep_before_step=keep)]
        if tracking.wandb_mode != "disabled" and self.subcommand in ("fit", "validate", "test"):
            config = self.config.get(str(self.subcommand), self.config).as_dict()
            loggers.append(
                make_wandb_logger(
                    self.run_dir,
                    project=tracking.project,
                    name=tracking.wandb_name(self.run_dir),
                    group=tracking.group,
                    job_type=self.model.sets.method,
                    tags=tracking.tags,
                    mode=tracking.wandb_mode,
                    config=config,
                    log_model=tracking.log_model and self.subcommand == "fit",
                    resume=self.continued,
                )
            )
            callbacks += [WandbSummaryCallback(), WandbPredictions()]
        trainer = super().instantiate_trainer(
            logger=loggers,
            default_root_dir=str(self.run_dir),
            plugins=plugins,
            callbacks=callbacks,
            **kwargs,
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
            self.model,
            datamodule=self.datamodule,
            ckpt_path=ckpt_path,
            weights_only=True,
            verbose=False,
        )
        self.test_metrics = dict(results[0]) if results else {}
        self._print_metrics(self.test_metrics)

    def after_validate(self) -> None:
        if self.show_metrics:
            self._print_metrics(self.trainer.callback_metrics)

    def after_test(self) -> None:
        self.test_metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items()}
        if self.show_metrics:
            self._print_metrics(self.test_metrics)

    def _print_metrics(self, metrics: Mapping[str, Any]) -> None:
        if self.trainer.is_global_zero and metrics:
            print(format_metrics({name: float(value) for name, value in metrics.items()}))

    def summary(self) -> RunSummary:
        """Where this command's outputs are: what the command line prints when it ends."""
        trainer = getattr(self, "trainer", None)
        fitted = trainer is not None and self.subcommand == "fit"
        checkpoint = trainer.checkpoint_callback if fitted else None
        best = checkpoint.best_model_path if checkpoint is not None else ""
        score = checkpoint.best_model_score if checkpoint is not None else None
        tested = self.run_dir / TEST_PREDICTIONS if self.run_dir else None
        writer = next(
            (c for c in (trainer.callbacks if trainer else []) if isinstance(c, PredictionsCSV)),
            None,
        )
        return RunSummary(
            run_dir=self.run_dir,
            best_checkpoint=best or None,
            monitor=checkpoint.monitor if checkpoint is not None else None,
            best_score=None if score is None else float(score),
            test_metrics=self.test_metrics or None,
            test_predictions=tested if tested and tested.is_file() else None,
            predictions=getattr(writer, "written", None),
            wandb_offline_run=wandb_offline_run(),
        )


def run_cli(
    args: Sequence[str] | None = None,
    callbacks: Sequence[Callback] = (),
    exit_on_error: bool = True,
    summary: bool = False,
) -> HydraCLI:
    """Run one ``fit | validate | test | predict`` command; W&B is finished whatever happens.

    ``callbacks`` are added to the trainer's (e.g. a sweep's pruning callback, which holds a live
    Optuna trial and so cannot come from a config).

    A config the CLI rejects prints the usage and exits with 2 (the command line's convention);
    with ``exit_on_error=False`` it raises :class:`ConfigRejected` instead, so a caller that runs
    many configs (a sweep) records the error and goes on.

    ``summary``: print where the outputs went (run folder, best checkpoint and its score, test
    ICC and MSE, predictions, the ``wandb sync`` command of an offline run) once it is over.

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
    outputs: RunSummary | None = None
    try:
        defaults = {"callbacks": [*run_outputs(), *callbacks]}
        cli = HydraCLI(
            args=list(args) if args is not None else None,
            trainer_defaults=defaults,
            parser_kwargs={"exit_on_error": exit_on_error},
        )
        if summary:
            outputs = cli.summary()  # before W&B is finished: the live run knows its folder
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
    if outputs is not None:
        outputs.print()
    return cli


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


DATA_PATHS = ("csv", "predict_path")
"""The data module's input paths: in a config file outside the package, relative to the file."""


def config_arguments(args: Sequence[str]) -> list[str]:
    """The command line with each ``--config`` resolved, and the data paths its file names.

    - ``--config NAME``: an existing file ``NAME`` wins; otherwise the packaged config of that
      name (``pvs/hydranet``, ``.yaml`` optional; :mod:`hydralab.resources`). Its own
      compositions (``trainer: ../trainer_cpu.yaml``) then resolve from where it lies.
    - A relative ``data.csv`` or ``data.predict_path`` in a config file outside the package (or
      in the ``data:`` file it composes) is relative to that file's folder when it exists there:
      it is given right after the ``--config`` as an absolute ``--data.KEY``, so a later
      ``--config`` or ``--data.KEY`` still wins. Otherwise, and always in a packaged config,
      it stays relative to the working directory, where ``make-data`` and ``demo`` write (and
      a run's saved ``config.yaml`` names its data as given).
    """
    out: list[str] = []
    subcommand = False  # options before the subcommand cannot take --data.KEY
    items = iter(args)
    for token in items:
        name, sep, value = token.partition("=")
        if name not in ("--config", "-c"):
            subcommand = subcommand or token in LightningCLI.subcommands()
            out.append(token)
            continue
        if not sep:
            value = next(items, None)
            if value is None:
                out.append(token)
                break
        path = find_file("configs", value)
        if not path.is_file():
            shipped = (
                ""
                if path.is_absolute()
                else (f", and no shipped config of that name ({', '.join(available('configs'))})")
            )
            raise ConfigRejected(f"--config {value}: no such file{shipped}")
        out.append(f"--config={path}")
        if subcommand:
            out += [f"--data.{key}={found}" for key, found in config_data_paths(path).items()]
    return out


def config_data_paths(config: Path) -> dict[str, str]:
    """The data paths of a config file outside the package that exist relative to it, made
    absolute (see :func:`config_arguments`)."""
    data = _read_section(config, "data")
    folder = config.parent
    if isinstance(data, str):  # `data: data.yaml`: its paths are relative to that file
        composed = folder / data
        data, folder = _read_section(composed, None), composed.parent
    if not isinstance(data, dict) or is_packaged(folder):
        return {}
    data = data.get("init_args", data)
    found = {}
    for key in DATA_PATHS:
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, str) and value and "://" not in value:
            path = folder / value
            if not Path(value).is_absolute() and path.exists():
                found[key] = str(path.resolve())
    return found


def _read_section(path: Path, section: str | None) -> Any:
    """One top-level key of a YAML config file (the whole file for None); None if unreadable
    (the parser then says what is wrong with it)."""
    if not path.is_file() or is_packaged(path):
        return None
    try:
        content = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if section is None:
        return content
    return content.get(section) if isinstance(content, dict) else None


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
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")
    # A SLURM client on the machine is not a SLURM job; the sweep launcher runs under srun itself.
    warnings.filterwarnings("ignore", message="The `srun` command is available on your system")
    # The run folder is ours and already holds config.yaml when the CSV logger first writes.
    warnings.filterwarnings(
        "ignore", message="Experiment logs directory .* exists and is not empty"
    )
