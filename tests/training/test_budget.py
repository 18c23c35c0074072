"""A fair budget: both methods get the same steps and images; early stopping ends a stalled fit."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import yaml

from hydralab.training.runner import run_cli

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


class ImageCounter(pl.Callback):
    """Counts the image slots (real or empty) of every training batch."""

    def __init__(self) -> None:
        self.images = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.images += batch["images"].shape[0] * batch["images"].shape[1]


def _fit(csv: Path, root: Path, method: str, *extra: str, callbacks=()):
    return run_cli(
        [
            "fit",
            f"--config={CONFIGS / 'blobs' / f'{method}.yaml'}",
            f"--data.csv={csv}",
            "--data.n_train=null",
            "--trainer.enable_progress_bar=false",
            "--tracking.wandb_mode=disabled",
            f"--tracking.root={root}",
            *extra,
        ],
        callbacks=callbacks,
    )


@pytest.mark.slow
@pytest.mark.parametrize("method", ["baseline", "hydranet"])
def test_a_step_budget_gives_both_methods_the_same_images(
    tiny_csv: Path, tmp_path: Path, method: str
):
    """8 training scans, batch 4: 7 steps are 28 image slots for either method, across epochs."""
    counter = ImageCounter()
    cli = _fit(tiny_csv, tmp_path, method, "--trainer.max_steps=7", callbacks=[counter])
    assert cli.trainer.global_step == 7
    assert counter.images == 28
    assert cli.trainer.current_epoch >= 3  # the budget ran across epochs of 2 steps


@pytest.mark.slow
def test_early_stopping_config_ends_a_fit_that_stopped_improving(tiny_csv: Path, tmp_path: Path):
    config = yaml.safe_load((CONFIGS / "early_stopping.yaml").read_text())
    (stopper,) = config["trainer"]["callbacks"]
    assert stopper["init_args"]["monitor"] == "val/icc_c1"
    assert stopper["init_args"]["mode"] == "max"
    # No validation can improve by 10 ICC units: with patience 2 the fit stops at its 3rd one.
    stopper["init_args"].update(patience=2, min_delta=10.0)
    path = tmp_path / "early_stopping.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = _fit(
        tiny_csv,
        tmp_path,
        "baseline",
        f"--config={path}",
        "--trainer.max_steps=40",
        "--trainer.val_check_interval=2",
        callbacks=[],
    )
    assert cli.trainer.global_step == 6
    assert cli.trainer.should_stop
