"""A study's trials as a table: one row per run, then one row per training-set size.

The report works from the Optuna storage alone. Each trial contributes its state, method, seed,
swept keys and test metrics (user attributes ``test_icc_c1``, ``test_mse``, ``test_predictions``,
``error``; see :mod:`hydralab.sweeps.objective`). Trials that did not run because another held
their grid point (``skipped``) and failed trials that were queued again (they count through
their retry) are left out, as in the sweep's own counts. A grid point with no trial at all is
reported as ``missing``, so a table never silently averages fewer seeds than the sweep planned.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from hydralab.reports.stats import PairedScans, compare_pair, paired_bootstrap
from hydralab.sweeps.study import journal_path, live_trials

METHODS = ("baseline", "hydranet")
NOT_GROUPED = ("model.method", "seed")
HYDRANET_ONLY = ("model.k", "model.p")
"""Keys a baseline trial never samples (it trains with k=1, p=0): its runs serve every value."""
STATES = {
    TrialState.COMPLETE: "complete",
    TrialState.FAIL: "failed",
    TrialState.PRUNED: "pruned",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
}


def load_study(storage: str, study: str) -> optuna.Study:
    """Open an existing study read-only in spirit (nothing is written), journal files included."""
    journal = journal_path(storage)
    if journal is not None:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        if not journal.is_file():
            raise ValueError(f"journal storage {journal} does not exist")
        backend: Any = JournalStorage(JournalFileBackend(str(journal)))
    else:
        backend = storage
    try:
        return optuna.load_study(study_name=study, storage=backend)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(backend)]
        raise ValueError(f"no study {study!r} in the storage; it holds {names}") from None


def swept_keys(study: optuna.Study) -> list[str]:
    """The keys the sweep varies: from the stored sweep definition, else the trials' params."""
    sweep = study.user_attrs.get("sweep") or {}
    if sweep.get("space"):
        return list(sweep["space"])
    keys: dict[str, None] = {}
    for trial in study.get_trials(deepcopy=False):
        keys.update(dict.fromkeys(trial.params))
    return list(keys)


def group_keys(study: optuna.Study) -> list[str]:
    """The keys a table row is grouped by: every swept key but the method and the seed."""
    return [key for key in swept_keys(study) if key not in NOT_GROUPED]


def trial_runs(study: optuna.Study) -> pd.DataFrame:
    """One row per trial that stands for a run, plus one per grid point with no trial.

    Columns: ``number`` (None for missing), ``state`` (complete, failed, pruned, running,
    waiting, missing), ``method``, ``seed``, the swept keys, ``test_icc_c1``, ``test_mse``,
    ``test_predictions`` and ``note`` (a failed trial's error).
    """
    keys = group_keys(study)
    rows = []
    for trial in live_trials(study.get_trials(deepcopy=False)):
        attrs = trial.user_attrs
        config = attrs.get("config") or {}
        row: dict[str, Any] = {
            "number": trial.number,
            "state": STATES.get(trial.state, trial.state.name.lower()),
            "method": trial.params.get("model.method", config.get("model.method", "hydranet")),
            "seed": attrs.get("seed", trial.params.get("seed")),
        }
        for key in keys:
            row[key] = trial.params.get(key, config.get(key))
        if row["method"] == "baseline":
            for key in HYDRANET_ONLY:
                if key in keys:
                    row[key] = None
        row["test_icc_c1"] = attrs.get("test_icc_c1", math.nan)
        row["test_mse"] = attrs.get("test_mse", math.nan)
        row["test_predictions"] = attrs.get("test_predictions")
        row["note"] = attrs.get("error", "")
        rows.append(row)
    rows += _missing_points(study, rows, keys)
    columns = ["number", "state", "method", "seed", *keys, "test_icc_c1", "test_mse"]
    table = pd.DataFrame(rows, columns=[*columns, "test_predictions", "note"])
    return table.astype({"number": "Int64"})


def _missing_points(
    study: optuna.Study, rows: Sequence[dict[str, Any]], keys: Sequence[str]
) -> list[dict[str, Any]]:
    """Grid points of the stored sweep definition that no trial has started."""
    space = (study.user_attrs.get("sweep") or {}).get("space") or {}
    if not space or not all(isinstance(values, list) for values in space.values()):
        return []  # not a grid: there is no list of expected points
    seen = {_point(row, keys) for row in rows}
    missing = []
    for values in itertools.product(*space.values()):
        point = dict(zip(space, values, strict=True))
        method = point.get("model.method", "hydranet")
        row = {"number": None, "state": "missing", "method": method, "seed": point.get("seed")}
        row.update({key: point.get(key) for key in keys})
        if method == "baseline":
            row.update({key: None for key in HYDRANET_ONLY if key in keys})
        if _point(row, keys) not in seen:
            seen.add(_point(row, keys))
            missing.append({**row, "test_icc_c1": math.nan, "test_mse": math.nan, "note": ""})
    return missing


def _point(row: dict[str, Any], keys: Sequence[str]) -> tuple[Any, ...]:
    return (row["method"], row["seed"], *(_plain(row.get(key)) for key in keys))


