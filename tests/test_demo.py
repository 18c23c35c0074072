"""`hydralab demo`: both methods trained on the same scans, test metrics side by side."""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from hydralab.demo import run_demo

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "blobs"


def test_demo_fits_both_methods_and_prints_their_test_metrics(
    tmp_path: Path, tiny_csv: Path, capsys
):
    configs = tmp_path / "configs"
    configs.mkdir()
    for method in ("baseline", "hydranet"):
        config = yaml.safe_load((CONFIGS / f"{method}.yaml").read_text())
        config["data"] = {"batch_size": 4, "n_train": None, "normalization": "percentile"}
        config["trainer"] = {
            "max_steps": 4,
            "val_check_interval": 2,
            "check_val_every_n_epoch": None,
            "log_every_n_steps": 1,
            "enable_model_summary": False,
        }
        config["tracking"] = {"name": f"x-{method}", "wandb_mode": "disabled"}
        (configs / f"{method}.yaml").write_text(yaml.safe_dump(config))
    rows = run_demo(str(tiny_csv.parent), str(configs), str(tmp_path / "runs"))
    assert [row["method"] for row in rows] == ["baseline", "hydranet"]
    for row in rows:
        assert row["n_train"] == 8  # the tiny dataset's train split
        assert all(math.isfinite(value) for value in row["metrics"].values())
        assert (Path(row["run_dir"]) / "test_predictions.csv").is_file()
    printed = capsys.readouterr().out
    assert "| baseline | 8 |" in printed and "| hydranet | 8 |" in printed
