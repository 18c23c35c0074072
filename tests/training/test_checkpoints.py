"""Checkpoint I/O: atomic writes, a full disk named in the error, ``last.ckpt`` after a plateau."""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from hydralab.training.checkpoints import (
    LAST_CHECKPOINT,
    AtomicCheckpointIO,
    CheckpointError,
    CheckpointWriteError,
    RunCheckpoint,
    check_weights,
    find_last_checkpoint,
    read_checkpoint,
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


ENFORCE_FAIL = "[enforce fail at inline_container.cc:672] . unexpected pos 6272 vs 6166"


def _torch_short_write(obj, f, *args, **kwargs):
    """What torch.save does on a full disk: a short write, then a RuntimeError with no errno."""
    f.write(b"\x00" * 100)
    raise RuntimeError(ENFORCE_FAIL)


@pytest.mark.parametrize(("free", "code"), [(0, errno.ENOSPC), (10**12, errno.EIO)])
def test_torch_s_runtime_error_on_a_short_write_is_a_checkpoint_write_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free: int, code: int
):
    target = tmp_path / "checkpoints" / LAST_CHECKPOINT
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 2}, target)
    measured: list[Path] = []

    def disk_usage(path):
        measured.append(Path(path))
        assert (Path(path) / f".{LAST_CHECKPOINT}.partial").is_file()  # before it is removed
        return SimpleNamespace(total=10**12, used=10**12 - free, free=free)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    monkeypatch.setattr(torch, "save", _torch_short_write)
    with pytest.raises(CheckpointWriteError) as raised:
        io.save_checkpoint({"global_step": 4}, target)
    assert measured == [target.parent]
    assert raised.value.errno == code
    assert raised.value.strerror.startswith(f"could not write checkpoint {target} at step 4")
    assert f"({os.strerror(code)})" in raised.value.strerror
    assert isinstance(raised.value.__cause__.__cause__, RuntimeError)  # kept for --debug
    assert [p.name for p in target.parent.iterdir()] == [LAST_CHECKPOINT]  # no partial file
    monkeypatch.undo()
    assert torch.load(target, weights_only=True)["global_step"] == 2


