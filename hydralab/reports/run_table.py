"""A study's runs as one table: a row per trial that stands for a run, and per unstarted point.

The report works from the Optuna storage alone (or a saved ``runs.csv``). Each trial contributes
its state, method, seed (and subset seed), swept keys, test metrics and how it stopped (the user
attributes named in :mod:`hydralab.sweeps.trials`, written by :mod:`hydralab.sweeps.objective`).

Trials that did not run because another held their grid point (``skipped``) and failed trials
that were queued again (they count through their retry) are left out, as in the sweep's own
counts. A grid point with no trial at all is reported as ``missing``, so a table never silently
averages fewer seeds than the sweep planned.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from hydralab.data.sets import HYDRANET_ONLY
from hydralab.sweeps.trials import (
    CONFIG,
    ERROR,
    SEED,
    STEPS,
    STOPPING_ATTRS,
    SWEEP,
    TEST_PREDICTIONS,
    attr_name,
    grid_points,
    live_trials,
    queued_point,
)

METHOD = "model.method"
REPLICATE = ("seed", "data.subset_seed")
"""Config keys that tell two runs of one table row apart: other models of the same method."""
REPLICATE_NAMES = ("seed", "subset_seed")
NOT_GROUPED = (METHOD, *REPLICATE)
TEST_ICC, TEST_MSE = attr_name("test/icc_c1"), attr_name("test/mse")
STOPPING = (STEPS, *STOPPING_ATTRS)
"""How a run stopped; ``plateau`` is the only ``stop_reason`` of a run that converged."""
BEST_STEP, LAST_STEP, STOP_REASON = STOPPING_ATTRS
STATES = {
    TrialState.COMPLETE: "complete",
    TrialState.FAIL: "failed",
    TrialState.PRUNED: "pruned",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
}
MISSING = "missing"
RUN_COLUMNS = ("state", "method", "seed", TEST_ICC, TEST_MSE, TEST_PREDICTIONS)
"""What a saved ``runs.csv`` must hold to be reported again (see :func:`runs_from_csv`)."""


def runs_from_csv(path: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """A study's runs from a ``runs.csv`` that a report wrote, and its grouping keys.

    For results shared without their database (docs/results): prediction paths are read
    relative to the CSV's folder, and every column that is not a run's own (state, metrics,
    stopping, ...) is a swept key.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"runs table {path} does not exist")
    runs = pd.read_csv(path)
    missing = [column for column in RUN_COLUMNS if column not in runs.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; is it a report's runs.csv?")
    for column, default in (("number", None), ("note", ""), (REPLICATE[1], None)):
        if column not in runs.columns:
            runs[column] = default
    for column in STOPPING:
        if column not in runs.columns:
            runs[column] = None
    runs["note"] = runs["note"].fillna("")
    runs[TEST_PREDICTIONS] = [
        str(path.parent / value)
        if isinstance(value, str) and not Path(value).is_absolute()
        else value
        for value in runs[TEST_PREDICTIONS]
    ]
    own = {"number", "note", *RUN_COLUMNS, *STOPPING, *REPLICATE, METHOD}
    keys = [column for column in runs.columns if column not in own]
    return runs.astype({"number": "Int64"}), keys


def swept_keys(study: optuna.Study) -> list[str]:
    """The keys the sweep varies: from the stored sweep definition, else the trials' params."""
    sweep = study.user_attrs.get(SWEEP) or {}
    if sweep.get("space"):
        return list(sweep["space"])
    keys: dict[str, None] = {}
    for trial in study.get_trials(deepcopy=False):
        keys.update(dict.fromkeys(_params(trial)))
    return list(keys)


def group_keys(study: optuna.Study) -> list[str]:
    """The keys a table row is grouped by: every swept key but the method and the seed."""
    return [key for key in swept_keys(study) if key not in NOT_GROUPED]


def trial_runs(study: optuna.Study) -> pd.DataFrame:
    """One row per trial that stands for a run, plus one per grid point with no trial.

    Columns: ``number`` (None for missing), ``state`` (complete, failed, pruned, running,
    waiting, missing), ``method``, ``seed``, ``data.subset_seed`` (None unless swept), the
    swept keys, ``test_icc_c1``, ``test_mse``, how the run stopped (``steps``, ``best_step``,
    ``last_step``, ``stop_reason``; None where the trial did not record them),
    ``test_predictions`` and ``note`` (a failed trial's error).
    """
    keys = group_keys(study)
    rows = []
    for trial in live_trials(study.get_trials(deepcopy=False)):
        attrs = trial.user_attrs
        values = {**(attrs.get(CONFIG) or {}), **_params(trial)}
        row = _point_row(values, keys)
        row["number"] = trial.number
        row["state"] = STATES.get(trial.state, trial.state.name.lower())
        row["seed"] = attrs.get(SEED, row["seed"])
        row[TEST_ICC] = attrs.get(TEST_ICC, math.nan)
        row[TEST_MSE] = attrs.get(TEST_MSE, math.nan)
        for name in STOPPING:
            row[name] = attrs.get(name, attrs.get(STEPS) if name == LAST_STEP else None)
        row[TEST_PREDICTIONS] = attrs.get(TEST_PREDICTIONS)
        row["note"] = attrs.get(ERROR, "")
        rows.append(row)
    rows += _missing_points(study, rows, keys)
    columns = ["number", "state", "method", *REPLICATE, *keys]
    columns += [TEST_ICC, TEST_MSE, *STOPPING, TEST_PREDICTIONS, "note"]
    table = pd.DataFrame(rows, columns=columns)
    return table.astype({"number": "Int64"})


def _params(trial: FrozenTrial) -> dict[str, Any]:
    """A trial's point: its sampled params, or for a queued trial not yet started the values
    it was enqueued with (Optuna fills ``params`` only when the trial runs)."""
    return {**(queued_point(trial) or {}), **trial.params}


def _point_row(values: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """A run's identity (method, replicate, grouping keys) from its config values; a baseline
    has no Hydranet-only key (it trains with k=1, p=0), so that its runs serve every value."""
    method = values.get(METHOD, "hydranet")
    row: dict[str, Any] = {"number": None, "state": MISSING, "method": method}
    row.update({key: values.get(key) for key in (*REPLICATE, *keys)})
    if method == "baseline":
        row.update({key: None for key in HYDRANET_ONLY if key in keys})
    return row


def _missing_points(
    study: optuna.Study, rows: Sequence[dict[str, Any]], keys: Sequence[str]
) -> list[dict[str, Any]]:
    """The study's grid points (:func:`~hydralab.sweeps.trials.grid_points`) that no trial
    stands for; a queued, unstarted trial (``waiting``) is not missing.

    Only a grid study made since the grid was stored with it knows its points: for an older
    study, or a TPE one, no point is reported missing.
    """
    seen = {point_of(row, keys) for row in rows}
    missing = []
    for point in grid_points(study):
        row = _point_row(point, keys)
        if point_of(row, keys) not in seen:
            seen.add(point_of(row, keys))
            nan = dict.fromkeys((TEST_ICC, TEST_MSE), math.nan)
            missing.append({**row, **nan, **dict.fromkeys(STOPPING), "note": ""})
    return missing


def point_of(row: Mapping[str, Any] | pd.Series, keys: Sequence[str]) -> tuple[Any, ...]:
    """What makes two rows the same run: method, replicate and grouping-key values."""
    return (row["method"], *replicate_of(row), *(plain(row.get(key)) for key in keys))


def replicate_of(run: Mapping[str, Any] | pd.Series) -> tuple[Any, ...]:
    """What makes two runs of one row different models: the seed and the subset seed."""
    return tuple(plain(run.get(key)) for key in REPLICATE)


def plain(value: Any) -> Any:
    """None for NaN too, so that a point read from a DataFrame matches one from a dict."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def missing_predictions(runs: pd.DataFrame) -> list[str]:
    """Completed trials whose test predictions file is not readable, said per trial."""
    lines = []
    for _, run in runs[runs["state"] == "complete"].iterrows():
        path = run[TEST_PREDICTIONS]
        if not isinstance(path, str) or not Path(path).is_file():
            lines.append(f"trial {run['number']}: test predictions not found ({path})")
    return lines


def state_counts(runs: pd.DataFrame) -> dict[str, int]:
    """How many runs are in each state, for the report's status line."""
    return {str(k): int(v) for k, v in runs["state"].value_counts().sort_index().items()}
