"""Robustness of a run: paths with spaces, negative labels, an output folder that cannot be
written, a disk filling up during a checkpoint, Ctrl-C followed by ``--ckpt_path last`` (which
keeps the best of the whole run), checkpoints that cannot serve, and failed starts (no litter).

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
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import pytest
import torch
import yaml

from hydralab.cli import main
from hydralab.data.datamodule import HydraDataModule
from hydralab.training.checkpoints import LAST_CHECKPOINT, CheckpointWriteError
from hydralab.training.outputs import PREDICTION, TEST_PREDICTIONS
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


@pytest.mark.slow
def test_disk_full_as_torch_reports_it_is_one_line_from_the_command_line(
    tmp_path: Path, csv: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    """torch.save's zip writer says ``RuntimeError: [enforce fail at inline_container.cc:672]
    unexpected pos`` on a full disk: the CLI still prints one line, exits 2, keeps step 2's."""
    real_save, real_usage = torch.save, shutil.disk_usage

    def fills_the_disk(obj, f, *args, **kwargs):
        if not isinstance(obj, dict) or obj.get("global_step", 0) < 4:
            return real_save(obj, f, *args, **kwargs)
        f.write(b"\x00" * 1000)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    def no_room(path):
        return real_usage(path)._replace(free=0)

    monkeypatch.setattr(torch, "save", fills_the_disk)
    monkeypatch.setattr(shutil, "disk_usage", no_room)
    assert main(_args(csv, tmp_path / "runs", "--trainer.max_steps=6")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "RuntimeError" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("hydralab:")]
    assert line == err.strip().splitlines()[-1]
    assert line.startswith("hydralab: error: could not write checkpoint") and "at step 4" in line
    assert "No space left on device" in line and "--ckpt_path last" in line
    (checkpoints,) = (tmp_path / "runs" / "blobs-hydranet").glob("version_*/checkpoints")
    monkeypatch.setattr(torch, "save", real_save)
    files = sorted(checkpoints.iterdir())
    assert [p.name for p in files] == ["best-epoch=0-step=2.ckpt", LAST_CHECKPOINT]
    assert [_step(p) for p in files] == [2, 2]


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

    # Resume: "last" is the newest last.ckpt of this tracking.root/name, and the run goes on
    # in the folder that holds it: no new version_N.
    resumed = run_cli(_args(csv, root, "--trainer.max_steps=6", "--ckpt_path=last"))
    assert resumed.run_dir == interrupted.resolve()
    assert len(list((root / "blobs-hydranet").iterdir())) == 2
    config = yaml.safe_load((resumed.run_dir / "config.yaml").read_text())
    assert config["ckpt_path"] == str(last)
    assert config["weights_only"] is True
    assert resumed.trainer.global_step == 6
    steps = pd.read_csv(resumed.run_dir / "metrics.csv")["step"]
    assert steps.min() == 0 and steps.max() >= 5  # the first part's rows, then the resumed ones


def test_ckpt_path_last_without_a_previous_run(tmp_path: Path, csv: Path):
    with pytest.raises(RunFolderError, match="--ckpt_path=last: no last.ckpt in"):
        run_cli(_args(csv, tmp_path / "runs", "--ckpt_path=last", subcommand="test"))


@pytest.mark.slow
def test_a_resumed_run_tests_the_best_checkpoint_of_the_whole_run(tmp_path: Path, csv: Path):
    """Ctrl-C at step 5, then ``--ckpt_path last``: the same best and test metrics as a run of
    eight steps in one go (seed 0). Here the best is step 2's, before the interruption, and the
    resumed part validates worse: without the restored bookkeeping it would test one of its own.
    """
    whole = run_cli(_args(csv, tmp_path / "whole", "--trainer.max_steps=8"))
    root = tmp_path / "interrupted"
    with pytest.raises(RunInterrupted):
        run_cli(_args(csv, root, "--trainer.max_steps=8"), callbacks=[CtrlC(at=5)])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="The dirpath has changed")
        resumed = run_cli(_args(csv, root, "--trainer.max_steps=8", "--ckpt_path=last"))

    expected, got = whole.trainer.checkpoint_callback, resumed.trainer.checkpoint_callback
    assert Path(got.best_model_path).name == Path(expected.best_model_path).name
    assert _step(Path(got.best_model_path)) == _step(Path(expected.best_model_path)) == 2
    assert Path(got.best_model_path).parent.parent == resumed.run_dir  # one folder, one run
    assert float(got.best_model_score) == pytest.approx(float(expected.best_model_score))
    metrics = pd.read_csv(resumed.run_dir / "metrics.csv")
    own = metrics[metrics["step"] >= 4]["val/icc_c1"].dropna()  # resumed from step 4
    assert len(own) == 2 and (own < float(got.best_model_score)).all()
    assert resumed.test_metrics == pytest.approx(whole.test_metrics, abs=1e-6)
    tested = pd.read_csv(resumed.run_dir / TEST_PREDICTIONS)
    assert tested[PREDICTION].tolist() == pytest.approx(
        pd.read_csv(whole.run_dir / TEST_PREDICTIONS)[PREDICTION].tolist(), abs=1e-6
    )


