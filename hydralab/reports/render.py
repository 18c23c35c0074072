"""The report as text: markdown (pandas with ``tabulate``), CSV or LaTeX (pandas' Styler).

CSV keeps every number as a number; markdown and LaTeX show ``mean ± sd`` cells, the per-seed
ICC differences, their mean with the seed-aware interval and verdict, the detectable difference,
convergence, and below the table the power and convergence notes and the per-pair table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hydralab.data.sets import METHODS
from hydralab.reports import plots, run_table, tables
from hydralab.reports.run_table import REPLICATE_NAMES
from hydralab.sweeps.storage import load_study
from hydralab.sweeps.trials import TEST_PREDICTIONS

FORMATS = ("md", "csv", "latex")
SUFFIX = {"md": "md", "csv": "csv", "latex": "tex"}


def display_table(summary: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """The summary with one readable cell per quantity."""
    keys = [key for key in summary.columns if key in keys]
    out = summary[keys].copy()
    for name, column in (("ICC", "icc"), ("MSE", "mse")):
        for method in METHODS:
            means, sds = summary[f"{method}_{column}_mean"], summary[f"{method}_{column}_sd"]
            out[f"{method} {name}"] = [_pm(m, s, 3) for m, s in zip(means, sds, strict=True)]
    out["runs (b/h)"] = [
        f"{int(b)}/{int(h)}"
        for b, h in zip(summary["baseline_n"], summary["hydranet_n"], strict=True)
    ]
    out["ΔICC per seed"] = [d or "–" for d in summary["per_seed_diff"]]
    out[f"mean ΔICC [{LEVEL_TEXT} CI, seeds]"] = [
        _interval(d, lo, hi)
        for d, lo, hi in zip(
            summary["icc_diff"], summary["icc_diff_low"], summary["icc_diff_high"], strict=True
        )
    ]
    out["p"] = [_p(p) for p in summary["icc_diff_p"]]
    out["verdict"] = list(summary["verdict"])
    out["scan-only CI (these runs)"] = [
        "–" if _nan(lo) else f"[{lo:+.3f}, {hi:+.3f}]"
        for lo, hi in zip(summary["scan_ci_low"], summary["scan_ci_high"], strict=True)
    ]
    out["detectable ΔICC (pair / seeds)"] = [
        f"{_mde(a)} / {_mde(b)}"
        for a, b in zip(summary["mde_pair"], summary["mde_seeds"], strict=True)
    ]
    out["converged"] = [_converged(row) for _, row in summary.iterrows()]
    out["not complete"] = [
        "; ".join(part for part in (s, c) if part) or "–"
        for s, c in zip(summary["not_complete"], summary["constant"], strict=True)
    ]
    return out


def display_pairs(pairs: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """The per-pair table with one readable cell per quantity."""
    columns = [c for c in (*keys, *REPLICATE_NAMES) if c in pairs and pairs[c].notna().any()]
    out = pairs[columns].copy()
    out["n test"] = pairs["n_test"]
    for label, column in (
        ("baseline ICC", "icc_baseline"),
        ("hydranet ICC", "icc_hydranet"),
        ("ΔICC", "icc_diff"),
        ("baseline r", "r_baseline"),
        ("hydranet r", "r_hydranet"),
        ("r between", "r_between"),
    ):
        signed = column == "icc_diff"
        out[label] = [_num(v, signed=signed) for v in pairs[column]]
    out["Williams p (Pearson r)"] = [_p(p) for p in pairs["williams_p"]]
    out["permutation p (ΔICC)"] = [_p(p) for p in pairs["permutation_p"]]
    out["baseline stopped"] = list(pairs["baseline_stop"])
    out["hydranet stopped"] = list(pairs["hydranet_stop"])
    out["note"] = [n or "–" for n in pairs["note"]]
    return out


LEVEL_TEXT = "95%"


def _interval(d: float, lo: float, hi: float) -> str:
    if _nan(d):
        return "–"
    return f"{d:+.3f}" if _nan(lo) else f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _num(value: Any, signed: bool = False) -> str:
    return "–" if _nan(value) else (f"{value:+.3f}" if signed else f"{value:.3f}")


def _mde(value: Any) -> str:
    """A detectable difference; above 2, the whole range of an ICC difference, none is."""
    return "> 2" if not _nan(value) and value > 2 else _num(value)


def _p(value: Any) -> str:
    if _nan(value):
        return "–"
    return f"{value:.3g}" if value >= 0.001 else "<0.001"


def _converged(row: pd.Series) -> str:
    """``6/6 on plateau``, ``NOT CONVERGED: 2 of 6 at a cap``, or ``not recorded`` (studies from
    before the stopping rule), with the runs' step range."""
    late, known = int(row["not_converged"]), int(row["converged"]) + int(row["not_converged"])
    steps = "" if _nan(row["steps_max"]) else f" ({_steps(row['steps_min'], row['steps_max'])})"
    if not known:
        return f"not recorded{steps}"
    if late:
        return f"NOT CONVERGED: {late} of {known} at a cap{steps}"
    return f"{known}/{known} on plateau{steps}"


