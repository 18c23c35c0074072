"""W&B tracking, offline: what goes in through Lightning comes back out of the run's log.

Each wandb run costs a few seconds of startup, so the module makes two: one driven through the
logger API directly (module fixture, shared by the reader tests) and one through a tiny Trainer.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hydralab.training.tracking import (
    INIT_TIMEOUT_S,
    WandbKeyError,
    WandbSummaryCallback,
    _wait_for_exit_record,
    finish_wandb,
    local_run_dirs,
    make_wandb_logger,
)
from tests.helpers.wandb_log import read_offline_run

LONG_TEXT = "x" * 70_000  # spans three 32 KiB blocks of the log: exercises chunk reassembly
STEPS = 300  # enough history to fill several blocks


def _isolate_wandb(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Keep everything wandb writes under `root`, and keep it offline and quiet."""
    for variable in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_PROJECT", "WANDB_RUN_ID"):
        monkeypatch.delenv(variable, raising=False)
    for variable, folder in {
        "WANDB_DIR": "wandb_dir",
        "WANDB_CONFIG_DIR": "config",
        "WANDB_CACHE_DIR": "cache",
        "WANDB_DATA_DIR": "data",
        "WANDB_ARTIFACT_DIR": "artifacts",
    }.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(variable, os.fspath(root / folder))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.setenv("WANDB_DISABLE_CODE", "true")
    monkeypatch.setenv("WANDB_X_DISABLE_STATS", "true")


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One offline run logged through WandbLogger's API; yields its run folder."""
    root = tmp_path_factory.mktemp("wandb_api")
    with pytest.MonkeyPatch.context() as monkeypatch:
        _isolate_wandb(monkeypatch, root)
        logger = make_wandb_logger(
            root / "runs",
            project="hydralab-tests",
            name="api",
            group="unit",
            job_type="train",
            tags=["a", "b"],
            config={"data": {"k": 4, "p": 0.25}, "seed": 7},
        )
        try:
            WandbSummaryCallback().on_fit_start(SimpleNamespace(loggers=[logger]), None)
            logger.log_hyperparams({"lr": 0.01, "notes": LONG_TEXT})
            for step in range(STEPS):
                # best val/icc_c1 (0.9) and val/mse (0.5) at step 100, neither is the last
                icc_c1 = 0.9 if step == 100 else 0.1 + step / 1000
                mse = 0.5 if step == 100 else 1.0 + step / 100
                logger.log_metrics({"val/icc_c1": icc_c1, "val/mse": mse, "train/loss": step}, step)
        finally:
            finish_wandb()
        assert "WANDB_MODE" not in os.environ, "the logger must not switch modes process-wide"
        (run_dir,) = local_run_dirs(root / "runs")
        yield run_dir


def test_logged_values_round_trip(logged_run: Path) -> None:
    assert logged_run.name.startswith("offline-run-")
    run = read_offline_run(logged_run)
    history = run["history"]
    assert [row["trainer/global_step"] for row in history] == list(range(STEPS))
    assert [row["train/loss"] for row in history] == list(range(STEPS))
    assert history[100]["val/icc_c1"] == 0.9
    assert history[-1]["val/mse"] == pytest.approx(1.0 + (STEPS - 1) / 100)
    assert run["summary"]["val/icc_c1"] == {"max": 0.9}
    assert run["summary"]["val/mse"] == {"min": 0.5}
    assert run["summary"]["train/loss"] == STEPS - 1  # undeclared: the last value
    assert run["config"] == {"data": {"k": 4, "p": 0.25}, "seed": 7, "lr": 0.01, "notes": LONG_TEXT}
    assert run["run"] == {
        "id": logged_run.name.rsplit("-", 1)[-1],
        "name": "api",
        "project": "hydralab-tests",
        "group": "unit",
        "job_type": "train",
        "tags": ["a", "b"],
        "exit_code": 0,
    }
    assert read_offline_run(next(logged_run.glob("run-*.wandb"))) == run