def test_another_runtime_error_while_saving_is_not_disguised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    def fails(obj, f, *args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(torch, "save", fails)
    with pytest.raises(RuntimeError, match="CUDA error") as raised:
        AtomicCheckpointIO().save_checkpoint({"global_step": 4}, tmp_path / LAST_CHECKPOINT)
    assert not isinstance(raised.value, OSError)
    assert not list(tmp_path.iterdir())


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
    checkpoint = _plateau_fit(tmp_path, max_epochs=2, val_check_interval=val_check_interval)
    first = 4 if val_check_interval == 1.0 else 2
    assert Path(checkpoint.best_model_path).name == f"best-step={first}.ckpt"
    last = torch.load(tmp_path / LAST_CHECKPOINT, weights_only=False)
    assert last["global_step"] == 8


def _plateau_fit(
    dirpath: Path,
    max_epochs: int,
    ckpt_path: Path | None = None,
    val_check_interval: float = 1.0,
) -> RunCheckpoint:
    data = DataLoader(TensorDataset(torch.ones(4, 1)), batch_size=1)
    checkpoint = RunCheckpoint(
        dirpath=dirpath, monitor="val/score", mode="max", save_last=True, filename="best-{step}"
    )
    trainer = Trainer(
        max_epochs=max_epochs,
        val_check_interval=val_check_interval,
        callbacks=[checkpoint],
        plugins=[AtomicCheckpointIO()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(Plateau(), data, data, ckpt_path=ckpt_path, weights_only=True)
    return checkpoint


def test_a_resume_into_a_new_folder_keeps_the_best_of_the_whole_run(tmp_path: Path):
    """The best (step 4) was saved before the resume; the resumed part never beats it."""
    first = _plateau_fit(tmp_path / "version_0", max_epochs=2)
    best = tmp_path / "version_0" / "best-step=4.ckpt"
    assert first.best_model_path == str(best)

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="The dirpath has changed")
        resumed = _plateau_fit(
            tmp_path / "version_1", max_epochs=4, ckpt_path=tmp_path / "version_0" / LAST_CHECKPOINT
        )
    assert resumed.best_model_path == str(best)
    assert float(resumed.best_model_score) == 1.0
    assert resumed.best_k_models == {str(best): resumed.best_model_score}
    assert resumed.kth_best_model_path == str(best)
    assert float(resumed.kth_value) == 1.0
    assert resumed.last_model_path == str(tmp_path / "version_1" / LAST_CHECKPOINT)
    assert not list((tmp_path / "version_1").glob("best-*.ckpt"))  # nothing better to save
    assert best.is_file()  # the earlier run's checkpoints are never removed


def _state(dirpath: Path, best: Path, monitor: str = "val/score") -> dict:
    score = torch.tensor(0.5)
    return {
        "monitor": monitor,
        "best_model_score": score,
        "best_model_path": str(best),
        "current_score": score,
        "dirpath": str(dirpath),
        "best_k_models": {str(best): score},
        "kth_best_model_path": str(best),
        "kth_value": score,
        "last_model_path": str(dirpath / LAST_CHECKPOINT),
    }


def test_a_checkpoint_saved_before_any_best_restores_quietly(tmp_path: Path):
    """A last.ckpt from before the first validation (e.g. given to predict) has no best."""
    state = {**_state(tmp_path / "version_0", tmp_path / "unused"), "best_model_path": ""}
    state.update(best_model_score=None, best_k_models={}, kth_best_model_path="")
    checkpoint = RunCheckpoint(dirpath=tmp_path / "version_1", monitor="val/score", mode="max")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        checkpoint.load_state_dict(state)
    assert checkpoint.best_model_path == "" and checkpoint.best_model_score is None
    assert checkpoint.last_model_path == str(tmp_path / "version_0" / LAST_CHECKPOINT)


@pytest.mark.parametrize("case", ["restored", "file-gone", "other-monitor"])
def test_resume_bookkeeping_is_kept_only_when_it_is_still_true(tmp_path: Path, case: str):
    old = tmp_path / "version_0"
    old.mkdir()
    best = old / "best-step=2.ckpt"
    if case != "file-gone":
        best.write_bytes(b"checkpoint")
    monitor = "val/other" if case == "other-monitor" else "val/score"
    checkpoint = RunCheckpoint(dirpath=tmp_path / "version_1", monitor="val/score", mode="max")
    if case == "restored":
        checkpoint.load_state_dict(_state(old, best, monitor))
        assert float(checkpoint.best_model_score) == 0.5
        assert checkpoint.best_k_models == {str(best): torch.tensor(0.5)}
        assert checkpoint.last_model_path == str(old / LAST_CHECKPOINT)
        return
    with pytest.warns(UserWarning, match="The dirpath has changed"):  # Lightning's own rule
        checkpoint.load_state_dict(_state(old, best, monitor))
    assert checkpoint.best_model_score is None
    assert checkpoint.best_k_models == {}


# -- a --ckpt_path that cannot serve: which file, what is wrong ----------------------------------


def _lightning_checkpoint() -> dict:
    return {
        "state_dict": {"layer.weight": torch.ones(1, 1), "layer.bias": torch.zeros(1)},
        "pytorch-lightning_version": "2.6.0",
        "hyper_parameters": {"k": 4, "_instantiator": "x"},
        "optimizer_states": [{}],
    }


def _write(path: Path, case: str) -> Path:
    good = _lightning_checkpoint()
    if case == "garbage":
        path.write_bytes(b"this is not a checkpoint\n" * 10)
    elif case == "pickled-code":
        path.write_bytes(b"\x80\x02cos\nsystem\n.")  # torch would advise weights_only=False
    elif case == "truncated":
        torch.save(good, path)
        path.write_bytes(path.read_bytes()[:300])
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "bare":
        torch.save(good["state_dict"], path)
    elif case == "tensor":
        torch.save(torch.ones(3), path)
    elif case == "no-version":
        torch.save({k: v for k, v in good.items() if k != "pytorch-lightning_version"}, path)
    elif case == "weights-only":
        torch.save({k: v for k, v in good.items() if k != "optimizer_states"}, path)
    elif case == "other-hparams":
        torch.save({**good, "hyper_parameters": {"k": 4, "hidden_units": 64}}, path)
    elif case == "legacy-format":  # an old torch.save format: read without mmap
        torch.save(good, path, _use_new_zipfile_serialization=False)
    else:
        torch.save(good, path)
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("garbage", "is not a PyTorch checkpoint (truncated or not a torch.save file)"),
        ("truncated", "is not a PyTorch checkpoint (truncated or not a torch.save file)"),
        ("empty", "is not a PyTorch checkpoint (truncated or not a torch.save file)"),
        ("pickled-code", "holds objects that a safe (weights-only) load refuses (os.system)"),
        ("bare", "is a bare state_dict, not a Lightning checkpoint: it has no state_dict or"),
        ("tensor", "is not a Lightning checkpoint: it holds a Tensor"),
        ("no-version", "is not a Lightning checkpoint: it has no pytorch-lightning_version"),
        ("weights-only", "holds only the model's weights, not the optimizer and loop states"),
        ("other-hparams", "holds another model: its hyperparameters hidden_units are not"),
    ],
)
def test_an_unusable_checkpoint_is_named_with_what_is_wrong(
    tmp_path: Path, case: str, message: str
):
    path = _write(tmp_path / f"{case}.ckpt", case)
    with pytest.raises(CheckpointError) as raised:
        read_checkpoint(path, resume=True, init_args=("k", "p"))
    text = str(raised.value)
    assert text.startswith(str(path)) and message in text, text
    assert "\n" not in text and "weights_only=False" not in text
    assert isinstance(raised.value, ValueError)  # the CLI prints it and exits 2


