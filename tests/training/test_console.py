"""What a fit prints: step progress with an ETA and the validation ICC, no Lightning adverts or
banners, rounded metrics, and a closing summary that says where everything went."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import pytest
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from hydralab.cli import main
from hydralab.training.console import RunSummary, format_metrics, quiet_lightning

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_quiet_lightning_drops_the_advert_and_banners_only(caplog: pytest.LogCaptureFixture):
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    logger.addHandler(caplog.handler)
    try:
        quiet_lightning()
        caplog.set_level(logging.INFO, logger=logger.name)
        rank_zero_info("💡 Tip: For seamless cloud logging ... litlogger")
        rank_zero_info("GPU available: False, used: False")
        rank_zero_info("TPU available: False, using: 0 TPU cores")
        rank_zero_info("`Trainer.fit` stopped: `max_steps=8` reached.")
    finally:
        logger.removeHandler(caplog.handler)
    # (a set: the record may also reach caplog through the root logger)
    assert {r.getMessage() for r in caplog.records} == {
        "`Trainer.fit` stopped: `max_steps=8` reached."
    }


def test_format_metrics_rounds_to_four_significant_digits():
    text = format_metrics({"test/mse": 46.30833435058594, "test/icc_c1": -0.20139357447624207})
    assert text.splitlines() == ["test/icc_c1  -0.2014", "test/mse     46.31"]


def test_a_summary_names_only_what_the_run_made(tmp_path: Path):
    lines = RunSummary(run_dir=tmp_path, predictions=tmp_path / "p.csv").lines()
    assert [line.split()[0] for line in lines] == ["run", "predictions"]
    assert RunSummary().lines() == []


@pytest.mark.slow
def test_a_fit_prints_steps_eta_icc_rounded_metrics_and_a_summary(
    tiny_csv: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
):
    root = tmp_path / "runs"
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(
            [
                "fit",
                f"--config={CONFIGS / 'blobs' / 'hydranet.yaml'}",
                f"--data.csv={tiny_csv}",
                "--data.n_train=null",
                "--trainer.max_steps=6",
                "--trainer.val_check_interval=2",
                "--trainer.log_every_n_steps=5",  # more than the 2 batches of an epoch here
                f"--tracking.root={root}",
            ]
        )
    out, err = capfd.readouterr()
    assert code == 0, err
    # Lightning's info lines go through logging (here to caplog), its warnings to `warnings`.
    logged = [r.getMessage() for r in caplog.records] + [str(w.message) for w in caught]
    both = "\n".join([out, err, *logged])
    # One bar for the whole fit: steps toward max_steps, elapsed • remaining, validation ICC.
    bar = next(line for line in out.splitlines() if line.startswith("Steps"))
    assert re.search(r"\b6/6\b", bar) and re.search(r"\d:\d\d:\d\d • \d:\d\d:\d\d", bar)
    assert "val/icc_c1" in out and "v_num" not in out and "Epoch" not in out
    for noise in ("litlogger", "GPU available", "TPU available", "smaller than the logging"):
        assert noise not in both
    # The test table, rounded: at most four significant digits.
    values = dict(re.findall(r"^(test/\w+)\s+(\S+)$", out, flags=re.MULTILINE))
    assert set(values) >= {"test/icc_c1", "test/mse"}
    assert all(len(re.sub(r"[-.]|e.*", "", v).lstrip("0")) <= 4 for v in values.values())
    # The summary: where the run, its best checkpoint and its W&B run are.
    (run,) = (root / "blobs-hydranet").iterdir()
    summary = dict(
        line.split(maxsplit=2)[1:] for line in out.splitlines() if line.startswith("run folder")
    )
    assert summary == {"folder": str(run)}
    best = re.search(r"^best checkpoint\s+(\S+) \(val/icc_c1 (\S+)\)$", out, flags=re.MULTILINE)
    assert best and Path(best.group(1)).is_file() and Path(best.group(1)).parent.parent == run
    float(best.group(2))
    assert re.search(r"^test\s+ICC\(3,1\) \S+, MSE \S+ \(.*test_predictions.csv\)$", out, re.M)
    sync = re.search(r"wandb sync (\S+)$", out, flags=re.MULTILINE)
    assert sync and Path(sync.group(1)).is_dir() and Path(sync.group(1)).parent == run / "wandb"
