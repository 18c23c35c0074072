"""Scan-level agreement between a model's predictions and the reference labels.

Hydranet predicts one global label per scan, so a model is judged the way a new measurement
method is judged against a reference: by its error (MSE, MAE) and by its agreement, the
intraclass correlation (ICC) with predictions and labels as two "raters" of every scan.
ICC(3,1) (consistency) forgives a constant offset; ICC(2,1) (absolute agreement) does not, so
a model that is right up to a shift shows ``icc_c1`` near 1 but a lower ``icc_a1``.

The ICCs are Shrout & Fleiss' (1979) two-way ANOVA formulas, written out with numpy and
vectorised over leading axes, so a bootstrap of thousands of resamples (hydralab.reports) uses
the same code as every validation epoch. They equal :func:`pingouin.intraclass_corr` (the tests'
oracle) without its import time and per-call pandas work.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

ICC_FORMS = ("ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k")
"""Shrout & Fleiss (1979) names of the six ICCs :func:`icc` returns, in this order:
one-way random, two-way random (absolute agreement), two-way mixed (consistency); single rating,
then the mean of the k ratings."""


def icc_c1(first: ArrayLike, second: ArrayLike) -> np.ndarray:
    """ICC(3,1) (consistency) of two raters along the last axis, vectorised over leading axes.

    The inputs broadcast, so one label vector serves a stack of resampled predictions. For two
    raters it is 2 cov / (var_1 + var_2): a constant rater scores 0 (up to rounding), two
    constant raters NaN. No input checks: the callers validate once, outside their loops.
    """
    msb, _, _, mse = _mean_squares(_two_raters(first, second))
    with np.errstate(divide="ignore", invalid="ignore"):
        return (msb - mse) / (msb + mse)


def icc_a1(first: ArrayLike, second: ArrayLike) -> np.ndarray:
    """ICC(2,1) (absolute agreement) of two raters; as :func:`icc_c1`, but an offset between
    the raters counts against them."""
    x = _two_raters(first, second)
    msb, msj, _, mse = _mean_squares(x)
    n = x.shape[-2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return (msb - mse) / (msb + mse + 2 * (msj - mse) / n)


def icc(ratings: pd.DataFrame | ArrayLike) -> dict[str, float]:
    """All six ICCs of a targets x raters table, keyed by :data:`ICC_FORMS`.

    Args:
        ratings: one row per target (scan), one column per rater, every cell filled.

    Returns:
        ``{"ICC1": ..., "ICC2": ..., "ICC3": ..., "ICC1k": ..., "ICC2k": ..., "ICC3k": ...}``.
        Where the ANOVA formula divides zero by zero (all ratings equal) the value is ``nan``.

    Raises:
        ValueError: fewer than 2 targets or raters, not a 2-D table, or non-finite ratings.
    """
    table = _as_table(ratings)
    n, k = table.shape
    msb, msj, msw, mse = _mean_squares(table)  # numpy scalars: 0 / 0 is nan, not an error
    with np.errstate(divide="ignore", invalid="ignore"):
        values = (
            (msb - msw) / (msb + (k - 1) * msw),
            (msb - mse) / (msb + (k - 1) * mse + k * (msj - mse) / n),
            (msb - mse) / (msb + (k - 1) * mse),
            (msb - msw) / msb,
            (msb - mse) / (msb + (msj - mse) / n),
            (msb - mse) / msb,
        )
    return {form: float(value) for form, value in zip(ICC_FORMS, values, strict=True)}


def _two_raters(first: ArrayLike, second: ArrayLike) -> np.ndarray:
    """Two rating vectors as a (..., targets, 2) stack, broadcast against each other."""
    first, second = np.broadcast_arrays(np.asarray(first, float), np.asarray(second, float))
    return np.stack([first, second], axis=-1)


def _mean_squares(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two-way ANOVA mean squares of (..., n targets, k raters) ratings: between targets (BMS),
    between raters (JMS), within targets (WMS) and residual (EMS)."""
    n, k = x.shape[-2:]
    grand = x.mean(axis=(-2, -1), keepdims=True)
    rows = x.mean(axis=-1, keepdims=True)
    cols = x.mean(axis=-2, keepdims=True)
    ss_rows = k * ((rows - grand) ** 2).sum(axis=(-2, -1))
    ss_cols = n * ((cols - grand) ** 2).sum(axis=(-2, -1))
    ss_error = ((x - rows - cols + grand) ** 2).sum(axis=(-2, -1))
    return (
        ss_rows / (n - 1),
        ss_cols / (k - 1),
        (ss_cols + ss_error) / (n * (k - 1)),
        ss_error / ((n - 1) * (k - 1)),
    )


