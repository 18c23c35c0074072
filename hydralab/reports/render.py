"""The summary table as text: markdown (by hand, no ``tabulate`` needed), CSV or LaTeX.

CSV keeps every number as a number; markdown and LaTeX show ``mean ± sd`` cells, the ICC
difference with its CI, per-seed Williams p-values and what did not complete.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hydralab.reports.tables import METHODS

FORMATS = ("md", "csv", "latex")
SUFFIX = {"md": "md", "csv": "csv", "latex": "tex"}


def display_table(summary: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """The summary with one readable cell per quantity."""
    keys = [key for key in summary.columns if key in keys]
    out = summary[keys].copy()
    for method in METHODS:
        for name, column in (("ICC", "icc"), ("MSE", "mse")):
            means, sds = summary[f"{method}_{column}_mean"], summary[f"{method}_{column}_sd"]
            out[f"{method} {name}"] = [_pm(m, s, 3) for m, s in zip(means, sds, strict=True)]
        out[f"{method} n"] = summary[f"{method}_n"].astype(int)
    out["ΔICC [95% CI]"] = [
        "–" if _nan(d) else f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        for d, lo, hi in zip(
            summary["icc_diff"], summary["icc_diff_low"], summary["icc_diff_high"], strict=True
        )
    ]
    out["Williams p"] = [p or "–" for p in summary["williams_p"]]
    out["not complete"] = [s or "–" for s in summary["not_complete"]]
    return out


def render(summary: pd.DataFrame, keys: Sequence[str], fmt: str) -> str:
    """The table in ``fmt`` (md, csv or latex)."""
    if fmt == "csv":
        return summary.to_csv(index=False)
    table = display_table(summary, keys)
    if fmt == "md":
        return markdown(table)
    if fmt == "latex":
        return latex(table)
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table; ``|`` inside a cell is escaped."""
    header = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in table.itertuples(index=False):
        cells = [_text(value).replace("|", "\\|") for value in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def latex(table: pd.DataFrame) -> str:
    """A booktabs ``tabular`` (needs ``\\usepackage{booktabs}``), special characters escaped."""
    header = " & ".join(_tex(str(c)) for c in table.columns)
    body = [
        " & ".join(_tex(_text(value)) for value in row) + r" \\"
        for row in table.itertuples(index=False)
    ]
    return "\n".join(
        [
            r"\begin{tabular}{" + "l" * len(table.columns) + "}",
            r"\toprule",
            header + r" \\",
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabular}",
            "",
        ]
    )


def _pm(mean: float, sd: float, digits: int) -> str:
    if _nan(mean):
        return "–"
    return f"{mean:.{digits}f}" if _nan(sd) else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _nan(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _text(value: Any) -> str:
    return "–" if _nan(value) else str(value)


_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "–": "--",
}


def _tex(text: str) -> str:
    return "".join(_TEX.get(char, char) for char in text)


def write_report(
    storage: str,
    study: str,
    fmt: str = "md",
    out: str | Path = "reports",
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[str, list[Path]]:
    """Read a study, write ``<out>/<study>.<suffix>``, ``runs.csv`` and the two PNGs.

    Returns the status lines followed by the table (what the command prints) and the files.
    """
    from hydralab.reports import plots, tables

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    loaded = tables.load_study(storage, study)
    keys = tables.group_keys(loaded)
    runs = tables.trial_runs(loaded)
    if runs.empty:
        raise ValueError(f"study {study!r} has no trials yet")
    summary = tables.summary_table(runs, keys, n_resamples=n_resamples, seed=seed)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    text = render(summary, keys, fmt)
    table_path = folder / f"{study}.{SUFFIX[fmt]}"
    table_path.write_text(text)
    runs_path = folder / "runs.csv"
    runs.to_csv(runs_path, index=False)
    figures = [
        plots.learning_curves(runs, keys, folder / "learning_curves.png"),
        plots.predictions_vs_labels(runs, folder / "predictions_vs_labels.png"),
    ]
    counts = ", ".join(f"{n} {state}" for state, n in tables.state_counts(runs).items())
    lines = [f"study {study}: {counts}"]
    for _, run in runs[runs["state"] != "complete"].iterrows():
        where = ", ".join(f"{key}={run[key]}" for key in keys if _text(run[key]) != "–")
        trial = "no trial" if _nan(run["number"]) else f"trial {int(run['number'])}"
        note = f": {run['note']}" if run["note"] else ""
        who = f"{run['method']} seed {run['seed']} {where}"
        lines.append(f"  {run['state']}: {who} ({trial}){note}")
    lines += [f"  {line}" for line in tables.missing_predictions(runs)]
    return "\n".join([*lines, "", text]), [table_path, runs_path, *figures]