def _steps(low: float, high: float) -> str:
    return f"{int(low)} steps" if low == high else f"{int(low)}–{int(high)} steps"


def notes(summary: pd.DataFrame, keys: Sequence[str]) -> list[str]:
    """What a reader must know before quoting the table: power, convergence, one-seed rows."""
    lines = []
    for _, row in summary.iterrows():
        if _nan(row["mde_pair"]):
            continue
        text = (
            f"Power, {_where(row, keys)}: {int(row['n_test'])} test scans, predictions of the two "
            f"methods correlated r = {row['r_between']:.2f}: one pair of runs detects "
            f"ΔICC ≥ {row['mde_pair']:.3f} with 80% power"
        )
        if not _nan(row["mde_seeds"]):
            seeds = f"; the mean of {int(row['n_seeds'])} seeds"
            mde = row["mde_seeds"]
            text += f"{seeds}, ΔICC ≥ {mde:.3f}" if mde <= 2 else f"{seeds}, no ΔICC (> 2)"
        lines.append(text + ".")
    points = summary[summary["row"] == "point"]
    late = [_where(row, keys) for _, row in points.iterrows() if row["not_converged"]]
    if late:
        lines.append(
            f"NOT CONVERGED ({'; '.join(late)}): runs stopped at their step or time cap while "
            "validation was still improving; these rows measure learning speed as much as the "
            "method."
        )
    if len(points) and (points["convergence_unknown"] > 0).all():
        lines.append(
            "Convergence not recorded: these runs had no plateau rule, so whether they had "
            "converged is unknown."
        )
    single = [_where(row, keys) for _, row in summary.iterrows() if row["n_seeds"] == 1]
    if single:
        lines.append(
            f"One seed ({'; '.join(single)}): the interval covers test-scan sampling only and "
            "says nothing about the method."
        )
    return lines


def _where(row: pd.Series, keys: Sequence[str]) -> str:
    if row["row"] == "pooled":
        return "all rows pooled"
    return ", ".join(f"{key}={row[key]}" for key in keys if key in row and not _nan(row[key]))


def render(
    summary: pd.DataFrame, keys: Sequence[str], fmt: str, pairs: pd.DataFrame | None = None
) -> str:
    """The summary table (and the per-pair table, if given) in ``fmt`` (md, csv or latex).

    CSV is the summary alone, every number a number; the pairs go to their own CSV.
    """
    if fmt == "csv":
        return summary.to_csv(index=False)
    if fmt not in ("md", "latex"):
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    write = markdown if fmt == "md" else latex
    parts = [write(display_table(summary, keys))]
    lines = notes(summary, keys)
    if lines:
        bullet = "- " if fmt == "md" else ""
        parts.append("\n".join(bullet + (line if fmt == "md" else _tex(line)) for line in lines))
    if pairs is not None and not pairs.empty:
        title = "Per pair, conditional on the two trained models:"
        parts += [title if fmt == "md" else f"% {title}", write(display_pairs(pairs, keys))]
    return "\n\n".join(part.rstrip("\n") for part in parts) + "\n"


def markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of text cells (numbers are not re-formatted, a ``|``
    inside a cell is escaped)."""
    cells = table.map(lambda value: _text(value).replace("|", "\\|"))
    text = cells.to_markdown(index=False, tablefmt="github", disable_numparse=True)
    return text + "\n"


def latex(table: pd.DataFrame) -> str:
    """A booktabs ``tabular`` (needs ``\\usepackage{booktabs}``), special characters escaped."""
    styler = table.style.hide(axis="index")
    styler = styler.format(lambda value: _tex(_text(value)))
    styler = styler.format_index(lambda name: _tex(str(name)), axis=1)
    return styler.to_latex(hrules=True, column_format="l" * len(table.columns))


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
    "≥": r"$\geq$",
    "<": r"$<$",
    ">": r"$>$",
}


def _relative(path: Any, folder: Path) -> Any:
    """A prediction file's path relative to the report folder when it lies inside it, so a
    report folder can be moved or shared with its predictions."""
    if not isinstance(path, str):
        return path
    try:
        return str(Path(path).resolve().relative_to(folder.resolve()))
    except ValueError:
        return path


def _tex(text: str) -> str:
    return "".join(_TEX.get(char, char) for char in text)


def write_report(
    storage: str | None,
    study: str,
    fmt: str = "md",
    out: str | Path = "reports",
    n_resamples: int = 2000,
    seed: int = 0,
    runs_csv: str | Path | None = None,
) -> tuple[str, list[Path]]:
    """Read a study, write ``<out>/<study>.<suffix>``, ``runs.csv``, ``pairs.csv`` and the two
    PNGs. The study comes from its storage, or from a ``runs.csv`` an earlier report wrote.

    Returns the status lines followed by the table (what the command prints) and the files.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if runs_csv is not None:
        runs, keys = run_table.runs_from_csv(runs_csv)
    else:
        if storage is None:
            raise ValueError("give the study's storage or a runs.csv")
        loaded = load_study(storage, study)
        keys = run_table.group_keys(loaded)
        runs = run_table.trial_runs(loaded)
    if runs.empty:
        raise ValueError(f"study {study!r} has no trials yet")
    pairs = tables.collect_pairs(runs, keys)
    summary = tables.summary_table(runs, keys, n_resamples=n_resamples, seed=seed, pairs=pairs)
    per_pair = tables.pair_table(pairs, keys, n_permutations=n_resamples, seed=seed)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    text = render(summary, keys, fmt, per_pair)
    table_path = folder / f"{study}.{SUFFIX[fmt]}"
    table_path.write_text(text)
    runs_path = folder / "runs.csv"
    saved = runs.assign(
        **{TEST_PREDICTIONS: [_relative(p, folder) for p in runs[TEST_PREDICTIONS]]}
    )
    saved.to_csv(runs_path, index=False)
    pairs_path = folder / "pairs.csv"
    per_pair.to_csv(pairs_path, index=False)
    figures = [
        plots.learning_curves(runs, keys, folder / "learning_curves.png"),
        plots.predictions_vs_labels(runs, folder / "predictions_vs_labels.png"),
    ]
    counts = ", ".join(f"{n} {state}" for state, n in run_table.state_counts(runs).items())
    lines = [f"study {study}: {counts}"]
    for _, run in runs[runs["state"] != "complete"].iterrows():
        where = ", ".join(f"{key}={run[key]}" for key in keys if _text(run[key]) != "–")
        trial = "no trial" if _nan(run["number"]) else f"trial {int(run['number'])}"
        note = f": {run['note']}" if run["note"] else ""
        who = f"{run['method']} seed {run['seed']} {where}"
        lines.append(f"  {run['state']}: {who} ({trial}){note}")
    lines += [f"  {line}" for line in run_table.missing_predictions(runs)]
    return "\n".join([*lines, "", text]), [table_path, runs_path, pairs_path, *figures]
