"""Train to the plateau: stop a fit when validation has stopped improving, and say why it ended.

A fixed ``trainer.max_steps`` ends runs whose validation ICC is still rising, and nothing in the
run says so. :class:`PlateauStopping` is one rule for both methods: stop once the monitored
metric has not improved for ``patience_steps`` optimiser steps, never before ``min_steps``, at
most ``trainer.max_steps`` (or ``trainer.max_time``). Patience is counted in optimiser steps, not
in validations, so it keeps its meaning when ``trainer.val_check_interval`` changes.

Every fit writes ``stopping.json`` in its run folder: ``stop_reason`` (one of
:data:`STOP_REASONS`; only ``plateau`` means the run reached its plateau), ``best_step``,
``last_step``, ``best_value`` and the rule's settings. Compose ``configs/plateau.yaml`` to use it.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, Timer
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.trainer.states import TrainerFn

STOPPING_JSON = "stopping.json"

STOP_REASONS = (
    "plateau",  # the rule stopped the run: no improvement for patience_steps
    "max_steps",  # trainer.max_steps reached first
    "max_time",  # trainer.max_time reached first
    "max_epochs",  # trainer.max_epochs reached first
    "interrupted",  # Ctrl-C or SIGTERM
    "pruned",  # a sweep's pruner ended the trial
    "error",  # an exception ended the fit
    "unknown",  # something else set trainer.should_stop
)
"""Why a fit ended. Anything but ``plateau`` means the run may not have converged."""


def trainer_stop_reason(trainer: pl.Trainer) -> str:
    """Which of the trainer's own limits ended a finished fit: max_steps, max_time, max_epochs.

    ``unknown`` when none was reached (another callback set ``trainer.should_stop``). Checked in
    this order, so a run that reached max_steps as its time ran out reads ``max_steps``.
    """
    max_steps = trainer.max_steps
    if max_steps is not None and max_steps >= 0 and trainer.global_step >= max_steps:
        return "max_steps"
    for callback in trainer.callbacks:
        if isinstance(callback, Timer):
            remaining = callback.time_remaining()
            if remaining is not None and remaining <= 0:
                return "max_time"
    max_epochs = trainer.max_epochs
    if max_epochs is not None and max_epochs >= 0 and trainer.current_epoch >= max_epochs:
        return "max_epochs"
    return "unknown"


def _max_time_seconds(trainer: pl.Trainer) -> float | None:
    """``trainer.max_time`` in seconds (its Timer's remaining plus elapsed time), else None."""
    for callback in trainer.callbacks:
        remaining = callback.time_remaining() if isinstance(callback, Timer) else None
        if remaining is not None:
            return round(remaining + callback.time_elapsed(), 3)
    return None


class PlateauStopping(EarlyStopping):
    """Lightning's EarlyStopping with patience in optimiser steps, a minimum, and a stop record.

    After each validation: a value better than the best by more than ``min_delta`` is a new best
    (``best_step`` = that global step); the fit stops at the first validation where at least
    ``min_steps`` steps are done (and ``trainer.min_steps``) and ``patience_steps`` have passed
    since ``best_step``. A non-finite value (ICC of constant predictions is NaN) is never a new
    best and never stops the fit by itself. The best value and step are saved in checkpoints, so
    ``--ckpt_path last`` resumes the count where it was.

    Args:
        monitor: the validation metric to watch.
        mode: ``max`` (ICC, Pearson) or ``min`` (MSE, a loss).
        patience_steps: optimiser steps without improvement that end the fit.
        min_steps: never stop before this global step (Hydranet can sit near ICC 0 for a long
            time before it rises).
        min_delta: a change of at most this much is not an improvement.
        strict: fail when ``monitor`` is not logged at a validation.
        verbose: log each new best and the stop.

    Attributes:
        best_step: global step of the best value (``None`` before a finite one is seen).
        last_step: global step at which the fit ended (``None`` before it ends).
        stop_reason: one of :data:`STOP_REASONS` once the fit ended, else ``None``.
        stopped_step: global step at which this rule stopped the fit, else ``None``.
    """

    def __init__(
        self,
        monitor: str = "val/icc_c1",
        mode: str = "max",
        patience_steps: int = 2000,
        min_steps: int = 3000,
        min_delta: float = 0.0,
        strict: bool = True,
        verbose: bool = False,
    ) -> None:
        _check(bool(monitor) and isinstance(monitor, str), "monitor", "must be a name", monitor)
        _check(mode in self.mode_dict, "mode", "must be 'max' or 'min'", mode)
        _check(
            _is_int(patience_steps) and patience_steps > 0,
            "patience_steps",
            "must be an integer > 0",
            patience_steps,
        )
        _check(
            _is_int(min_steps) and min_steps >= 0, "min_steps", "must be an integer >= 0", min_steps
        )
        _check(_is_number(min_delta) and min_delta >= 0, "min_delta", "must be >= 0", min_delta)
        # The base class's count of validations is not used: patience_steps replaces it.
        super().__init__(
            monitor=monitor,
            min_delta=float(min_delta),
            patience=patience_steps,
            verbose=verbose,
            mode=mode,
            strict=strict,
            check_finite=False,
            check_on_train_epoch_end=False,
        )
        self.patience_steps = patience_steps
        self.min_steps = min_steps
        self.best_step: int | None = None
        self.stopped_step: int | None = None
        self.last_step: int | None = None
        self.stop_reason: str | None = None
        self._start_step = 0

    # -- the rule -------------------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        max_steps = trainer.max_steps
        if stage == "fit" and max_steps is not None and 0 <= max_steps < self.min_steps:
            warnings.warn(
                f"PlateauStopping: min_steps ({self.min_steps}) > trainer.max_steps "
                f"({max_steps}): the fit cannot stop on a plateau; raise trainer.max_steps",
                UserWarning,
                stacklevel=2,
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Before any finite value, patience counts from where this fit (or resume) began.
        self._start_step = trainer.global_step
        self.last_step = self.stop_reason = None

    def _run_early_stopping_check(self, trainer: pl.Trainer) -> None:
        logs = trainer.callback_metrics
        if trainer.fast_dev_run or not self._validate_condition_metric(logs):
            return
        current = logs[self.monitor].squeeze().detach().float().cpu()
        step = trainer.global_step
        if torch.isfinite(current) and self.monitor_op(current - self.min_delta, self.best_score):
            if self.verbose:
                self._log_info(trainer, self._improvement_message(current), self.log_rank_zero_only)
            self.best_score, self.best_step, self.wait_count = current, step, 0
        else:
            self.wait_count += 1
        since = step - (self._start_step if self.best_step is None else self.best_step)
        minimum = max(self.min_steps, trainer.min_steps or 0)
        should_stop = step >= minimum and since >= self.patience_steps
        should_stop = trainer.strategy.reduce_boolean_decision(should_stop, all=False)
        trainer.should_stop = trainer.should_stop or should_stop
        if should_stop:
            self.stopped_step = step
            self.stopped_epoch = trainer.current_epoch
            self.stopping_reason = EarlyStoppingReason.PATIENCE_EXHAUSTED
            self.stopping_reason_message = (
                f"{self.monitor} did not improve by more than {abs(self.min_delta)} in "
                f"{since} steps (patience_steps {self.patience_steps}); best "
                f"{float(self.best_score):.4f} at step {self.best_step}; stopping at step {step}"
            )
            if self.verbose:
                self._log_info(trainer, self.stopping_reason_message, self.log_rank_zero_only)

    # -- the record -----------------------------------------------------------------------------

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.last_step = trainer.global_step
        stopped_here = self.stopped_step is not None and self.stopped_step == self.last_step
        self.stop_reason = "plateau" if stopped_here else trainer_stop_reason(trainer)
        self._write(trainer)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            return
        self.last_step = trainer.global_step
        if isinstance(exception, KeyboardInterrupt | SystemExit):  # SIGTERM is a SystemExit
            self.stop_reason = "interrupted"
        elif type(exception).__name__ == "TrialPruned":  # optuna's, raised by its pruning hook
            self.stop_reason = "pruned"
        else:
            self.stop_reason = "error"
        try:
            self._write(trainer)
        except OSError as error:  # do not hide the exception that ended the fit
            warnings.warn(
                f"PlateauStopping: could not write {STOPPING_JSON}: {error}", stacklevel=2
            )

    @property
    def best_value(self) -> float | None:
        """The best monitored value, or ``None`` before a finite one was seen."""
        value = float(self.best_score)
        return value if math.isfinite(value) else None

    def record(self, trainer: pl.Trainer) -> dict[str, Any]:
        """What ``stopping.json`` holds: why and where the fit ended, and the rule's settings."""
        max_steps = trainer.max_steps
        return {
            "stop_reason": self.stop_reason,
            "best_step": self.best_step,
            "last_step": self.last_step,
            "best_value": self.best_value,
            "monitor": self.monitor,
            "mode": self.mode,
            "patience_steps": self.patience_steps,
            "min_steps": self.min_steps,
            "min_delta": abs(self.min_delta),
            "max_steps": max_steps if max_steps is not None and max_steps >= 0 else None,
            "max_time_s": _max_time_seconds(trainer),
            "message": self.stopping_reason_message if self.stop_reason == "plateau" else None,
        }

    def _write(self, trainer: pl.Trainer) -> None:
        if not trainer.is_global_zero:
            return
        folder = Path(trainer.log_dir or trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / STOPPING_JSON).write_text(json.dumps(self.record(trainer), indent=2) + "\n")

    # -- checkpoints ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The progress (best value and step, stop); the settings come from the config."""
        return {
            **super().state_dict(),
            "best_step": self.best_step,
            "stopped_step": self.stopped_step,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        # Keep the configured patience: a resumed fit may lengthen it.
        self.patience = self.patience_steps
        self.best_score = torch.as_tensor(self.best_score, dtype=torch.float32).cpu()
        self.best_step = state_dict.get("best_step")
        self.stopped_step = state_dict.get("stopped_step")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check(ok: Any, key: str, rule: str, value: Any) -> None:
    """Config errors name the class and the key: ``PlateauStopping: min_steps must be >= 0``."""
    if not ok:
        raise ValueError(f"PlateauStopping: {key} {rule}, got {value!r}")
