"""One run's test predictions against the labels, as a PNG beside its predictions CSV.

What a researcher opens first when a trial's ICC looks odd: whether the model predicts one
constant, misses the high labels, or is thrown by a single scan. A sweep uploads it with the CSV
to the trial's Optuna artifacts, so the dashboard shows it next to the trial's curve.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hydralab.training.metrics import agreement_metrics
from hydralab.training.outputs import LABEL, PREDICTION

SUFFIX = ".png"


def write_prediction_plot(csv: str | Path, png: str | Path | None = None) -> Path:
    """Scatter the predictions of a predictions CSV against its labels, with the identity line
    and the test ICC(3,1) and MSE in the title; written to ``png`` (default: the CSV's name with
    ``.png``) and returned.

    Raises:
        ValueError: the CSV has no ``label`` or ``prediction`` column, or no row.
    """
    csv = Path(csv)
    scans = pd.read_csv(csv)
    missing = [column for column in (LABEL, PREDICTION) if column not in scans]
    if missing or scans.empty:
        raise ValueError(f"{csv}: expected rows with columns {LABEL}, {PREDICTION} to plot")
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: runs are headless
    import matplotlib.pyplot as plt

    labels, predictions = scans[LABEL].to_numpy(float), scans[PREDICTION].to_numpy(float)
    title = f"{csv.stem}: {len(scans)} scans"
    if len(scans) >= 2:
        metrics = agreement_metrics(predictions, labels)
        title += f", ICC(3,1) {metrics['icc_c1']:.3f}, MSE {metrics['mse']:.3g}"
    fig, ax = plt.subplots(figsize=(4.8, 4.4), constrained_layout=True)
    ax.scatter(labels, predictions, s=10, alpha=0.6)
    low = min(labels.min(), predictions.min())
    high = max(labels.max(), predictions.max())
    ax.plot([low, high], [low, high], "k--", lw=1, label="prediction = label")
    ax.set(xlabel=LABEL, ylabel=PREDICTION, title=title)
    ax.title.set_fontsize("small")
    ax.legend(fontsize="small", loc="upper left")
    ax.grid(alpha=0.3)
    path = Path(png) if png is not None else csv.with_suffix(SUFFIX)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
