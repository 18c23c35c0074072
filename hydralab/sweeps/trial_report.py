"""Every validation's objective metric, reported to the trial while it trains.

The reported values are the trial's intermediate values: optuna-dashboard draws them as live
learning curves, and the pruner decides on them. They are reported at every validation whether
pruning is on or not, with the **global step** as their step (the x axis of W&B and of
``trainer.max_steps``), so ``pruning.n_warmup_steps`` counts optimiser steps.

optuna-integration's ``PyTorchLightningPruningCallback`` is not used: it reports only when a
sweep prunes, and with the epoch as step, which repeats (and Optuna then drops the value) when
validation runs more than once per epoch.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import optuna


class ReportToTrial(pl.Callback):
    """Report ``metric`` to ``trial`` after each validation; prune if ``prune`` and the study's
    pruner says so (raises :class:`optuna.TrialPruned`, which ends the fit).

    A validation that did not log ``metric`` (too few scans) reports nothing.
    """

    def __init__(self, trial: optuna.Trial, metric: str, prune: bool = False) -> None:
        self.trial = trial
        self.metric = metric
        self.prune = prune

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        value = trainer.callback_metrics.get(self.metric)
        if value is None:
            return
        step = int(trainer.global_step)
        value = float(value)
        if math.isfinite(value):
            self.trial.report(value, step=step)
        if self.prune and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} ({self.metric}={value:.4g})")
