"""The per-run plot of test predictions against labels that a sweep uploads for each trial."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from hydralab.training.prediction_plot import write_prediction_plot


def test_the_plot_lies_beside_its_csv(tmp_path: Path):
    csv = tmp_path / "test_predictions.csv"
    pd.DataFrame(
        {"subject": list("abcd"), "label": [1, 2, 3, 4], "prediction": [1, 3, 2, 4]}
    ).to_csv(csv, index=False)
    png = write_prediction_plot(csv)
    assert png == tmp_path / "test_predictions.png"
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 300
    other = write_prediction_plot(csv, tmp_path / "elsewhere.png")
    assert other.is_file()


@pytest.mark.parametrize(
    "frame", [pd.DataFrame({"label": [1.0]}), pd.DataFrame(columns=["label", "prediction"])]
)
def test_a_csv_without_predictions_is_refused_naming_it(tmp_path: Path, frame: pd.DataFrame):
    csv = tmp_path / "p.csv"
    frame.to_csv(csv, index=False)
    with pytest.raises(ValueError, match=f"{csv}: expected rows with columns label, prediction"):
        write_prediction_plot(csv)
    assert not csv.with_suffix(".png").exists()
