"""The plateau rule: stop when validation stopped improving for a patience counted in steps, never
before a minimum, and record why the fit ended (configs/plateau.yaml, stopping.json)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

from hydralab.training.callbacks import TestPredictionsCSV
from hydralab.training.outputs import TEST_PREDICTIONS
from hydralab.training.runner import run_cli
from hydralab.training.stopping import STOP_REASONS, STOPPING_JSON, PlateauStopping

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def rise_until(top: int) -> Callable[[int], float]:
    """Validation that improves with every step up to ``top``, then stays flat."""
    return lambda step: min(step, top) / 1000


class Toy(pl.LightningModule):
    """Logs ``val/icc_c1 = curve(global_step)`` at each validation; a step costs microseconds."""

    def __init__(self, curve: Callable[[int], float], fail_at: int | None = None) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.curve = curve
        self.fail_at = fail_at

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.global_step == self.fail_at:
            raise KeyboardInterrupt
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        pass

    def on_validation_epoch_end(self) -> None:
        self.log("val/icc_c1", float(self.curve(self.global_step)))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.zeros(16, 1)), batch_size=2)  # 8 steps an epoch

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.zeros(2, 1)), batch_size=2)


def fit(
    root: Path,
    rule: pl.Callback | None,
    curve: Callable[[int], float],
    every: int = 10,
    max_steps: int = 200,
    ckpt_path: str | None = None,
    **trainer: object,
) -> pl.Trainer:
    model = Toy(curve, fail_at=trainer.pop("fail_at", None))  # type: ignore[arg-type]
    run = pl.Trainer(
        max_steps=max_steps,
        max_epochs=-1,
        val_check_interval=every,
        check_val_every_n_epoch=None,
        callbacks=[rule] if rule is not None else [],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=root,
        accelerator="cpu",
        devices=1,
        **trainer,  # type: ignore[arg-type]
    )
    run.fit(model, ckpt_path=ckpt_path)
    return run


def test_a_plateau_stops_the_fit_patience_steps_after_the_best_and_says_so(tmp_path: Path):
    rule = PlateauStopping(patience_steps=30, min_steps=0)
    trainer = fit(tmp_path, rule, rise_until(40))
    assert trainer.global_step == 70  # best at step 40, then 30 steps without improvement
    assert (rule.best_step, rule.last_step, rule.stopped_step) == (40, 70, 70)
    assert rule.stop_reason == "plateau"
    record = json.loads((tmp_path / STOPPING_JSON).read_text())
    assert record == {
        "stop_reason": "plateau",
        "best_step": 40,
        "last_step": 70,
        "best_value": pytest.approx(0.04),
        "monitor": "val/icc_c1",
        "mode": "max",
        "patience_steps": 30,
        "min_steps": 0,
        "min_delta": 0.0,
        "max_steps": 200,
        "max_time_s": None,
        "message": record["message"],
    }
    assert "30 steps" in record["message"] and "step 40" in record["message"]


def test_it_never_stops_before_min_steps(tmp_path: Path):
    """Flat from the first validation (step 10): patience is spent at 30, min_steps rules."""
    rule = PlateauStopping(patience_steps=20, min_steps=60)
    trainer = fit(tmp_path, rule, lambda step: 0.5)
    assert (trainer.global_step, rule.best_step, rule.stop_reason) == (60, 10, "plateau")


def test_min_delta_ignores_small_rises(tmp_path: Path):
    """+0.001 per validation is not a rise of more than 0.005: the best stays at step 10."""
    rule = PlateauStopping(patience_steps=20, min_steps=0, min_delta=0.005)
    trainer = fit(tmp_path, rule, lambda step: step / 10_000)
    assert (trainer.global_step, rule.best_step) == (30, 10)


def test_a_run_that_keeps_improving_reaches_max_steps_and_says_so(tmp_path: Path):
    rule = PlateauStopping(patience_steps=20, min_steps=0)
    trainer = fit(tmp_path, rule, rise_until(1000), max_steps=50)
    assert trainer.global_step == 50
    assert (rule.stop_reason, rule.best_step, rule.last_step) == ("max_steps", 50, 50)
    assert rule.stopped_step is None
    assert json.loads((tmp_path / STOPPING_JSON).read_text())["stop_reason"] == "max_steps"


def test_max_time_is_recorded_as_max_time(tmp_path: Path):
    rule = PlateauStopping(patience_steps=20, min_steps=0)
    trainer = fit(tmp_path, rule, rise_until(1000), max_time={"seconds": 0})
    assert trainer.global_step < 200
    assert rule.stop_reason == "max_time"
    assert json.loads((tmp_path / STOPPING_JSON).read_text())["max_time_s"] == 0


def test_ctrl_c_is_recorded_as_interrupted(tmp_path: Path):
    rule = PlateauStopping(patience_steps=20, min_steps=0)
    with pytest.raises(SystemExit):  # Lightning's graceful shutdown after Ctrl-C
        fit(tmp_path, rule, rise_until(1000), fail_at=25)
    assert (rule.stop_reason, rule.last_step) == ("interrupted", 25)
    assert json.loads((tmp_path / STOPPING_JSON).read_text())["stop_reason"] == "interrupted"
    assert set(STOP_REASONS) >= {"plateau", "max_steps", "max_time", "interrupted"}


@pytest.mark.parametrize("every", [5, 10, 20])
def test_patience_in_steps_does_not_depend_on_how_often_validation_runs(tmp_path: Path, every: int):
    rule = PlateauStopping(patience_steps=40, min_steps=0)
    trainer = fit(tmp_path, rule, rise_until(40), every=every)
    assert (rule.best_step, trainer.global_step, rule.stop_reason) == (40, 80, "plateau")


def test_non_finite_values_never_count_as_best_nor_stop_the_fit(tmp_path: Path):
    """ICC of constant predictions is NaN; Lightning's EarlyStopping would stop at the first."""
    rule = PlateauStopping(patience_steps=30, min_steps=0)
    trainer = fit(tmp_path, rule, lambda step: math.nan if step < 20 else rise_until(40)(step))
    assert (rule.best_step, trainer.global_step) == (40, 70)