# -- a checkpoint that cannot serve -------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A dataset and the best checkpoint of a two-step run on it."""
    folder = tmp_path_factory.mktemp("trained")
    csv = make_tiny_dataset(folder / "data", size=12)
    fit = run_cli(_args(csv, folder / "runs", "--trainer.max_steps=2"))
    return csv, Path(fit.trainer.checkpoint_callback.best_model_path)


def _spoil(good: Path, path: Path, case: str) -> Path:
    checkpoint = torch.load(good, weights_only=True)
    if case == "garbage":
        path.write_bytes(b"\x80\x02cos\nsystem\n.")  # torch's own error says weights_only=False
    elif case == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif case == "bare-state-dict":
        torch.save(checkpoint["state_dict"], path)
    else:  # another model: one more key, and one of another shape
        weights = checkpoint["state_dict"]
        first = next(key for key, value in weights.items() if value.ndim)
        weights[first] = torch.zeros(3, 3)
        if case == "other-model-keys":
            weights["head.extra.weight"] = torch.zeros(1)
        torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("subcommand", ["fit", "test", "predict"])
@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("garbage", "holds objects that a safe (weights-only) load refuses (os.system)"),
        ("truncated", "is not a PyTorch checkpoint (truncated or not a torch.save file)"),
        ("bare-state-dict", "is a bare state_dict, not a Lightning checkpoint"),
        ("other-model-keys", "holds weights of another model: missing keys none, unexpected"),
        ("other-model-shapes", "holds weights of another model: model."),
    ],
)
def test_an_unusable_checkpoint_is_one_line_naming_the_file(
    tmp_path: Path, trained: tuple[Path, Path], capsys, subcommand: str, case: str, message: str
):
    csv, good = trained
    path = _spoil(good, tmp_path / f"{case}.ckpt", case)
    root = tmp_path / "runs"
    assert main(_args(csv, root, f"--ckpt_path={path}", subcommand=subcommand)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hydralab: error: {path} ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err and "weights_only=False" not in err
    assert not list(root.glob("*/version_*"))  # refused before a run folder was claimed


# -- no litter: a start that fails leaves no run folder ------------------------------------------


class FailsAt(pl.Callback):
    """A ValueError (as a bad value found mid-run would raise) before training step ``at``."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.at:
            raise ValueError(f"failed at step {self.at}")


def test_a_dataset_error_in_setup_leaves_no_run_folder(tmp_path: Path, csv: Path, capsys):
    scan = csv.parent / pd.read_csv(csv)["image"].iloc[-1]  # a test scan: read in setup
    scan.write_bytes(b"not a NIfTI file")
    root = tmp_path / "runs"
    assert main(_args(csv, root, subcommand="fit")) == 2
    err = capsys.readouterr().err
    assert str(scan) in err and "Traceback" not in err
    assert not list(root.glob("*/version_*"))
    # `test` without a checkpoint is refused before setup (an untrained model is no result)
    assert main(_args(csv, root, subcommand="test")) == 2
    assert "test needs --ckpt_path" in capsys.readouterr().err
    assert not list(root.glob("*/version_*"))


def test_a_failure_while_making_the_trainer_leaves_no_run_folder(
    tmp_path: Path, csv: Path, monkeypatch: pytest.MonkeyPatch
):
    def no_wandb(run_dir: Path, **kwargs):
        (run_dir / "wandb" / "run-x").mkdir(parents=True)  # W&B had started writing
        (run_dir / "wandb" / "run-x" / "run-x.wandb").write_bytes(b"header")
        raise ValueError("W&B could not start")

    monkeypatch.setattr("hydralab.training.runner.make_wandb_logger", no_wandb)
    root = tmp_path / "runs"
    with pytest.raises(ValueError, match="W&B could not start"):
        run_cli(_args(csv, root, "--tracking.wandb_mode=offline"))
    assert (root / "blobs-hydranet").is_dir() and not list(root.glob("*/version_*"))


@pytest.mark.slow
def test_a_run_that_trained_a_step_keeps_its_folder(tmp_path: Path, csv: Path):
    root = tmp_path / "runs"
    with pytest.raises(ValueError, match="failed at step 3"):
        run_cli(_args(csv, root), callbacks=[FailsAt(at=3)])
    (run_dir,) = root.glob("*/version_*")
    assert (run_dir / "config.yaml").is_file() and (run_dir / "train_subjects.csv").is_file()
    assert _step(run_dir / "checkpoints" / LAST_CHECKPOINT) == 2
    with pytest.raises(ValueError, match="failed at step 0"):  # before its first step: removed
        run_cli(_args(csv, root), callbacks=[FailsAt(at=0)])
    assert list(root.glob("*/version_*")) == [run_dir]