def test_reader_agrees_with_wandb_leet(logged_run: Path) -> None:
    wandb_cli = Path(sys.executable).with_name("wandb")
    if not wandb_cli.exists():
        pytest.skip("wandb CLI not installed next to this Python")
    result = subprocess.run(
        [os.fspath(wandb_cli), "leet", "inspect", "--summary", "--json", os.fspath(logged_run)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0 and "No such command" in result.stderr:
        pytest.skip("this wandb has no `leet inspect`")
    assert result.returncode == 0, result.stderr
    reference = json.loads(result.stdout)
    run = read_offline_run(logged_run)
    assert run["summary"] == reference["summary"]
    assert run["config"] == reference["config"]


def test_torn_log_reads_up_to_the_tear(logged_run: Path, tmp_path: Path) -> None:
    log = next(logged_run.glob("run-*.wandb"))
    torn = tmp_path / log.name
    data = log.read_bytes()
    torn.write_bytes(data[: len(data) * 2 // 3])
    run = read_offline_run(torn)
    assert 0 < len(run["history"]) < STEPS
    assert run["run"]["exit_code"] is None  # killed runs never wrote their exit record


def test_waiting_for_the_log_ends_at_its_exit_record(logged_run: Path, tmp_path: Path) -> None:
    """finish_wandb waits for this: wandb.finish() returns before wandb-core writes the log out."""
    log = next(logged_run.glob("run-*.wandb"))
    assert _wait_for_exit_record(log, timeout=0.0)
    header_only = tmp_path / log.name  # what a reader found right after finish, under load
    header_only.write_bytes(log.read_bytes()[:7])
    started = time.monotonic()
    assert not _wait_for_exit_record(header_only, timeout=0.2)
    assert time.monotonic() - started < 5
    assert not _wait_for_exit_record(tmp_path / "missing.wandb", timeout=0.0)


def test_reader_rejects_other_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"expected one run-\*\.wandb file"):
        read_offline_run(tmp_path)
    (tmp_path / "run-abc.wandb").write_bytes(b"not a log")
    with pytest.raises(ValueError, match="not a W&B transaction log"):
        read_offline_run(tmp_path)


def test_summary_rebuilt_from_history_without_summary_records(tmp_path: Path) -> None:
    from wandb.proto import wandb_internal_pb2 as pb

    from tests.helpers.wandb_log import _fold_records

    def history(step: int, icc: float) -> pb.Record:
        record = pb.Record()
        for key, value in (("trainer/global_step", step), ("val/icc_c1", icc)):
            item = record.history.item.add()
            item.key, item.value_json = key, json.dumps(value)
        return record

    metric = pb.Record()
    metric.metric.name = "val/icc_c1"
    metric.metric.summary.max = True
    metric.metric.summary.last = True
    run = _fold_records(iter([metric, history(0, 0.3), history(1, 0.7), history(2, 0.5)]))
    assert run["summary"] == {"trainer/global_step": 2, "val/icc_c1": {"max": 0.7, "last": 0.5}}


class _TwoParameters(pl.LightningModule):
    """y = a x + b, validating to metric values the test chose."""

    def __init__(self, icc_c1: list[float], mse: list[float], lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.linear = nn.Linear(1, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.linear(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        epoch = self.current_epoch
        self.log("val/icc_c1", self.hparams.icc_c1[epoch])
        self.log("val/mse", self.hparams.mse[epoch])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def test_trainer_run_keeps_best_in_summary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _isolate_wandb(monkeypatch, tmp_path)
    logger = make_wandb_logger(
        tmp_path / "runs", project="hydralab-tests", name="trainer", config={"seed": 3}
    )
    loader = DataLoader(TensorDataset(torch.ones(4, 1), torch.ones(4, 1)), batch_size=4)
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=logger,
        callbacks=[WandbSummaryCallback()],
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    try:
        trainer.fit(_TwoParameters(icc_c1=[0.8, 0.6], mse=[2.0, 3.0]), loader, loader)
    finally:
        finish_wandb()
        finish_wandb()  # a second call finds no active run and does nothing

    # Read at once: finish_wandb returns only when wandb-core has written the whole log (before
    # it waited for that, this read found only the log's header when the CPUs were busy).
    (run_dir,) = local_run_dirs(tmp_path / "runs")
    run = read_offline_run(run_dir)
    validation = [row for row in run["history"] if "val/icc_c1" in row]
    assert [row["val/icc_c1"] for row in validation] == pytest.approx([0.8, 0.6])
    assert [row["val/mse"] for row in validation] == pytest.approx([2.0, 3.0])
    assert run["summary"]["val/icc_c1"] == {"max": pytest.approx(0.8)}
    assert run["summary"]["val/mse"] == {"min": pytest.approx(2.0)}
    assert run["config"]["seed"] == 3
    assert run["config"]["icc_c1"] == [0.8, 0.6]  # save_hyperparameters went through too
    assert run["run"]["exit_code"] == 0


def test_finish_wandb_without_a_run_is_a_no_op() -> None:
    finish_wandb()
    finish_wandb()


def test_make_wandb_logger_rejects_bad_arguments(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _isolate_wandb(monkeypatch, tmp_path)
    with pytest.raises(ValueError, match="unknown W&B mode 'dryrun'"):
        make_wandb_logger(tmp_path, project="p", mode="dryrun")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="WANDB_API_KEY"):
        make_wandb_logger(tmp_path, project="p", mode="online")
    with pytest.raises(ValueError, match=r"'wandb\.api_key' looks like a credential"):
        make_wandb_logger(tmp_path, project="p", config={"wandb": {"api_key": "secret"}})


def test_summary_callback_rejects_a_metric_in_both_lists() -> None:
    with pytest.raises(ValueError, match=r"\['val/mse'\].*both max and min"):
        WandbSummaryCallback(max=("val/mse",), min=("val/mse",))


def _finish_and_forget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Finish the run and drop wandb's process-wide setup, which keeps the key it first read."""
    import wandb

    finish_wandb()
    monkeypatch.undo()
    wandb.teardown()


def _closed_port() -> int:
    """A local port nothing listens on: connections are refused at once, as without network."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_online_without_a_server_falls_back_to_offline_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """wandb.init gives up after INIT_TIMEOUT_S (W&B's own retries hung ~100 s), and the run is
    logged offline, with one line saying so and how to upload it later."""
    _isolate_wandb(monkeypatch, tmp_path)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("WANDB_API_KEY", "0123456789" * 4)
    logger = make_wandb_logger(tmp_path / "run", project="p", name="n", mode="online")
    start = time.monotonic()
    try:
        run = logger.experiment
        elapsed = time.monotonic() - start
        assert run.settings.mode == "offline"
        logger.log_metrics({"val/mse": 1.5}, 0)
    finally:
        _finish_and_forget(monkeypatch)
    assert INIT_TIMEOUT_S <= 15 and elapsed < 30, elapsed
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("hydralab")]
    assert line.startswith("hydralab: warning: W&B online failed (CommError: ")
    assert f"logging this run offline instead: upload it later with `wandb sync {tmp_path}" in line
    assert "0123456789" * 4 not in line
    # The failed online attempt keeps its folder (its logs say what failed) beside the run.
    (offline,) = [p for p in local_run_dirs(tmp_path / "run") if p.name.startswith("offline-")]
    assert read_offline_run(offline)["summary"]["val/mse"] == 1.5


def test_a_key_wandb_refuses_is_one_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _isolate_wandb(monkeypatch, tmp_path)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("WANDB_API_KEY", "tiny-key")
    logger = make_wandb_logger(tmp_path / "run", project="p", mode="online")
    start = time.monotonic()
    try:
        with pytest.raises(WandbKeyError, match="W&B refused the key in WANDB_API_KEY") as error:
            logger.experiment  # noqa: B018 (the run starts on first use)
    finally:
        _finish_and_forget(monkeypatch)
    assert time.monotonic() - start < 30
    assert "tiny-key" not in str(error.value) and "\n" not in str(error.value)
    assert "--tracking.wandb_mode=offline" in str(error.value)


def test_run_folders_are_ordered_and_named_by_id_even_when_w_and_b_adds_a_suffix(tmp_path):
    """A resume within the same second as the first start gets ``<id>-1``: still the same run."""
    from hydralab.training.tracking import local_run_dirs, run_id

    names = [
        "offline-run-20261202_153419-pak4ccvx-1",
        "offline-run-20261202_153419-pak4ccvx",
        "run-20261202_153418-older1",
        "offline-run-not-a-run",
    ]
    for name in names:
        (tmp_path / "wandb" / name).mkdir(parents=True)
    found = local_run_dirs(tmp_path)
    assert [p.name for p in found] == [names[2], names[1], names[0]]
    assert [run_id(p) for p in found] == ["older1", "pak4ccvx", "pak4ccvx"]
