"""A report logged to W&B: one run in the study's group, its CSVs as Tables, its PNGs as
Images and every file in one ``report`` artifact, read back from the offline log."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hydralab.reports.wandb_upload import log_report_to_wandb
from hydralab.training.prediction_plot import write_prediction_plot
from tests.helpers.wandb_log import logged_tables, read_offline_run


def test_the_reports_tables_and_figures_reach_a_run_in_the_studys_group(tmp_path: Path):
    runs = pd.DataFrame(
        {"method": ["baseline", "hydranet"], "label": [1.0, 2.0], "prediction": [1.5, 2.5]}
    )
    runs_csv = tmp_path / "runs.csv"
    runs.to_csv(runs_csv, index=False)
    figure = write_prediction_plot(runs_csv, tmp_path / "learning_curves.png")
    table = tmp_path / "lc.md"
    table.write_text("| a |\n|---|\n| 1 |\n")

    folder = log_report_to_wandb("lc", [table, runs_csv, figure], tmp_path / "wandb-save")
    assert folder is not None and folder.is_relative_to(tmp_path / "wandb-save")
    run = read_offline_run(folder)
    assert run["run"]["name"] == "report-lc"
    assert (run["run"]["group"], run["run"]["job_type"]) == ("lc", "report")
    assert run["run"]["exit_code"] == 0
    ((_, logged),) = logged_tables(folder, "report/runs")
    pd.testing.assert_frame_equal(logged, runs, check_dtype=False)
    (row,) = [r for r in run["history"] if "report/learning_curves._type" in r]
    assert row["report/learning_curves._type"] == "image-file"
    (artifact,) = [a for a in run["artifacts"] if a["type"] == "report"]
    assert sorted(artifact["files"]) == ["lc.md", "learning_curves.png", "runs.csv"]


def test_disabled_logs_nothing(tmp_path: Path):
    assert log_report_to_wandb("lc", [], tmp_path, mode="disabled") is None
    assert not (tmp_path / "wandb").exists()
