"""Run folders: one per run, claimed atomically, removed again when its start fails, and
continued by a resume; the metrics log a continued run keeps; and the interruption that says
how to resume a run."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger

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


def run_dir_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint was saved in (``RUN/checkpoints/NAME.ckpt``), which a resumed
    fit continues instead of claiming a new ``version_N``."""
    folder = Path(checkpoint).resolve().parent
    return folder.parent if folder.name == "checkpoints" else folder


class RunCSVLogger(CSVLogger):
    """Lightning's CSVLogger writing ``metrics.csv`` straight into the run folder.

    Lightning's writer deletes an existing ``metrics.csv`` when it starts. A continued run
    (``keep_before_step`` > 0, the step of the checkpoint it resumes from) keeps the earlier
    rows up to that step and appends the rest; rows the interrupted run logged after its last
    checkpoint are dropped, since those steps are trained again.
    """

    def __init__(self, run_dir: Path, keep_before_step: int = 0) -> None:
        super().__init__(run_dir, name="", version="")
        self.keep_before_step = keep_before_step
        self._restored = False

    @property
    def experiment(self) -> Any:
        if self._restored or self.keep_before_step <= 0:
            return super().experiment
        earlier = _read_metrics(Path(self.log_dir) / "metrics.csv", self.keep_before_step)
        writer = super().experiment  # this deletes the file: write the earlier rows back
        self._restored = True
        for step, row in earlier:
            writer.log_metrics(row, step)
        writer.save()
        return writer


def _read_metrics(path: Path, before_step: int) -> list[tuple[int, dict[str, float]]]:
    """The rows of a ``metrics.csv`` logged before ``before_step``, without their empty cells."""
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as file:
        for row in csv.DictReader(file):
            step = int(float(row.pop("step")))
            values = {key: _number(value) for key, value in row.items() if value not in ("", None)}
            if step < before_step:
                rows.append((step, values))
    return rows


def _number(text: str) -> float:
    """A metrics.csv cell as it was logged: ``3`` stays an int (an epoch), ``0.25`` a float."""
    try:
        return int(text)
    except ValueError:
        return float(text)


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
            return "interrupted before any checkpoint was saved: nothing to resume"
        config = self.last.parent.parent / "config.yaml"
        return (
            f"interrupted; {self.last} holds the last saved state. Resume with: "
            f'hydralab fit --config "{config}" --ckpt_path last'
        )