@pytest.mark.parametrize("case", ["good", "legacy-format"])
def test_a_good_checkpoint_is_read(tmp_path: Path, case: str):
    path = _write(tmp_path / "good.ckpt", case)
    checkpoint = read_checkpoint(path, resume=True, init_args=("k",))
    assert torch.equal(checkpoint["state_dict"]["layer.weight"], torch.ones(1, 1))
    weights_only = _write(tmp_path / "weights.ckpt", "weights-only")
    read_checkpoint(weights_only, resume=False, init_args=("k",))  # test and predict need no more


def test_a_missing_checkpoint_or_a_folder_is_named(tmp_path: Path):
    with pytest.raises(CheckpointError, match=f"checkpoint {tmp_path / 'no.ckpt'} does not exist"):
        read_checkpoint(tmp_path / "no.ckpt", resume=False, init_args=())
    with pytest.raises(CheckpointError, match=f"checkpoint {tmp_path} is a folder"):
        read_checkpoint(tmp_path, resume=False, init_args=())


def test_weights_of_another_model_are_named(tmp_path: Path):
    model = {"layer.weight": torch.ones(1, 1), "layer.bias": torch.zeros(1)}
    check_weights("a.ckpt", dict(model), model)
    renamed = {"layer.weight": torch.ones(1, 1), "head.bias": torch.zeros(1)}
    with pytest.raises(
        CheckpointError,
        match="a.ckpt holds weights of another model: missing keys layer.bias, "
        "unexpected keys head.bias",
    ):
        check_weights("a.ckpt", renamed, model)
    wider = {**model, "layer.weight": torch.ones(4, 1)}
    with pytest.raises(
        CheckpointError,
        match=r"layer.weight has shape \(4, 1\) in the checkpoint, \(1, 1\) in the model",
    ):
        check_weights("a.ckpt", wider, model)


def test_weights_only_false_is_honoured_where_the_user_asked_for_it(tmp_path: Path):
    path = tmp_path / "custom.ckpt"
    torch.save({**_lightning_checkpoint(), "extra": argparse.Namespace(a=1)}, path)
    with pytest.raises(CheckpointError, match="refuses \\(argparse.Namespace\\)"):
        read_checkpoint(path, resume=False, init_args=("k",))
    checkpoint = read_checkpoint(path, resume=False, init_args=("k",), weights_only=False)
    assert checkpoint["extra"].a == 1
