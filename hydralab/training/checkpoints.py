"""Checkpoints that survive a full disk and Ctrl-C: atomic writes, and a ``last.ckpt`` that
follows every validation.

Work is not lost quietly (docs/robustness.md): a checkpoint that cannot be written (a full disk)
stops the run naming the file and leaves the earlier checkpoints whole, and ``--ckpt_path last``
resumes from the newest ``last.ckpt`` of the same ``tracking.root/name``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

LAST_CHECKPOINT = "last.ckpt"


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (typically a full disk); keeps the ``OSError``'s errno."""


def find_last_checkpoint(parent: Path) -> Path | None:
    """The most recently written ``last.ckpt`` among the runs ``parent/version_*``.

    Each run gets a fresh folder, so Lightning's own ``ckpt_path="last"`` (which looks in the
    new, empty run's checkpoint folder) would silently start from scratch.
    """
    found = [
        p for p in Path(parent).glob(f"version_*/checkpoints/{LAST_CHECKPOINT}") if p.is_file()
    ]
    return max(found, key=lambda p: p.stat().st_mtime_ns, default=None)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint beside its final name, then rename it into place.

    Lightning's own writer stages the file in the system temporary folder and moves it; when
    that folder is on another disk, the move copies into the final file, so a disk filling up
    during the copy truncates the previous ``last.ckpt``. A rename within one folder is atomic:
    a checkpoint file is either the previous one or the new one, whole. Lightning removes a
    previous best only after its successor is saved, so when a write fails the checkpoints
    saved before are complete: the :class:`CheckpointWriteError` says so, and how to resume.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        try:
            if storage_options is not None or "://" in str(path):
                super().save_checkpoint(checkpoint, path, storage_options)
            else:
                _save_atomically(checkpoint, Path(path))
        except OSError as error:
            raise _write_error(error, Path(path), checkpoint.get("global_step")) from error


def _save_atomically(checkpoint: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def _write_error(error: OSError, path: Path, step: int | None) -> CheckpointWriteError:
    """What the user must know: which file, which step, what is kept and how to resume."""
    folder = path.parent
    kept = sorted(p.name for p in folder.glob("*.ckpt")) if folder.is_dir() else []
    resume = (
        f'; free some space, then resume with: hydralab fit --config "'
        f'{folder.parent / "config.yaml"}" --ckpt_path last'
        if LAST_CHECKPOINT in kept
        else ""
    )
    return CheckpointWriteError(
        error.errno,
        f"could not write checkpoint {path} at step {step} ({error.strerror or error}); "
        f"the checkpoints saved before are intact: {', '.join(kept) or 'none yet'}{resume}",
    )


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, with ``last.ckpt`` rewritten at every validation (or epoch
    end, wherever Lightning saves).

    Lightning 2.6 rewrites ``last.ckpt`` only when a new best is saved, so after a plateau
    Ctrl-C and ``--ckpt_path last`` would go back to the best epoch and lose every step since.
    The public hooks are extended; the private methods below are only called, never
    overridden, because Lightning offers no public way to ask the same.
    """

    def on_validation_end(self, trainer: Trainer, pl_module: Any) -> None:
        super().on_validation_end(trainer, pl_module)
        # Private: where Lightning decided to save (validation or epoch end); mirror it.
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: Any) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def _refresh_last(self, trainer: Trainer) -> None:
        # Private: Lightning's own skip rules (sanity check, fast_dev_run, not fitting, and this
        # step already saved: a new best, with last.ckpt); a second copy would cost a write.
        if self.save_last is not True or self._should_skip_saving_checkpoint(trainer):
            return
        # Private: the metrics the file name is formatted with, and the writer that names the
        # file, records last_model_path in the saved state and removes the previous last.
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
