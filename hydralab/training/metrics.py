"""Scan-level agreement between a model's predictions and the reference labels.

Hydranet predicts one global label per scan, so a model is judged the way a new measurement
method is judged against a reference: by its error (MSE, MAE) and by its agreement, the
intraclass correlation (ICC) with predictions and labels as two "raters" of every scan.
ICC(3,1) (consistency) forgives a constant offset; ICC(2,1) (absolute agreement) does not, so
a model that is right up to a shift shows ``icc_c1`` near 1 but a lower ``icc_a1``.

ICCs come from :func:`pingouin.intraclass_corr`. Its labels changed across versions (0.7 uses
McGraw & Wong's ``ICC(A,1)``/``ICC(C,1)``, earlier versions Shrout & Fleiss' ``ICC2``/``ICC3``);
:func:`icc` maps both to the Shrout & Fleiss names in :data:`ICC_FORMS`.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

ICC_FORMS = ("ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k")
"""Shrout & Fleiss (1979) names of the six ICCs :func:`icc` returns, in this order:
one-way random, two-way random (absolute agreement), two-way mixed (consistency); single rating,
then the mean of the k ratings."""

_PINGOUIN_LABELS = {
    # pingouin >= 0.7 (McGraw & Wong notation, as in Liljequist et al. 2019)
    "ICC(1,1)": "ICC1",
    "ICC(A,1)": "ICC2",
    "ICC(C,1)": "ICC3",
    "ICC(1,k)": "ICC1k",
    "ICC(A,k)": "ICC2k",
    "ICC(C,k)": "ICC3k",
    # pingouin < 0.7 (Shrout & Fleiss notation)
    **{form: form for form in ICC_FORMS},
}


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
    n_targets, n_raters = table.shape
    long = pd.DataFrame(
        {
            "target": np.repeat(np.arange(n_targets), n_raters),
            "rater": np.tile(np.arange(n_raters), n_targets),
            "rating": table.reshape(-1),
        }
    )

    import pingouin  # slow to import; most callers of this module never need it

    # Degenerate tables (all ratings equal) divide 0 by 0: let that become nan quietly. pingouin's
    # own use of deprecated pandas API warns each call (every epoch) and is not the caller's to fix.
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        for category in (RuntimeWarning, DeprecationWarning, FutureWarning):
            warnings.simplefilter("ignore", category)
        result = pingouin.intraclass_corr(
            data=long, targets="target", raters="rater", ratings="rating"
        )

    values: dict[str, float] = {}
    for label, value in zip(result["Type"], result["ICC"], strict=True):
        form = _PINGOUIN_LABELS.get(str(label))
        if form is None:
            raise RuntimeError(
                f"pingouin {pingouin.__version__} returned an ICC labelled {label!r}; "
                f"known labels are {sorted(_PINGOUIN_LABELS)}"
            )
        values[form] = float(value)
    missing = set(ICC_FORMS) - values.keys()
    if missing:
        raise RuntimeError(f"pingouin {pingouin.__version__} did not return {sorted(missing)}")
    return {form: values[form] for form in ICC_FORMS}


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
    iccs = icc(np.stack([pred, true], axis=1))
    return {
        "mse": float(np.mean(error**2)),
        "mae": float(np.mean(np.abs(error))),
        "icc_c1": iccs["ICC3"],
        "icc_a1": iccs["ICC2"],
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
