"""Tables from a fake study: failed, pruned and missing runs said as such, never averaged in;
baseline runs serve every value of a Hydranet-only key; the three text formats."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from hydralab.reports import plots, tables
from hydralab.reports.render import render


@pytest.fixture
def runs(fake_study: str) -> pd.DataFrame:
    return tables.trial_runs(tables.load_study(fake_study, "fake"))


def test_runs_hold_each_state(runs: pd.DataFrame) -> None:
    assert tables.state_counts(runs) == {"complete": 5, "failed": 1, "missing": 1, "pruned": 1}
    failed = runs[runs["state"] == "failed"].iloc[0]
    assert (failed["method"], failed["seed"], failed["data.n_train"]) == ("baseline", 1, 16)
    assert failed["note"] == "ValueError: NaN loss"
    missing = runs[runs["state"] == "missing"].iloc[0]
    assert pd.isna(missing["number"]) and missing["method"] == "hydranet"
    assert tables.missing_predictions(runs) == []


def test_summary_counts_completed_runs_only(runs: pd.DataFrame) -> None:
    summary = tables.summary_table(runs, ["data.n_train"], n_resamples=100)
    summary = summary[summary["row"] == "point"].set_index("data.n_train")
    assert summary.loc[8, "baseline_n"] == 1 and summary.loc[8, "hydranet_n"] == 2
    assert math.isnan(summary.loc[8, "baseline_icc_sd"])  # one run: no sd, not 0
    done = runs[(runs["state"] == "complete") & (runs["method"] == "hydranet")]
    expected = done[done["data.n_train"] == 8]["test_icc_c1"]
    assert summary.loc[8, "hydranet_icc_mean"] == pytest.approx(expected.mean())
    assert summary.loc[8, "n_pairs"] == 1  # only seed 0 has both methods
    assert (
        summary.loc[8, "icc_diff_low"]
        < summary.loc[8, "icc_diff"]
        < summary.loc[8, "icc_diff_high"]
    )
    assert "pruned" in summary.loc[8, "not_complete"]
    assert "failed (ValueError: NaN loss)" in summary.loc[16, "not_complete"]
    assert "hydranet seed 1 missing" in summary.loc[16, "not_complete"]


def test_formats(runs: pd.DataFrame) -> None:
    summary = tables.summary_table(runs, ["data.n_train"], n_resamples=50)
    md = render(summary, ["data.n_train"], "md")
    assert md.splitlines()[0].startswith("| data.n_train | baseline ICC")
    assert len(md.split("\n\n")[0].splitlines()) == 5 and "±" in md
    latex = render(summary, ["data.n_train"], "latex")
    assert r"\toprule" in latex and r"data.n\_train" in latex and r"$\pm$" in latex
    csv = render(summary, ["data.n_train"], "csv")
    assert csv.splitlines()[0].startswith("data.n_train,row,baseline_icc_mean")
    with pytest.raises(ValueError, match="unknown format"):
        render(summary, ["data.n_train"], "html")


def test_baseline_serves_every_k(tmp_path: Path) -> None:
    """A baseline run has no k (it trains with k=1): it is compared with Hydranet at each k."""
    rows = [
        ("baseline", 0, None, 0.5),
        ("hydranet", 0, 2, 0.7),
        ("hydranet", 0, 4, 0.8),
    ]
    runs = pd.DataFrame(
        [
            {
                "number": i,
                "state": "complete",
                "method": m,
                "seed": s,
                "data.n_train": 10,
                "model.k": k,
                "test_icc_c1": v,
                "test_mse": 1.0,
                "test_predictions": None,
                "note": "",
            }
            for i, (m, s, k, v) in enumerate(rows)
        ]
    )
    summary = tables.summary_table(runs, ["model.k", "data.n_train"])
    assert list(summary.columns[:2]) == ["data.n_train", "model.k"]
    assert list(summary["model.k"]) == [2, 4]
    assert list(summary["baseline_n"]) == [1, 1]
    assert list(summary["n_pairs"]) == [0, 0]  # no prediction files: no test, said by n_pairs
    keys = ["data.n_train", "model.k"]
    assert plots.learning_curves(runs, keys, tmp_path / "curves.png").is_file()
    assert plots.predictions_vs_labels(runs, tmp_path / "scatter.png").is_file()


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
