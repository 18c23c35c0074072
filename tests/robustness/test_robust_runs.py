"""Robustness of a run: paths with spaces, negative labels, an output folder that cannot be
written, a disk filling up during a checkpoint, and Ctrl-C followed by ``--ckpt_path last``.

Tiny runs: 12^3 scans, one set of K = 4 a step, two steps an epoch, validation every epoch (so a
checkpoint every second step; Lightning skips the validation at the ``max_steps`` step itself).
Each case is a row of docs/robustness.md.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import pytest
import torch
import yaml

from hydralab.cli import main
from hydralab.data.datamodule import HydraDataModule
from hydralab.training.checkpoints import LAST_CHECKPOINT, CheckpointWriteError
from hydralab.training.runner import RunFolderError, RunInterrupted, run_cli
from tests.helpers.scans import make_tiny_dataset

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _args(csv: Path, root: Path, *extra: str, subcommand: str = "fit") -> list[str]:
    return [
        subcommand,
        f"--config={CONFIGS / 'blobs' / 'hydranet.yaml'}",
        f"--data.csv={csv}",
        "--data.n_train=null",
        "--data.batch_size=4",
        "--trainer.max_steps=4",
        "--trainer.max_epochs=-1",
        "--trainer.check_val_every_n_epoch=null",
        "--trainer.val_check_interval=2",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        f"--tracking.root={root}",
        "--tracking.wandb_mode=disabled",
        *extra,
    ]


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    return make_tiny_dataset(tmp_path / "data", size=12)


def _step(checkpoint: Path) -> int:
    return torch.load(checkpoint, weights_only=True, map_location="cpu")["global_step"]


# -- inputs that reach a run ------------------------------------------------------------------


@pytest.mark.slow
def test_paths_with_spaces_fit_and_test_from_the_saved_config(tmp_path: Path):
    folder = tmp_path / "my data"
    csv = make_tiny_dataset(folder, size=12)
    table = pd.read_csv(csv)
    for i, image in enumerate(table["image"]):  # images/s00.nii.gz -> "images/scan 00.nii.gz"
        renamed = Path(image).with_name(f"scan {i:02d}.nii.gz")
        (folder / image).rename(folder / renamed)
        table.loc[i, "image"] = str(renamed)
    table.to_csv(csv, index=False)
    root = tmp_path / "my runs"

    fit = run_cli(_args(csv, root))
    assert fit.run_dir.parent == root / "blobs-hydranet"
    tested = pd.read_csv(fit.run_dir / "test_predictions.csv")
    assert all(" " in Path(image).name for image in tested["image"])

    best = fit.trainer.checkpoint_callback.best_model_path
    assert " " in best
    again = run_cli(["test", f"--config={fit.run_dir / 'config.yaml'}", f"--ckpt_path={best}"])
    assert again.test_metrics["test/mse"] == pytest.approx(fit.test_metrics["test/mse"])


@pytest.mark.slow
def test_negative_labels_train_and_come_back_negative(tmp_path: Path, csv: Path):
    table = pd.read_csv(csv)
    table["label"] = -table["label"] - 1.0  # all negative: label_scale=mean uses |label|
    table.to_csv(csv, index=False)
    cli = run_cli(_args(csv, tmp_path / "runs"))
    assert float(cli.model.label_scale) > 0
    tested = pd.read_csv(cli.run_dir / "test_predictions.csv")
    assert (tested["label"] < 0).all()
    assert tested["prediction"].notna().all()
    # The predictions come back negative and in label units: four steps move the mean of f to
    # the mean target, so the mean prediction lies within a factor of 2 of the mean label (a
    # sign lost in training is positive; a scale lost on the way back is ~ mean label / scale).
    mean_label, mean_prediction = tested["label"].mean(), tested["prediction"].mean()
    assert 2 * mean_label < mean_prediction < 0.5 * mean_label < 0


# -- an output folder that cannot be written ---------------------------------------------------


def _never_load(self, stage=None):
    raise AssertionError("scans were loaded although the run folder could not be made")


@pytest.mark.parametrize("case", ["file-in-the-way", "read-only-folder", "read-only-disk"])
def test_unwritable_run_root_stops_before_training_with_a_clear_error(
    tmp_path: Path, csv: Path, monkeypatch: pytest.MonkeyPatch, capsys, case: str
):
    if case == "read-only-folder" and os.geteuid() == 0:
        _read_only_folder_as_an_unprivileged_user()  # root writes into read-only folders
        return
    monkeypatch.setattr(HydraDataModule, "setup", _never_load)
    if case == "file-in-the-way":
        (tmp_path / "runs").write_text("not a folder")
        root, reason = tmp_path / "runs", "Not a directory"
    elif case == "read-only-folder":
        root, reason = tmp_path / "locked" / "runs", "Permission denied"
        (tmp_path / "locked").mkdir(mode=0o555)
    else:
        root, reason = tmp_path / "runs", "Read-only file system"
        real_mkdir = Path.mkdir

        def read_only(self: Path, *args, **kwargs):
            if self.is_relative_to(root):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", read_only)

    with pytest.raises(RunFolderError, match=f"cannot create a run folder in {root}.*{reason}"):
        run_cli(_args(csv, root))
    # From the command line: the message, no traceback, exit code 2.
    assert main(_args(csv, root)) == 2
    assert "set --tracking.root to a writable folder" in capsys.readouterr().err


REPO = Path(__file__).resolve().parents[2]


def _unprivileged_prefix() -> list[str]:
    """A command prefix that drops root to ``nobody``; skips where no tool or user allows it."""
    try:
        nobody, nogroup = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    except KeyError:
        pytest.skip("no 'nobody' user or 'nogroup' group to drop root privileges to")
    if shutil.which("setpriv"):
        prefix = ["setpriv", f"--reuid={nobody}", f"--regid={nogroup}", "--clear-groups"]
    elif shutil.which("runuser"):
        prefix = ["runuser", "-u", "nobody", "--"]
    else:
        pytest.skip("neither setpriv nor runuser is installed to drop root privileges")
    probe = [*prefix, sys.executable, "-c", "import os, hydralab.cli; print(os.geteuid())"]
    result = subprocess.run(probe, cwd=REPO, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        pytest.skip(f"'nobody' cannot run hydralab from {REPO}: {result.stderr.strip()[-300:]}")
    assert result.stdout.strip() == str(nobody)  # privileges really dropped
    return prefix


def _read_only_folder_as_an_unprivileged_user() -> None:
    """The read-only-folder case as ``nobody``: the hydralab command exits 2 naming the folder.

    The scans are readable only by root, so a run that read them before claiming its folder
    would fail on them instead.
    """
    prefix = _unprivileged_prefix()
    with tempfile.TemporaryDirectory() as temporary:
        shared = Path(temporary)
        shared.chmod(0o755)  # nobody may enter; everything below is made by root
        csv = make_tiny_dataset(shared / "data", size=12)
        (csv.parent / "images").chmod(0o700)
        locked = shared / "locked"
        locked.mkdir(mode=0o555)
        home = shared / "home"  # for the caches of matplotlib and friends
        home.mkdir()
        home.chmod(0o777)
        root = locked / "runs"
        env = {**os.environ, "HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1"}
        command = [*prefix, sys.executable, "-m", "hydralab.cli", *_args(csv, root)]
        result = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300
        )
        assert not root.exists()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    parent = root / "blobs-hydranet"  # tracking.root / tracking.name
    assert result.stderr.endswith(
        f"hydralab: error: cannot create a run folder in {parent}: Permission denied ({root}); "
        "set --tracking.root to a writable folder\n"
    )


# -- the disk filling up during a checkpoint -------------------------------------------------


@pytest.mark.slow
def test_disk_full_during_a_checkpoint_keeps_the_previous_ones(
    tmp_path: Path, csv: Path, monkeypatch: pytest.MonkeyPatch
):
    real_save = torch.save

    def fills_the_disk(obj, f, *args, **kwargs):
        """Step 2's checkpoints fit; at step 4 part of the file is written, then ENOSPC."""
        if not isinstance(obj, dict) or obj.get("global_step", 0) < 4:
            return real_save(obj, f, *args, **kwargs)
        f.write(b"\x00" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", fills_the_disk)
    with pytest.raises(CheckpointWriteError) as raised:
        run_cli(_args(csv, tmp_path / "runs", "--trainer.max_steps=6"))
    error = raised.value
    assert error.errno == errno.ENOSPC
    message = str(error)
    assert "could not write checkpoint" in message and "at step 4" in message
    assert "No space left on device" in message
    assert "the checkpoints saved before are intact" in message
    assert "--ckpt_path last" in message

    (checkpoints,) = (tmp_path / "runs" / "blobs-hydranet").glob("version_*/checkpoints")
    files = sorted(p.name for p in checkpoints.iterdir())
    assert files == ["best-epoch=0-step=2.ckpt", LAST_CHECKPOINT]  # no partial file left
    monkeypatch.setattr(torch, "save", real_save)
    assert [_step(checkpoints / name) for name in files] == [2, 2]


# -- Ctrl-C, then resume ------------------------------------------------------------------------


class CtrlC(pl.Callback):
    """Press Ctrl-C before training step ``at`` (a KeyboardInterrupt, as SIGINT raises)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.at:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_ctrl_c_keeps_last_ckpt_and_ckpt_path_last_resumes_from_it(
    tmp_path: Path, csv: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    root = tmp_path / "runs"
    args = _args(csv, root, "--trainer.max_steps=8")

    # From Python (a sweep worker): RunInterrupted, a KeyboardInterrupt, not Lightning's exit(1).
    with pytest.raises(RunInterrupted) as raised:
        run_cli(args, callbacks=[CtrlC(at=3)])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C works again
    first_last = raised.value.last
    assert first_last is not None and _step(first_last) == 2

    # From the command line: the resume hint and exit code 130, no traceback.
    monkeypatch.setattr("sys.argv", ["hydralab", *args])
    with pytest.raises(SystemExit) as exited:
        run_cli(None, callbacks=[CtrlC(at=5)])
    assert exited.value.code == 130
    assert "--ckpt_path last" in capsys.readouterr().err
    (interrupted,) = [
        d for d in (root / "blobs-hydranet").iterdir() if d.name != first_last.parent.parent.name
    ]
    last = interrupted / "checkpoints" / LAST_CHECKPOINT
    assert _step(last) == 4
    assert first_last.is_file()  # an interrupted run never removes checkpoints

    # Resume: "last" is the newest last.ckpt of this tracking.root/name, not the new empty run's.
    resumed = run_cli(_args(csv, root, "--trainer.max_steps=6", "--ckpt_path=last"))
    config = yaml.safe_load((resumed.run_dir / "config.yaml").read_text())
    assert config["ckpt_path"] == str(last)
    assert config["weights_only"] is True
    assert resumed.trainer.global_step == 6
    steps = pd.read_csv(resumed.run_dir / "metrics.csv")["step"]
    assert steps.min() >= 3  # logged from step 4 on (0-based rows), not from 0 again


def test_ckpt_path_last_without_a_previous_run(tmp_path: Path, csv: Path):
    with pytest.raises(RunFolderError, match="--ckpt_path=last: no last.ckpt in"):
        run_cli(_args(csv, tmp_path / "runs", "--ckpt_path=last", subcommand="test"))