def test_without_a_finite_value_patience_counts_from_the_start(tmp_path: Path):
    rule = PlateauStopping(patience_steps=30, min_steps=0)
    trainer = fit(tmp_path, rule, lambda step: math.nan)
    assert (rule.best_step, rule.best_value, trainer.global_step) == (None, None, 30)


def test_mode_min_stops_when_the_loss_stops_falling(tmp_path: Path):
    rule = PlateauStopping(monitor="val/icc_c1", mode="min", patience_steps=30, min_steps=0)
    trainer = fit(tmp_path, rule, lambda step: 1 - rise_until(40)(step))
    assert (rule.best_step, trainer.global_step) == (40, 70)


def test_the_state_survives_a_checkpoint_and_a_resume_keeps_counting(tmp_path: Path):
    """Cut at max_steps 56 (best at 40), resumed: stops at 70 as an uncut run would, not at 90."""
    first = PlateauStopping(patience_steps=30, min_steps=0)
    trainer = fit(tmp_path, first, rise_until(40), max_steps=56)  # the end of epoch 7
    assert (first.stop_reason, first.best_step) == ("max_steps", 40)
    checkpoint = tmp_path / "cut.ckpt"
    trainer.save_checkpoint(checkpoint)

    saved = torch.load(checkpoint, weights_only=True)["callbacks"][first.state_key]
    restored = PlateauStopping(patience_steps=30, min_steps=0)
    restored.load_state_dict(saved)
    assert (restored.best_step, restored.wait_count) == (40, 1)
    assert float(restored.best_score) == pytest.approx(0.04)

    resumed = PlateauStopping(patience_steps=30, min_steps=0)
    trainer = fit(tmp_path, resumed, rise_until(40), ckpt_path=str(checkpoint))
    assert (trainer.global_step, resumed.best_step, resumed.stop_reason) == (70, 40, "plateau")


