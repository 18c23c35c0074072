"""Checkpoints that lose nothing: atomic writes, a ``last.ckpt`` that follows every validation,
and a ``--ckpt_path`` checked before it is loaded (run folders: :mod:`.runs`).

Work is not lost quietly (docs/robustness.md): a checkpoint that cannot be written (a full disk)
stops the run naming the file and leaves the earlier checkpoints whole, and ``--ckpt_path last``
resumes from the newest ``last.ckpt`` of the same ``tracking.root/name``, keeping the best
checkpoint of the whole run.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

LAST_CHECKPOINT = "last.ckpt"


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (typically a full disk); keeps the ``OSError``'s errno."""


class CheckpointError(ValueError):
    """A checkpoint given to ``--ckpt_path`` cannot serve: the message names the file and why.

    A ``ValueError``, so ``hydralab`` prints the message without a traceback and exits 2.
    """


# Lightning's own names for a checkpoint, resolved by the trainer rather than read as a path.
CKPT_KEYWORDS = ("best", "last", "hpc", "registry")


def read_checkpoint(
    path: str | Path, resume: bool, init_args: Collection[str], weights_only: bool = True
) -> dict[str, Any]:
    """Read a ``--ckpt_path`` file, or say which file and what is wrong with it.

    Lightning would fail later with a traceback, or with torch's advice to load an untrusted
    pickle. ``resume``: ``fit`` also needs the optimizer and loop states. ``init_args``: the
    model's ``__init__`` arguments; Lightning configures the model from the saved ones.
    ``weights_only=False`` only where the user said so (``--weights_only=false``).

    Raises:
        CheckpointError: missing or unreadable, not a ``torch.save`` file, holds objects a
            weights-only load refuses, not a Lightning checkpoint (a bare state_dict), only
            weights (for a resume), or hyperparameters of another model.
    """
    checkpoint = _load(Path(path), weights_only)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{path} is not a Lightning checkpoint: it holds a {type(checkpoint).__name__}"
        )
    missing = [key for key in ("state_dict", "pytorch-lightning_version") if key not in checkpoint]
    if missing:
        bare = all(isinstance(value, torch.Tensor) for value in checkpoint.values())
        what = "a bare state_dict, not" if bare else "not"
        raise CheckpointError(
            f"{path} is {what} a Lightning checkpoint: it has no {' or '.join(missing)} entry "
            f"(keys: {_some(checkpoint)}); give a .ckpt file that a hydralab run saved"
        )
    if resume and "optimizer_states" not in checkpoint:
        raise CheckpointError(
            f"{path} holds only the model's weights, not the optimizer and loop states a fit "
            "resumes from; give it to test or predict, or resume from a run's last.ckpt"
        )
    hparams = checkpoint.get("hyper_parameters") or {}
    unknown = [key for key in hparams if key not in init_args and not key.startswith("_")]
    if unknown:
        raise CheckpointError(
            f"{path} holds another model: its hyperparameters {_some(unknown)} are not this "
            "model's arguments"
        )
    return checkpoint


def check_weights(path: str | Path, saved: dict[str, Any], expected: dict[str, Any]) -> None:
    """Fail before the run starts if the weights in ``path`` do not fit the model's."""
    missing = [key for key in expected if key not in saved]
    unexpected = [key for key in saved if key not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{path} holds weights of another model: missing keys {_some(missing)}, "
            f"unexpected keys {_some(unexpected)}"
        )
    for key, value in expected.items():
        shape = getattr(saved[key], "shape", None)
        if shape is not None and tuple(shape) != tuple(value.shape):
            raise CheckpointError(
                f"{path} holds weights of another model: {key} has shape {tuple(shape)} "
                f"in the checkpoint, {tuple(value.shape)} in the model"
            )


def _load(path: Path, weights_only: bool) -> Any:
    if not path.is_file():
        reason = "is a folder" if path.is_dir() else "does not exist"
        raise CheckpointError(f"checkpoint {path} {reason}")
    try:
        try:  # mmap: the weights are only looked at, not read into memory
            return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
        except RuntimeError as error:
            if "mmap can only be used" not in str(error):
                raise
            return torch.load(path, map_location="cpu", weights_only=weights_only)
    except OSError as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error.strerror or error}") from None
    except Exception as error:  # torch raises anything from KeyError to UnpicklingError
        refused = re.search(r"GLOBAL ([\w.]+)", str(error))
        if refused:
            raise CheckpointError(
                f"{path} holds objects that a safe (weights-only) load refuses "
                f"({refused.group(1)}): it was not saved by a hydralab run"
            ) from None
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (truncated or not a torch.save file)"
        ) from None


def _some(keys: Any, n: int = 3) -> str:
    keys = list(keys)
    listed = ", ".join(map(str, keys[:n])) or "none"
    return f"{listed} (+{len(keys) - n} more)" if len(keys) > n else listed


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
            try:
                torch.save(checkpoint, file)
            except RuntimeError as error:
                raise _writer_error(error, partial) from error
            file.flush()
            os.fsync(file.fileno())
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def _writer_error(error: RuntimeError, partial: Path) -> Exception:
    """torch's zip writer reports a short write (a full disk) as ``RuntimeError: [enforce fail
    at inline_container.cc] unexpected pos``, with no errno: call the disk full when less room
    is left than the largest checkpoint beside it (or 1 MiB), measured before the partial file
    goes. Any other ``RuntimeError`` is returned as it is."""
    if "inline_container" not in str(error) and "PytorchStreamWriter" not in str(error):
        return error
    sizes = [p.stat().st_size for p in partial.parent.glob("*.ckpt")]
    full = shutil.disk_usage(partial.parent).free < max([*sizes, 2**20])
    code = errno.ENOSPC if full else errno.EIO
    return OSError(code, os.strerror(code), str(partial))


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

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the best checkpoint, its score and the top-k of the whole run on resume.

        Each run writes into a fresh folder, so Lightning sees a changed ``dirpath`` and keeps
        only ``best_model_path``: the resumed part would then rank its checkpoints alone and the
        final test could take a worse one. The saved paths are absolute and their files still
        exist, so the bookkeeping stays valid; Lightning never removes a file outside the
        current folder, so the earlier run's checkpoints are kept. A checkpoint by another
        monitor, or one whose files are gone, is left to Lightning's rule (with its warning).
        """
        saved = state_dict.get("dirpath", self.dirpath)
        paths = [state_dict.get("best_model_path"), *state_dict.get("best_k_models", {})]
        if (
            saved == self.dirpath
            or state_dict.get("monitor") != self.monitor
            or not all(Path(path).is_file() for path in paths if path)
        ):
            super().load_state_dict(state_dict)
            return
        self.best_model_score = state_dict["best_model_score"]
        self.best_model_path = state_dict["best_model_path"]
        self.best_k_models = dict(state_dict.get("best_k_models", {}))
        self.kth_best_model_path = state_dict.get("kth_best_model_path", "")
        self.kth_value = state_dict.get("kth_value", self.kth_value)
        self.last_model_path = state_dict.get("last_model_path", "")

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
