"""Run folders: one per run, claimed atomically, and removed again when its start fails; and
the interruption that says how to resume a run."""

from __future__ import annotations

import shutil
from pathlib import Path

from hydralab.training.outputs import TRAIN_SUBJECTS

START_FILES = ("config.yaml", "hparams.yaml", "metrics.csv", TRAIN_SUBJECTS)
"""What a run folder holds before its first step: nothing that a failed start must keep."""


class RunFolderError(ValueError):
    """The run folder cannot be created; raised before any scan is read or any step is trained.

    A ``ValueError``, so ``hydralab`` prints the message without a traceback.
    """


def claim_run_dir(parent: Path) -> Path:
    """Create and return the first free ``parent/version_N``.

    ``mkdir`` either creates the folder or fails, so two runs starting at the same moment (sweep
    workers) never share one.

    Raises:
        RunFolderError: ``parent`` cannot be created or written (read-only, a file in the way).
    """
    try:
        return _claim_run_dir(parent)
    except OSError as error:
        reason = error.strerror or str(error)
        raise RunFolderError(
            f"cannot create a run folder in {parent}: {reason} ({error.filename or parent}); "
            "set --tracking.root to a writable folder"
        ) from error


def _claim_run_dir(parent: Path) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    number = sum(1 for p in parent.iterdir() if p.name.startswith("version_"))
    while True:
        candidate = parent / f"version_{number}"
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            number += 1


def discard_run_dir(run_dir: Path, trained_steps: int) -> bool:
    """Remove the folder of a run that failed before computing anything; say if it did.

    A start that fails (a dataset error in setup, a trainer that cannot be made, a W&B that
    cannot start) would otherwise leave a ``version_N`` that looks like a run. Kept: a run that
    trained a step, and any folder holding a file other than what every start writes.
    """
    if trained_steps > 0 or not run_dir.is_dir():
        return False
    for path in run_dir.rglob("*"):
        parts = path.relative_to(run_dir).parts
        if path.is_file() and parts[0] != "wandb" and parts[-1] not in START_FILES:
            return False
    shutil.rmtree(run_dir, ignore_errors=True)
    return not run_dir.exists()


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run; says where its ``last.ckpt`` is and how to resume.

    A ``KeyboardInterrupt``, so Python callers (a sweep worker) stop as well rather than record
    a failure and go on.
    """

    def __init__(self, run_dir: Path | None, last: Path | None) -> None:
        self.run_dir = run_dir
        self.last = last
        super().__init__(self.resume_hint())

    def resume_hint(self) -> str:
        if self.last is None:
            return f"interrupted before any checkpoint was saved (run folder {self.run_dir})"
        config = self.last.parent.parent / "config.yaml"
        return (
            f"interrupted; {self.last} holds the last saved state. Resume with: "
            f'hydralab fit --config "{config}" --ckpt_path last'
        )
