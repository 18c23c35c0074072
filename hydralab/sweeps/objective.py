"""One trial: sampled values -> config overrides -> one Lightning ``fit`` -> the objective value.

Each trial trains in its own folder, ``<sweep>/trials/trial-<number>/version_0``, with its own
seed and its own W&B run (named like ``hydranet-N12-s0-t7`` by :func:`run_name`; group = study,
job type = method, tags = the sweep's plus the study and the trial), finished before the next
trial starts. Every validation reports the objective metric to the trial
(:class:`~.trial_report.ReportToTrial`), so optuna-dashboard draws each trial's curve while it
trains. A finished trial uploads its test-prediction plot and CSV as Optuna artifacts
(:mod:`.artifacts`). What a report needs later goes in the trial's user attributes:

- ``config``: every key the trial set on top of the base config (after the baseline's k=1, p=0
  and the batch-size rounding); ``seed``; ``output_dir`` (set before training, so a failed
  trial's folder is findable);
- ``run_dir``, ``best_checkpoint``, ``best_<metric>`` (e.g. ``best_val_icc_c1``, also the
  trial's value), ``steps`` (optimiser steps taken), every test metric (``test_icc_c1``,
  ``test_icc_a1``, ``test_mse``, ...) and ``test_predictions`` (the CSV of per-scan test
  predictions);
- :data:`STOPPING_ATTRS`, where and why training ended: ``best_step`` (global step of the best
  validation value: the rule's, its last rise by more than ``min_delta``, from which patience
  counts; without the rule, the best checkpoint's), ``last_step`` (the last step trained, equal
  to ``steps``, which is kept) and ``stop_reason`` (``plateau`` when the trial's
  ``PlateauStopping`` rule ended it, else the limit it reached: ``max_steps``, ``max_time``,
  ``max_epochs``, or ``unknown``). A report flags a trial whose ``stop_reason`` is not
  ``plateau`` as not converged. The learning-curve and loss-table sweeps carry the rule as
  ``trainer.callbacks`` in their ``overrides`` (``configs/plateau.yaml`` gives its reasons);
- ``error``: why a failed trial failed (an exception, a NaN loss, a config the CLI rejected,
  Ctrl-C or SIGTERM; a resumed sweep reruns only the last kind).

A failure is re-raised so Optuna marks the trial FAIL; the worker catches it and goes on.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from hydralab.data.sets import SetSpec
from hydralab.sweeps.artifacts import ARTIFACTS_DIR, artifact_store, upload_trial_outputs
from hydralab.sweeps.devices import describe_device
from hydralab.sweeps.spec import SweepSpec
from hydralab.sweeps.trial_report import ReportToTrial
from hydralab.sweeps.trials import (
    BEST_CHECKPOINT,
    CONFIG,
    DEVICE,
    ERROR,
    INTERRUPTED,
    OUTPUT_DIR,
    RUN_DIR,
    SEED,
    SKIPPED,
    STEPS,
    STOPPING_ATTRS,
    TEST_PREDICTIONS,
    attr_name,
    best_attr,
)
from hydralab.training.outputs import TEST_PREDICTIONS as PREDICTIONS_CSV
from hydralab.training.runner import ConfigRejected, HydraCLI, run_cli
from hydralab.training.stopping import PlateauStopping, trainer_stop_reason


def trial_dir(sweep_dir: Path, number: int) -> Path:
    """The folder holding one trial's run (its ``version_0``)."""
    return sweep_dir / "trials" / f"trial-{number:04d}"


def cli_args(spec: SweepSpec, overrides: dict[str, Any], sweep_dir: Path, number: int) -> list[str]:
    """The ``hydralab fit`` arguments of one trial; no storage URL or other secret goes in."""
    tracking = {
        "tracking.root": str(trial_dir(sweep_dir, number).parent),
        "tracking.name": trial_dir(sweep_dir, number).name,
        "tracking.run_name": run_name(spec, overrides, number),
        "tracking.group": spec.study,
        "tracking.tags": [*spec.tags, f"study:{spec.study}", f"trial:{number}"],
    }
    values = {**overrides, **tracking}
    return ["fit", f"--config={spec.base_config}"] + [
        f"--{key}={_cli_value(value)}" for key, value in values.items()
    ]


def run_name(spec: SweepSpec, overrides: dict[str, Any], number: int) -> str:
    """A trial's W&B run name: method, swept K, training-set size, seed and trial number, e.g.
    ``hydranet-K4-N12-s0-t7`` (``Nall``: every training scan). The trial number keeps names
    unique when other keys (p, the learning rate) are what differ."""
    method = spec.method_of(overrides)
    parts = [str(method or "run")]
    if "model.k" in spec.space and "model.k" not in SetSpec.fixed_for(method):
        parts.append(f"K{overrides.get('model.k')}")
    if "data.n_train" in overrides:
        n_train = overrides["data.n_train"]
        parts.append("Nall" if n_train is None else f"N{n_train}")
    parts += [f"s{overrides.get('seed_everything', '?')}", f"t{number}"]
    return "-".join(parts)