def test_a_resume_keeps_the_configured_patience(tmp_path: Path):
    state = PlateauStopping(patience_steps=30, min_steps=0).state_dict()
    longer = PlateauStopping(patience_steps=500, min_steps=0)
    longer.load_state_dict(state)
    assert longer.patience_steps == longer.patience == 500


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("patience_steps", -1, "PlateauStopping: patience_steps must be an integer > 0, got -1"),
        ("patience_steps", 1.5, "PlateauStopping: patience_steps must be an integer > 0, got 1.5"),
        ("min_steps", -1, "PlateauStopping: min_steps must be an integer >= 0, got -1"),
        ("min_delta", -0.1, "PlateauStopping: min_delta must be >= 0, got -0.1"),
        ("mode", "up", "PlateauStopping: mode must be 'max' or 'min', got 'up'"),
        ("monitor", "", "PlateauStopping: monitor must be a name, got ''"),
    ],
)
def test_a_bad_setting_is_named(key: str, value: object, message: str):
    with pytest.raises(ValueError, match=f"^{message}$".replace("(", r"\(").replace(")", r"\)")):
        PlateauStopping(**{key: value})  # type: ignore[arg-type]


def test_min_steps_beyond_max_steps_warns(tmp_path: Path):
    with pytest.warns(UserWarning, match=r"min_steps \(100\) > trainer.max_steps \(20\)"):
        fit(
            tmp_path, PlateauStopping(patience_steps=10, min_steps=100), rise_until(0), max_steps=20
        )


def test_the_config_holds_the_rule_with_a_cap_above_its_minimum():
    config = yaml.safe_load((CONFIGS / "plateau.yaml").read_text())
    (rule,) = config["trainer"]["callbacks"]
    assert rule["class_path"] == "hydralab.training.stopping.PlateauStopping"
    built = PlateauStopping(**rule["init_args"])
    assert (built.monitor, built.mode) == ("val/icc_c1", "max")
    assert config["trainer"]["max_steps"] > built.min_steps + built.patience_steps


@pytest.mark.slow
def test_hydralab_fit_with_the_plateau_config_stops_writes_why_and_resumes(
    tiny_csv: Path, tmp_path: Path
):
    """configs/plateau.yaml after a task config, with small settings: no validation can rise by
    2 ICC units, so the best is the first (step 10). Cut at step 20 by max_steps, then resumed
    with ``--ckpt_path last``: the restored best (step 10) ends the fit at min_steps, step 30
    (a rule that forgot it would take step 30 as its best and stop at 40)."""

    def hydralab_fit(*extra: str):
        return run_cli(
            [
                "fit",
                f"--config={CONFIGS / 'blobs' / 'hydranet.yaml'}",
                f"--config={CONFIGS / 'plateau.yaml'}",
                "--trainer.callbacks.init_args.min_steps=30",
                "--trainer.callbacks.init_args.patience_steps=10",
                "--trainer.callbacks.init_args.min_delta=2.0",
                "--trainer.val_check_interval=10",
                f"--data.csv={tiny_csv}",
                "--data.n_train=null",
                "--trainer.enable_progress_bar=false",
                # W&B on (offline), as users run it: its callback once replaced the config's
                "--tracking.wandb_mode=offline",
                f"--tracking.root={tmp_path / 'runs'}",
                *extra,
            ]
        )

    with pytest.warns(UserWarning, match="cannot stop on a plateau"):
        cut = hydralab_fit("--trainer.max_steps=20")
    record = json.loads((cut.run_dir / STOPPING_JSON).read_text())
    assert (record["stop_reason"], record["best_step"], record["last_step"]) == (
        "max_steps",
        10,
        20,
    )

    cli = hydralab_fit("--ckpt_path=last")
    kinds = [type(callback) for callback in cli.trainer.callbacks]
    assert PlateauStopping in kinds and TestPredictionsCSV in kinds  # trainer_defaults kept
    assert cli.trainer.max_steps == 20000  # the config's cap
    assert cli.trainer.global_step == 30
    record = json.loads((cli.run_dir / STOPPING_JSON).read_text())
    assert record["stop_reason"] == "plateau"
    assert (record["best_step"], record["last_step"], record["min_steps"]) == (10, 30, 30)
    assert (cli.run_dir / TEST_PREDICTIONS).is_file()  # the best checkpoint was tested
    saved = yaml.safe_load((cli.run_dir / "config.yaml").read_text())
    assert saved["trainer"]["callbacks"][0]["init_args"]["patience_steps"] == 10
