"""Checkpoint I/O: atomic writes, a full disk named in the error, ``last.ckpt`` after a plateau."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from hydralab.training.checkpoints import (
    LAST_CHECKPOINT,
    AtomicCheckpointIO,
    CheckpointWriteError,
    RunCheckpoint,
    find_last_checkpoint,
)


def _disk_full(obj, f, *args, **kwargs):
    f.write(b"\x00" * 100)  # part of the file, then ENOSPC
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_atomic_checkpoint_io_leaves_the_old_file_when_a_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    target = tmp_path / "checkpoints" / LAST_CHECKPOINT
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 2}, target)

    monkeypatch.setattr(torch, "save", _disk_full)
    with pytest.raises(CheckpointWriteError) as raised:
        io.save_checkpoint({"global_step": 4}, target)
    assert raised.value.errno == errno.ENOSPC
    assert [p.name for p in target.parent.iterdir()] == [LAST_CHECKPOINT]  # no partial file
    monkeypatch.undo()
    assert torch.load(target, weights_only=True)["global_step"] == 2


def test_a_failed_write_names_the_file_the_step_and_what_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    folder = tmp_path / "version_0" / "checkpoints"
    io = AtomicCheckpointIO()
    best = folder / "best-epoch=0-step=2.ckpt"
    io.save_checkpoint({"global_step": 2}, best)
    monkeypatch.setattr(torch, "save", _disk_full)

    with pytest.raises(CheckpointWriteError) as raised:
        io.save_checkpoint({"global_step": 4}, folder / "best-epoch=1-step=4.ckpt")
    message = raised.value.strerror  # str() adds "[Errno 28]", which hydralab's CLI drops
    assert message.startswith(f"could not write checkpoint {folder / 'best-epoch=1-step=4.ckpt'}")
    assert "at step 4 (No space left on device)" in message
    assert message.endswith("the checkpoints saved before are intact: best-epoch=0-step=2.ckpt")

    monkeypatch.undo()
    io.save_checkpoint({"global_step": 2}, folder / LAST_CHECKPOINT)
    monkeypatch.setattr(torch, "save", _disk_full)
    with pytest.raises(CheckpointWriteError) as raised:
        io.save_checkpoint({"global_step": 4}, folder / LAST_CHECKPOINT)
    config = tmp_path / "version_0" / "config.yaml"
    assert raised.value.strerror.endswith(
        f"intact: {best.name}, {LAST_CHECKPOINT}; free some space, then resume with: "
        f'hydralab fit --config "{config}" --ckpt_path last'
    )


def test_find_last_checkpoint_takes_the_newest_run(tmp_path: Path):
    assert find_last_checkpoint(tmp_path) is None
    older, newer = (tmp_path / f"version_{i}" / "checkpoints" / LAST_CHECKPOINT for i in (3, 1))
    for path in (older, newer):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
    now = time.time()
    os.utime(older, (now - 60, now - 60))
    os.utime(newer, (now, now))
    (tmp_path / "version_2" / "checkpoints").mkdir(parents=True)  # a run with none
    assert find_last_checkpoint(tmp_path) == newer


class Plateau(LightningModule):
    """A model whose validation metric never improves after the first validation."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/score", 1.0)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("val_check_interval", [1.0, 2])
def test_last_ckpt_follows_every_validation_after_a_plateau(
    tmp_path: Path, val_check_interval: float
):
    """The best stays at the first validation; ``last.ckpt`` still moves on to the last one."""
    data = DataLoader(TensorDataset(torch.ones(4, 1)), batch_size=1)
    checkpoint = RunCheckpoint(
        dirpath=tmp_path, monitor="val/score", mode="max", save_last=True, filename="best-{step}"
    )
    trainer = Trainer(
        max_epochs=2,
        val_check_interval=val_check_interval,
        callbacks=[checkpoint],
        plugins=[AtomicCheckpointIO()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(Plateau(), data, data)
    first = 4 if val_check_interval == 1.0 else 2
    assert Path(checkpoint.best_model_path).name == f"best-step={first}.ckpt"
    last = torch.load(tmp_path / LAST_CHECKPOINT, weights_only=False)
    assert last["global_step"] == 8