def _cli_value(value: Any) -> str:
    """A value as the Lightning CLI parses it (YAML): strings as written, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


class SweepObjective:
    """The Optuna objective of a sweep: trains one model per trial, returns its best metric."""

    def __init__(
        self,
        spec: SweepSpec,
        sweep_dir: Path,
        skip: Callable[[optuna.Trial], str | None] | None = None,
    ) -> None:
        """``skip`` says why a trial must not run (another holds its point), else None."""
        self.spec = spec
        self.sweep_dir = Path(sweep_dir)
        self.skip = skip
        self.artifacts = artifact_store(self.sweep_dir / ARTIFACTS_DIR)

    def __call__(self, trial: optuna.Trial) -> float:
        reason = self.skip(trial) if self.skip else None
        if reason:
            # Pruned, not failed: nothing went wrong. The counts leave skipped trials out.
            trial.set_user_attr(SKIPPED, reason)
            raise optuna.TrialPruned(f"skipped: {reason}")
        params = self.spec.sample(lambda dim: dim.suggest(trial))
        # A trial retried after its worker died inherits the original's user attributes: the
        # retry then reuses the original's seed and trains the same run again.
        seed = params.get("seed", self.spec.overrides.get("seed"))
        if seed is None:
            seed = trial.user_attrs.get(SEED, trial.number)
        overrides = self.spec.trial_overrides(params, seed)
        out = trial_dir(self.sweep_dir, trial.number)
        trial.set_user_attr(SEED, seed)
        trial.set_user_attr(CONFIG, overrides)
        trial.set_user_attr(OUTPUT_DIR, str(out))
        try:
            cli = self._run(trial, cli_args(self.spec, overrides, self.sweep_dir, trial.number))
            return self._record(trial, cli)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            # Ctrl-C (RunInterrupted from the runner): Optuna fails the trial and stops the
            # worker; the sweep must stop too, not record a failure and go on to the next.
            trial.set_user_attr(ERROR, f"{INTERRUPTED} (Ctrl-C or SIGTERM)")
            raise
        except Exception as error:
            trial.set_user_attr(ERROR, f"{type(error).__name__}: {error}")
            raise

    def _run(self, trial: optuna.Trial, args: list[str]) -> HydraCLI:
        callbacks = [ReportToTrial(trial, self.spec.metric, prune=self.spec.pruning)]
        try:
            return run_cli(args, callbacks=callbacks, exit_on_error=False)
        except ConfigRejected as rejected:  # the CLI's one-line error, not its exit
            raise ConfigRejected(
                f"the Lightning CLI rejected the trial's config: {rejected}"
            ) from None

    def _record(self, trial: optuna.Trial, cli: HydraCLI) -> float:
        """Store the run's outputs on the trial and return the best validation metric."""
        assert cli.run_dir is not None
        trial.set_user_attr(RUN_DIR, str(cli.run_dir))
        # optimiser steps taken: below trainer.max_steps when max_time or early stopping ended it
        trial.set_user_attr(STEPS, int(cli.trainer.global_step))
        trial.set_user_attr(DEVICE, describe_device(cli.trainer.strategy.root_device))
        for name, value in stopping_attrs(cli).items():
            trial.set_user_attr(name, value)
        checkpoint = cli.trainer.checkpoint_callback
        score = None if checkpoint is None else checkpoint.best_model_score
        value = math.nan if score is None else float(score)
        if checkpoint is not None and checkpoint.best_model_path:
            trial.set_user_attr(BEST_CHECKPOINT, checkpoint.best_model_path)
        for name, metric in cli.test_metrics.items():
            trial.set_user_attr(attr_name(name), float(metric))
        predictions = cli.run_dir / PREDICTIONS_CSV
        if predictions.is_file():
            trial.set_user_attr(TEST_PREDICTIONS, str(predictions))
            upload_trial_outputs(trial, cli.run_dir, self.artifacts)
        if not math.isfinite(value):
            raise ValueError(
                f"no finite {self.spec.metric} was logged (got {value}); does validation run "
                "within trainer.max_steps (trainer.check_val_every_n_epoch)?"
            )
        trial.set_user_attr(best_attr(self.spec.metric), value)
        return value


def stopping_attrs(cli: HydraCLI) -> dict[str, Any]:
    """``best_step``, ``last_step`` and ``stop_reason`` of a finished fit (:data:`STOPPING_ATTRS`).

    From the run's :class:`PlateauStopping` when it has one. Without one, ``stop_reason`` is the
    trainer limit the fit reached, and ``best_step`` is read from the best checkpoint's name
    (``best-epoch=E-step=S.ckpt``), else ``None``.
    """
    trainer = cli.trainer
    rule = next((c for c in trainer.callbacks if isinstance(c, PlateauStopping)), None)
    if rule is not None and rule.stop_reason is not None:
        values = (rule.best_step, rule.last_step, rule.stop_reason)
        return dict(zip(STOPPING_ATTRS, values, strict=True))
    checkpoint = trainer.checkpoint_callback
    found = re.search(r"step=(\d+)", Path(checkpoint.best_model_path).name) if checkpoint else None
    best_step = int(found.group(1)) if found else None
    values = (best_step, int(trainer.global_step), trainer_stop_reason(trainer))
    return dict(zip(STOPPING_ATTRS, values, strict=True))
