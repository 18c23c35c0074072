"""`hydralab demo`: both methods trained on the same scans, then the report a sweep would get."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hydralab.demo import run_demo

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "pvs"


def _tiny_configs(folder: Path) -> Path:
    """The demo's pvs configs on the tests' tiny scans: no region crop, 4 steps."""
    folder.mkdir()
    for method in ("baseline", "hydranet"):
        config = yaml.safe_load((CONFIGS / f"{method}.yaml").read_text())
        config["data"] = {"batch_size": 4, "n_train": None, "normalization": "zscore"}
        config["trainer"] = {
            "max_steps": 4,
            "val_check_interval": 2,
            "check_val_every_n_epoch": None,
            "log_every_n_steps": 1,
            "enable_model_summary": False,
        }
        config["tracking"] = {"name": f"x-{method}", "wandb_mode": "disabled"}
        (folder / f"{method}.yaml").write_text(yaml.safe_dump(config))
    return folder


def test_demo_fits_both_methods_per_seed_and_prints_the_report(
    tmp_path: Path, tiny_csv: Path, capsys
):
    configs = _tiny_configs(tmp_path / "configs")
    root = tmp_path / "runs"
    runs = run_demo(tiny_csv.parent, configs, root, seeds=2, max_steps=4, plateau=None)

    assert list(zip(runs["method"], runs["seed"], strict=True)) == [
        ("baseline", 0),
        ("hydranet", 0),
        ("baseline", 1),
        ("hydranet", 1),
    ]
    assert (runs["data.n_train"] == 8).all()  # the tiny dataset's train split
    assert runs["test_icc_c1"].map(math.isfinite).all()
    assert (runs["steps"] == 4).all() and (runs["stop_reason"] == "max_steps").all()
    for path in runs["test_predictions"]:
        predictions = pd.read_csv(path)
        assert len(predictions) == 4  # the tiny dataset's test split
    # Each seed's runs are their own folders: seeds are other models, not overwritten ones.
    assert len(set(runs["test_predictions"])) == 4

    printed = capsys.readouterr().out
    assert "[run 4/4] hydranet, seed 1" in printed
    # The report's table: both methods' ICC over 2 seeds, the seed-aware difference, the power.
    assert "ΔICC" in printed and "Power" in printed
    report = root / "report"
    for name in ("demo.md", "runs.csv", "pairs.csv"):
        assert (report / name).is_file(), name
    assert list((report).glob("*.png")), "the report's figures"
    saved = pd.read_csv(report / "runs.csv")
    assert saved["test_icc_c1"].tolist() == runs["test_icc_c1"].tolist()


def test_demo_makes_the_builtin_data_when_it_is_absent(tmp_path: Path, monkeypatch):
    """The first call writes the pvs dataset; the fit itself is not what this test is about."""
    made = []

    def fake_make(spec, out):
        made.append((spec.task, spec.size, Path(out)))
        raise SystemExit("stop after making the data")

    monkeypatch.setattr("hydralab.demo.make_dataset", fake_make)
    with pytest.raises(SystemExit, match="stop after making the data"):
        run_demo(tmp_path / "data", CONFIGS, tmp_path / "runs")
    assert made == [("pvs", 24, tmp_path / "data")]


def test_demo_defaults_to_the_packaged_configs_and_writes_into_the_working_folder(
    tmp_path: Path, monkeypatch
):
    """From a folder without configs/: the shipped pvs configs and plateau rule are used, and
    the data and runs go under the working folder (the full run: tests/test_package.py)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("hydralab.demo.make_dataset", lambda spec, out: None)
    calls = []

    def fake_fit(args, summary):
        calls.append(args)
        raise SystemExit("stop before training")

    monkeypatch.setattr("hydralab.demo.run_cli", fake_fit)
    with pytest.raises(SystemExit, match="stop before training"):
        run_demo()
    (args,) = calls
    assert args[:3] == [
        "fit",
        f"--config={CONFIGS / 'baseline.yaml'}",
        f"--config={CONFIGS.parent / 'plateau.yaml'}",
    ]
    assert "--data.csv=data/pvs/dataset.csv" in args and "--tracking.root=runs/demo" in args
