"""ReportToTrial: each validation's metric becomes an intermediate value at its global step,
whether the sweep prunes or not; it prunes only when asked and the pruner says so."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
import torch

from hydralab.sweeps.trial_report import ReportToTrial

METRIC = "val/icc_c1"


def _trainer(step: int, value: float | None, sanity: bool = False) -> SimpleNamespace:
    metrics = {} if value is None else {METRIC: torch.tensor(value)}
    return SimpleNamespace(
        sanity_checking=sanity, is_global_zero=True, global_step=step, callback_metrics=metrics
    )


def _trial(pruner: optuna.pruners.BasePruner) -> optuna.Trial:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="maximize", pruner=pruner).ask()


def test_every_validation_is_reported_at_its_step_without_pruning():
    # A pruner that would prune anything: with prune=False it is never asked.
    trial = _trial(optuna.pruners.ThresholdPruner(lower=1.0))
    report = ReportToTrial(trial, METRIC, prune=False)
    report.on_validation_end(_trainer(0, 0.9, sanity=True), None)  # the sanity check: skipped
    for step, value in ((50, 0.1), (100, 0.3), (150, None), (200, 0.2)):
        report.on_validation_end(_trainer(step, value), None)
    frozen = trial.study.get_trials()[0]
    assert frozen.intermediate_values == {50: pytest.approx(0.1), 100: pytest.approx(0.3),
                                          200: pytest.approx(0.2)}  # fmt: skip


def test_pruning_raises_when_the_pruner_says_so():
    trial = _trial(optuna.pruners.ThresholdPruner(lower=0.5))
    report = ReportToTrial(trial, METRIC, prune=True)
    report.on_validation_end(_trainer(50, 0.6), None)  # above the threshold: goes on
    with pytest.raises(optuna.TrialPruned, match="pruned at step 100"):
        report.on_validation_end(_trainer(100, 0.4), None)
    assert set(trial.study.get_trials()[0].intermediate_values) == {50, 100}
