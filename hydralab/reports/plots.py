"""The report's figures as PNG files (matplotlib's Agg backend: no display needed).

- :func:`learning_curves`: test ICC(3,1) and MSE against training-set size, mean ± sd over
  seeds per method (the paper's Figure 3); one line per method and other swept key values;
- :func:`predictions_vs_labels`: every completed run's test predictions against the labels,
  one panel per method, coloured by training-set size, with the identity line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from hydralab.data.sets import METHODS
from hydralab.reports.run_table import TEST_ICC, TEST_MSE
from hydralab.sweeps.trials import TEST_PREDICTIONS
from hydralab.training.outputs import LABEL, PREDICTION

N_TRAIN = "data.n_train"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: a report runs headless
    import matplotlib.pyplot as plt

    return plt


def learning_curves(runs: pd.DataFrame, keys: Sequence[str], path: str | Path) -> Path:
    """ICC and MSE against training-set size with sd error bars; written to ``path``.

    A study that does not sweep ``data.n_train`` (the loss table) is plotted against its first
    swept key instead, one tick per value.
    """
    plt = _pyplot()
    done = runs[runs["state"] == "complete"]
    x_key = N_TRAIN if N_TRAIN in keys else (keys[0] if keys else None)
    others = [key for key in keys if key != x_key]
    ticks: list = []
    if x_key and not pd.api.types.is_numeric_dtype(done[x_key]):
        ticks = sorted(done[x_key].dropna().unique(), key=str)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for (method, *values), group in done.groupby(["method", *others], dropna=False, sort=True):
        pairs = zip(others, values, strict=True)
        label = method + "".join(f", {k}={v}" for k, v in pairs if not pd.isna(v))
        x = group[x_key] if x_key else pd.Series(0, index=group.index)
        if ticks:
            x = x.map({value: i for i, value in enumerate(ticks)})
        for ax, column in zip(axes, (TEST_ICC, TEST_MSE), strict=True):
            stats = group.assign(x=x).groupby("x")[column].agg(["mean", "std"]).sort_index()
            ax.errorbar(
                stats.index,
                stats["mean"],
                yerr=stats["std"].fillna(0),
                marker="o",
                capsize=3,
                label=label,
            )
    for ax, name in zip(axes, ("test ICC(3,1)", "test MSE"), strict=True):
        ax.set_xlabel("training-set size" if x_key == N_TRAIN else (x_key or ""))
        if ticks:
            ax.set_xticks(range(len(ticks)), [str(t) for t in ticks])
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def predictions_vs_labels(runs: pd.DataFrame, path: str | Path) -> Path:
    """Test predictions against labels per method (all completed runs); written to ``path``."""
    plt = _pyplot()
    done = runs[(runs["state"] == "complete") & runs[TEST_PREDICTIONS].notna()]
    fig, axes = plt.subplots(
        1,
        len(METHODS),
        figsize=(9, 4.2),
        constrained_layout=True,
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    sizes = sorted(done[N_TRAIN].dropna().unique()) if N_TRAIN in done else []
    colours = plt.get_cmap("viridis")
    for ax, method in zip(axes[0], METHODS, strict=True):
        lows, highs = [], []
        for _, run in done[done["method"] == method].iterrows():
            if not Path(run[TEST_PREDICTIONS]).is_file():
                continue
            scans = pd.read_csv(run[TEST_PREDICTIONS])
            size = run.get(N_TRAIN)
            shade = sizes.index(size) / max(len(sizes) - 1, 1) if size in sizes else 0.5
            ax.scatter(scans[LABEL], scans[PREDICTION], s=8, alpha=0.5, color=colours(shade))
            lows.append(min(scans[LABEL].min(), scans[PREDICTION].min()))
            highs.append(max(scans[LABEL].max(), scans[PREDICTION].max()))
        if lows:
            ax.plot([min(lows), max(highs)], [min(lows), max(highs)], "k--", lw=1)
        ax.set_title(method)
        ax.set_xlabel("label")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("prediction")
    if sizes:
        handles = [
            plt.Line2D([], [], marker="o", ls="", color=colours(i / max(len(sizes) - 1, 1)))
            for i in range(len(sizes))
        ]
        axes[0][-1].legend(handles, [f"n_train={s:g}" for s in sizes], fontsize="small")
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
