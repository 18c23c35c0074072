"""A study's runs as pairs and summaries: per pair of runs, and per training-set size.

A baseline and a Hydranet run of one row (the grouping keys of
:func:`~hydralab.reports.run_table.group_keys`) and one replicate (seed, subset seed) form a
pair; the summary combines a row's pairs with the seed-aware statistics of
:mod:`hydralab.reports.verdict`, and the pair table gives the per-pair tests of
:mod:`hydralab.reports.stats`. The runs come from :mod:`hydralab.reports.run_table`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hydralab.data.sets import HYDRANET_ONLY, METHODS
from hydralab.reports.run_table import (
    BEST_STEP,
    LAST_STEP,
    REPLICATE_NAMES,
    STOP_REASON,
    TEST_ICC,
    TEST_MSE,
    plain,
    replicate_of,
)
from hydralab.reports.stats import PairedScans, compare_pair, pearson, scan_bootstrap
from hydralab.reports.verdict import detectable_difference, seed_aware_difference
from hydralab.sweeps.trials import STEPS, TEST_PREDICTIONS
from hydralab.training.outputs import LABEL, PREDICTION, SUBJECT


@dataclass(frozen=True)
class Pair:
    """A baseline and a Hydranet run of one replicate (seed, subset seed) at one table row."""

    point: tuple[Any, ...]
    replicate: tuple[Any, ...]
    scans: PairedScans
    runs: dict[str, pd.Series]


def collect_pairs(runs: pd.DataFrame, keys: Sequence[str]) -> list[Pair]:
    """Every completed baseline/Hydranet pair with readable predictions, row by row.

    A pair shares its row's key values and its replicate: the training seed and, where the
    study sweeps it, the subset seed. Its test scans are the subjects both runs predicted.
    """
    keys = _ordered(keys)
    pairs = []
    for point in _group_points(runs, keys):
        chosen = {method: _select(runs, keys, point, method) for method in METHODS}
        done = {m: g[g["state"] == "complete"] for m, g in chosen.items()}
        by_replicate = {m: _by_replicate(g) for m, g in done.items()}
        common = sorted(set(by_replicate["baseline"]) & set(by_replicate["hydranet"]), key=str)
        for replicate in common:
            found = {m: by_replicate[m][replicate] for m in METHODS}
            scans = _paired_scans(found, replicate)
            if scans is not None:
                pairs.append(Pair(point, replicate, scans, found))
    return pairs


def _by_replicate(group: pd.DataFrame) -> dict[tuple[Any, ...], pd.Series]:
    """One run per replicate (the first, if a grid point completed twice)."""
    out: dict[tuple[Any, ...], pd.Series] = {}
    for _, run in group.iterrows():
        out.setdefault(replicate_of(run), run)
    return out


def _paired_scans(found: dict[str, pd.Series], replicate: tuple[Any, ...]) -> PairedScans | None:
    tables = {m: _predictions(run) for m, run in found.items()}
    if any(table is None for table in tables.values()):
        return None
    merged = tables["baseline"].merge(tables["hydranet"], on=SUBJECT, suffixes=("_b", "_h"))
    if len(merged) < 4:
        return None
    if not np.allclose(merged[f"{LABEL}_b"], merged[f"{LABEL}_h"]):
        files = [found[m][TEST_PREDICTIONS] for m in METHODS]
        raise ValueError(
            f"replicate {_replicate_text(replicate)}: the baseline and Hydranet test predictions "
            f"give different labels for the same subjects ({files[0]} vs {files[1]}); were they "
            "made from the same dataset?"
        )
    merged = merged.sort_values(SUBJECT)
    return PairedScans(
        subjects=merged[SUBJECT].astype(str).to_numpy(),
        labels=merged[f"{LABEL}_b"].to_numpy(float),
        baseline=merged[f"{PREDICTION}_b"].to_numpy(float),
        hydranet=merged[f"{PREDICTION}_h"].to_numpy(float),
    )


def _replicate_text(replicate: tuple[Any, ...]) -> str:
    parts = [f"{name} {value}" for name, value in zip(REPLICATE_NAMES, replicate, strict=True)]
    return ", ".join(
        part for part, value in zip(parts, replicate, strict=True) if value is not None
    )


def _ordered(keys: Sequence[str]) -> list[str]:
    return sorted(keys, key=lambda key: key != "data.n_train")


def summary_table(
    runs: pd.DataFrame,
    keys: Sequence[str],
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    pairs: Sequence[Pair] | None = None,
) -> pd.DataFrame:
    """One row per value of the grouping keys (training-set size first), then, when there are
    several, a ``pooled`` row of all of them (the paper pooled its training-set sizes).

    Each row: both methods' test ICC and MSE (mean and sd over completed runs, n), the per-seed
    ICC differences, their mean with the seed-aware interval, p-value and verdict
    (:mod:`hydralab.reports.verdict`), the scan-only interval (conditional on these runs), the
    smallest difference the test scans (``mde_pair``) and the seeds (``mde_seeds``) detect with
    80 % power, convergence counts and the runs not completed. A baseline run with no value for
    a Hydranet-only key (``model.k``, ``model.p``) serves the Hydranet runs of every value.
    """
    keys = _ordered(keys)
    pairs = collect_pairs(runs, keys) if pairs is None else pairs
    table = []
    for point in _group_points(runs, keys):
        row: dict[str, Any] = {**dict(zip(keys, point, strict=True)), "row": "point"}
        chosen = {method: _select(runs, keys, point, method) for method in METHODS}
        for method, group in chosen.items():
            done = group[group["state"] == "complete"]
            row[f"{method}_icc_mean"] = done[TEST_ICC].mean()
            row[f"{method}_icc_sd"] = done[TEST_ICC].std(ddof=1)
            row[f"{method}_mse_mean"] = done[TEST_MSE].mean()
            row[f"{method}_mse_sd"] = done[TEST_MSE].std(ddof=1)
            row[f"{method}_n"] = len(done)
        both = pd.concat(chosen.values())
        row.update(_comparison([p for p in pairs if p.point == point], n_resamples, level, seed))
        row.update(_convergence(both[both["state"] == "complete"]))
        row["not_complete"] = _status(both)
        table.append(row)
    if len(table) > 1 and len({p.point for p in pairs}) > 1:
        pooled: dict[str, Any] = {**dict.fromkeys(keys, "all"), "row": "pooled"}
        for method in METHODS:
            done = runs[(runs["method"] == method) & (runs["state"] == "complete")]
            pooled[f"{method}_icc_mean"] = done[TEST_ICC].mean()
            pooled[f"{method}_icc_sd"] = math.nan
            pooled[f"{method}_mse_mean"] = done[TEST_MSE].mean()
            pooled[f"{method}_mse_sd"] = math.nan
            pooled[f"{method}_n"] = len(done)
        pooled.update(_comparison(pairs, n_resamples, level, seed))
        pooled.update(_convergence(runs[runs["state"] == "complete"]))
        pooled["not_complete"] = ""
        table.append(pooled)
    return pd.DataFrame(table)


def _group_points(runs: pd.DataFrame, keys: Sequence[str]) -> list[tuple[Any, ...]]:
    """Distinct values of the grouping keys, taken from Hydranet rows where only they have one."""
    points = set()
    for _, run in runs.iterrows():
        if run["method"] == "baseline" and any(
            plain(run[key]) is None for key in keys if key in HYDRANET_ONLY
        ):
            continue
        points.add(tuple(plain(run[key]) for key in keys))
    if not points and len(runs):  # a baseline-only study
        points = {tuple(plain(run[key]) for key in keys) for _, run in runs.iterrows()}
    return sorted(points, key=lambda p: tuple((v is None, str(type(v)), v) for v in p))


def _select(
    runs: pd.DataFrame, keys: Sequence[str], point: tuple[Any, ...], method: str
) -> pd.DataFrame:
    mask = runs["method"] == method
    for key, value in zip(keys, point, strict=True):
        column = runs[key].map(plain)
        if value is None:
            mask &= column.isna()
        elif method == "baseline" and key in HYDRANET_ONLY:
            mask &= column.isna() | (column == value)
        else:
            mask &= column == value
    return runs[mask]


def _status(group: pd.DataFrame) -> str:
    """E.g. ``hydranet seed 2 failed (ValueError: ...); baseline seed 1 missing``."""
    parts = []
    for _, run in group[group["state"] != "complete"].iterrows():
        trial = "" if pd.isna(run["number"]) else f"trial {run['number']} "
        text = f"{run['method']} seed {run['seed']} {trial}{run['state']}"
        parts.append(f"{text} ({run['note']})" if run["note"] else text)
    return "; ".join(parts)


def _comparison(pairs: Sequence[Pair], n_resamples: int, level: float, seed: int) -> dict[str, Any]:
    """The seed-aware difference of a row's pairs (a replicate's points averaged first)."""
    out: dict[str, Any] = {
        "n_pairs": len(pairs),
        "n_seeds": 0,
        "per_seed_diff": "",
        "icc_diff": math.nan,
        "icc_diff_low": math.nan,
        "icc_diff_high": math.nan,
        "icc_diff_p": math.nan,
        "verdict": "no pairs",
        "scan_ci_low": math.nan,
        "scan_ci_high": math.nan,
        "n_test": math.nan,
        "r_between": math.nan,
        "mde_pair": math.nan,
        "mde_seeds": math.nan,
        "constant": "",
    }
    if not pairs:
        return out
    replicates = sorted({p.replicate for p in pairs}, key=str)
    columns = [[i for i, p in enumerate(pairs) if p.replicate == r] for r in replicates]
    per_pair = np.array([p.scans.icc_difference() for p in pairs])
    boot = scan_bootstrap([p.scans for p in pairs], n_resamples, seed)
    per_seed = np.array([per_pair[c].mean() for c in columns])
    boot_seed = np.stack([boot[:, c].mean(axis=1) for c in columns], axis=1)
    aware = seed_aware_difference(per_seed, boot_seed, level)
    alpha = (1 - level) / 2
    scan_low, scan_high = np.nanquantile(boot_seed.mean(axis=1), [alpha, 1 - alpha])
    r_level = _mean([pearson(s, p.scans.labels) for p in pairs for s in _sets(p)])
    r_between = _mean([pearson(p.scans.baseline, p.scans.hydranet) for p in pairs])
    n_test = int(np.median([len(p.scans.labels) for p in pairs]))
    constant = [
        f"{method} {_replicate_text(p.replicate)}" for p in pairs for method in p.scans.constant()
    ]
    out.update(
        n_seeds=aware.n_seeds,
        per_seed_diff=", ".join(f"{d:+.3f}" for d in per_seed),
        icc_diff=aware.difference,
        icc_diff_low=aware.low,
        icc_diff_high=aware.high,
        icc_diff_p=aware.p,
        verdict=aware.verdict(),
        scan_ci_low=float(scan_low),
        scan_ci_high=float(scan_high),
        n_test=n_test,
        r_between=r_between,
        mde_pair=detectable_difference(n_test, r_level, r_between, 1 - level),
        mde_seeds=math.nan if aware.conditional else aware.detectable(),
        constant="; ".join(f"constant predictions: {c}" for c in constant),
    )
    return out


def _mean(values: Sequence[Any]) -> float:
    """The mean of the finite values; NaN (silently) when there are none."""
    finite = [float(v) for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _sets(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    return pair.scans.baseline, pair.scans.hydranet


def _convergence(done: pd.DataFrame) -> dict[str, Any]:
    """How many completed runs stopped on the plateau, and their step range."""
    reasons = done[STOP_REASON].fillna("") if STOP_REASON in done else pd.Series("", done.index)
    steps = pd.to_numeric(done.get(STEPS, pd.Series(dtype=float)), errors="coerce")
    known = reasons[reasons != ""]
    return {
        "converged": int((known == "plateau").sum()),
        "not_converged": int((known != "plateau").sum()),
        "convergence_unknown": int((reasons == "").sum()),
        "steps_min": steps.min(),
        "steps_max": steps.max(),
    }


def pair_table(
    pairs: Sequence[Pair], keys: Sequence[str], n_permutations: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """One row per baseline/Hydranet pair: the per-seed detail behind the summary.

    Both ICCs and Pearson r, the difference, Williams' test (on Pearson r) and the permutation
    test of the ICC difference, conditional on these two trained models; and how each run
    stopped (``<reason> at <last step>, best <best step>``).
    """
    keys = _ordered(keys)
    rows = []
    for pair in pairs:
        row: dict[str, Any] = dict(zip(keys, pair.point, strict=True))
        row.update(dict(zip(REPLICATE_NAMES, pair.replicate, strict=True)))
        row["n_test"] = len(pair.scans.labels)
        row.update(compare_pair(pair.scans, n_permutations, seed))
        for method in METHODS:
            row[f"{method}_stop"] = _stop_text(pair.runs[method])
        rows.append(row)
    return pd.DataFrame(rows)


def _stop_text(run: pd.Series) -> str:
    reason = run.get(STOP_REASON)
    steps = run.get(STEPS)
    if not isinstance(reason, str) or not reason:
        return "–" if plain(steps) is None else f"{int(steps)} steps (no stopping rule recorded)"
    best = run.get(BEST_STEP)
    best_text = "" if plain(best) is None else f", best {int(best)}"
    last = run.get(LAST_STEP, steps)
    last_text = "" if plain(last) is None else f" at {int(last)}"
    return f"{reason}{last_text}{best_text}"


def _predictions(run: pd.Series | pd.DataFrame) -> pd.DataFrame | None:
    """A run's test predictions, or None when the file is gone (the status then says so)."""
    if isinstance(run, pd.DataFrame):  # two completed trials for one seed: take the first
        run = run.iloc[0]
    path = run[TEST_PREDICTIONS]
    if not isinstance(path, str) or not Path(path).is_file():
        return None
    table = pd.read_csv(path)
    expected = [SUBJECT, LABEL, PREDICTION]
    if not set(expected) <= set(table.columns):
        raise ValueError(f"{path}: expected columns {sorted(expected)}, got {list(table.columns)}")
    return table[expected].astype({LABEL: float})
