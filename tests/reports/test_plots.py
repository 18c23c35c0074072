"""The report's figures: PNGs written headless, one tick per value of a non-numeric key."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hydralab.reports import plots, run_table
from hydralab.sweeps.storage import load_study


def test_both_figures_are_pngs(fake_study: str, tmp_path: Path) -> None:
    runs = run_table.trial_runs(load_study(fake_study, "fake"))
    for path in (
        plots.learning_curves(runs, ["data.n_train"], tmp_path / "curves.png"),
        plots.predictions_vs_labels(runs, tmp_path / "scatter.png"),
    ):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_study_without_training_sizes_is_plotted_against_its_swept_key(tmp_path, monkeypatch):
    """The loss table sweeps `model.loss`, not `data.n_train`: one tick per loss."""
    import matplotlib.pyplot as plt

    runs = pd.DataFrame(
        {
            "number": range(4),
            "state": "complete",
            "method": ["baseline", "baseline", "hydranet", "hydranet"],
            "seed": 0,
            "model.loss": ["mse", "mae", "mse", "mae"],
            "test_icc_c1": [0.4, 0.3, 0.1, 0.0],
            "test_mse": 1.0,
            "test_predictions": None,
            "note": "",
        }
    )
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    assert plots.learning_curves(runs, ["model.loss"], tmp_path / "curves.png").is_file()
    (icc_axis, _) = figures[0].axes
    assert [t.get_text() for t in icc_axis.get_xticklabels()] == ["mae", "mse"]
    assert icc_axis.get_xlabel() == "model.loss"
    baseline = icc_axis.lines[0].get_xydata().tolist()
    assert baseline == [[0.0, 0.3], [1.0, 0.4]]


def test_runs_without_prediction_files_are_plotted(tmp_path: Path) -> None:
    """A baseline without k beside Hydranet runs at two k; no prediction file anywhere."""
    runs = pd.DataFrame(
        {
            "number": range(3),
            "state": "complete",
            "method": ["baseline", "hydranet", "hydranet"],
            "seed": 0,
            "data.n_train": 10,
            "model.k": [None, 2, 4],
            "test_icc_c1": [0.5, 0.7, 0.8],
            "test_mse": 1.0,
            "test_predictions": None,
            "note": "",
        }
    )
    keys = ["data.n_train", "model.k"]
    assert plots.learning_curves(runs, keys, tmp_path / "curves.png").is_file()
    assert plots.predictions_vs_labels(runs, tmp_path / "scatter.png").is_file()