def _plain(value: Any) -> Any:
    """None for NaN too, so that a point read from a DataFrame matches one from a dict."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def summary_table(
    runs: pd.DataFrame,
    keys: Sequence[str],
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per value of the grouping keys (training-set size first): both methods' ICC and
    MSE (mean and sd over completed seeds, n completed), runs not completed, and the Hydranet
    minus baseline ICC difference with its bootstrap CI and per-seed Williams p-values.

    A baseline run with no value for a Hydranet-only key (``model.k``, ``model.p``) is paired
    with the Hydranet runs of every value of that key.
    """
    keys = sorted(keys, key=lambda key: key != "data.n_train")
    table = []
    for point in _group_points(runs, keys):
        row: dict[str, Any] = dict(zip(keys, point, strict=True))
        chosen = {method: _select(runs, keys, point, method) for method in METHODS}
        for method, group in chosen.items():
            done = group[group["state"] == "complete"]
            row[f"{method}_icc_mean"] = done["test_icc_c1"].mean()
            row[f"{method}_icc_sd"] = done["test_icc_c1"].std(ddof=1)
            row[f"{method}_mse_mean"] = done["test_mse"].mean()
            row[f"{method}_mse_sd"] = done["test_mse"].std(ddof=1)
            row[f"{method}_n"] = len(done)
        row.update(_comparison(chosen, n_resamples, level, seed))
        row["not_complete"] = _status(pd.concat(chosen.values()))
        table.append(row)
    return pd.DataFrame(table)


def _group_points(runs: pd.DataFrame, keys: Sequence[str]) -> list[tuple[Any, ...]]:
    """Distinct values of the grouping keys, taken from Hydranet rows where only they have one."""
    points = set()
    for _, run in runs.iterrows():
        if run["method"] == "baseline" and any(
            _plain(run[key]) is None for key in keys if key in HYDRANET_ONLY
        ):
            continue
        points.add(tuple(_plain(run[key]) for key in keys))
    if not points and len(runs):  # a baseline-only study
        points = {tuple(_plain(run[key]) for key in keys) for _, run in runs.iterrows()}
    return sorted(points, key=lambda p: tuple((v is None, str(type(v)), v) for v in p))


def _select(
    runs: pd.DataFrame, keys: Sequence[str], point: tuple[Any, ...], method: str
) -> pd.DataFrame:
    mask = runs["method"] == method
    for key, value in zip(keys, point, strict=True):
        column = runs[key].map(_plain)
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


def _comparison(
    chosen: dict[str, pd.DataFrame], n_resamples: int, level: float, seed: int
) -> dict[str, Any]:
    """Pairs by seed, then the bootstrap CI and Williams' p of each pair."""
    done = {m: g[g["state"] == "complete"].set_index("seed") for m, g in chosen.items()}
    pairs = []
    for run_seed in sorted(set(done["baseline"].index) & set(done["hydranet"].index)):
        base = _predictions(done["baseline"].loc[run_seed])
        hydra = _predictions(done["hydranet"].loc[run_seed])
        if base is None or hydra is None:
            continue
        merged = base.merge(hydra, on="subject", suffixes=("_b", "_h"))
        if len(merged) < 4:
            continue
        if not np.allclose(merged["label_b"], merged["label_h"]):
            files = [done[m].loc[run_seed]["test_predictions"] for m in METHODS]
            raise ValueError(
                f"seed {run_seed}: the baseline and Hydranet test predictions give different "
                f"labels for the same subjects ({files[0]} vs {files[1]}); were they made "
                "from the same dataset?"
            )
        merged = merged.rename(columns={"label_b": "label"})
        merged = merged.sort_values("subject")
        pairs.append(
            PairedScans(
                subjects=merged["subject"].astype(str).to_numpy(),
                labels=merged["label"].to_numpy(float),
                baseline=merged["prediction_b"].to_numpy(float),
                hydranet=merged["prediction_h"].to_numpy(float),
            )
        )
    out: dict[str, Any] = {"n_pairs": len(pairs), "icc_diff": math.nan}
    out.update(icc_diff_low=math.nan, icc_diff_high=math.nan, williams_p="")
    if pairs:
        boot = paired_bootstrap(pairs, n_resamples=n_resamples, level=level, seed=seed)
        out.update(icc_diff=boot.difference, icc_diff_low=boot.low, icc_diff_high=boot.high)
        p_values = [compare_pair(pair)["williams_p"] for pair in pairs]
        out["williams_p"] = ", ".join(f"{p:.3g}" for p in p_values)
    return out


def _predictions(run: pd.Series | pd.DataFrame) -> pd.DataFrame | None:
    """A run's test predictions, or None when the file is gone (the status then says so)."""
    if isinstance(run, pd.DataFrame):  # two completed trials for one seed: take the first
        run = run.iloc[0]
    path = run["test_predictions"]
    if not isinstance(path, str) or not Path(path).is_file():
        return None
    table = pd.read_csv(path)
    expected = {"subject", "label", "prediction"}
    if not expected <= set(table.columns):
        raise ValueError(f"{path}: expected columns {sorted(expected)}, got {list(table.columns)}")
    return table[["subject", "label", "prediction"]].astype({"label": float})


def missing_predictions(runs: pd.DataFrame) -> list[str]:
    """Completed trials whose test predictions file is not readable, said per trial."""
    lines = []
    for _, run in runs[runs["state"] == "complete"].iterrows():
        path = run["test_predictions"]
        if not isinstance(path, str) or not Path(path).is_file():
            lines.append(f"trial {run['number']}: test predictions not found ({path})")
    return lines


def state_counts(runs: pd.DataFrame) -> dict[str, int]:
    """How many runs are in each state, for the report's status line."""
    return {str(k): int(v) for k, v in runs["state"].value_counts().sort_index().items()}


__all__ = [
    "group_keys",
    "load_study",
    "missing_predictions",
    "state_counts",
    "summary_table",
    "trial_runs",
]