def agreement_metrics(predictions: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """Error and agreement of per-scan predictions against labels.

    Args:
        predictions: one value per scan, shape ``(n,)`` or ``(n, 1)``; tensors are accepted.
        labels: the matching reference labels, same shape.

    Returns:
        ``mse``, ``mae``, ``icc_c1`` (ICC(3,1), consistency), ``icc_a1`` (ICC(2,1), absolute
        agreement) and ``pearson``. Constant predictions (a collapsed model) are not an error:
        the ICCs then come out as 0 by the ANOVA formula (up to rounding), or ``nan`` where it
        divides zero by zero (labels constant too), and ``pearson`` is ``nan`` (undefined
        without variance).

    Raises:
        ValueError: fewer than 2 scans, mismatched lengths, or a non-finite value.
    """
    pred = _as_vector(predictions, "predictions")
    true = _as_vector(labels, "labels")
    if pred.shape != true.shape:
        raise ValueError(
            f"predictions and labels must have one value per scan each, got {pred.size} "
            f"predictions and {true.size} labels"
        )
    if pred.size < 2:
        raise ValueError(f"agreement metrics need at least 2 scans, got {pred.size}")

    error = pred - true
    return {
        "mse": float(np.mean(error**2)),
        "mae": float(np.mean(np.abs(error))),
        "icc_c1": float(icc_c1(pred, true)),
        "icc_a1": float(icc_a1(pred, true)),
        "pearson": _pearson(pred, true),
    }


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r, ``nan`` when either side is constant (instead of numpy's warning)."""
    dx, dy = x - x.mean(), y - y.mean()
    denominator = np.sqrt(np.sum(dx**2) * np.sum(dy**2))
    if denominator == 0:
        return float("nan")
    return float(np.clip(np.sum(dx * dy) / denominator, -1.0, 1.0))


def _as_vector(values: ArrayLike, name: str) -> np.ndarray:
    """One float per scan; a ``(n, 1)`` column is accepted since models often return one."""
    if hasattr(values, "detach"):  # a torch tensor, possibly on the GPU or requiring grad
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"{name} must hold one value per scan, got shape {array.shape}")
    _check_finite(array, name)
    return array


def _as_table(ratings: pd.DataFrame | ArrayLike) -> np.ndarray:
    """A finite targets x raters float matrix with at least 2 of each."""
    table = np.asarray(ratings, dtype=np.float64)
    if table.ndim != 2:
        raise ValueError(f"ratings must be a 2-D targets x raters table, got shape {table.shape}")
    n_targets, n_raters = table.shape
    if n_targets < 2:
        raise ValueError(f"ICC needs at least 2 targets (rows), got {n_targets}")
    if n_raters < 2:
        raise ValueError(f"ICC needs at least 2 raters (columns), got {n_raters}")
    _check_finite(table, "ratings")
    return table


def _check_finite(array: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        where = first[0] if len(first) == 1 else first
        raise ValueError(
            f"{name} contain {int(bad.sum())} non-finite value(s) (nan or inf), "
            f"the first at index {where}: {array[first]}"
        )
