"""Agreement metrics: ICCs against Shrout & Fleiss' published example and pingouin, errors against
numpy."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from hydralab.training.metrics import ICC_FORMS, agreement_metrics, icc, icc_a1, icc_c1

# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges, and their Table 4 ICCs.
SHROUT_FLEISS_RATINGS = [
    [9, 2, 5, 8],
    [6, 1, 3, 2],
    [8, 4, 6, 8],
    [7, 1, 2, 6],
    [10, 5, 6, 9],
    [6, 2, 4, 7],
]
SHROUT_FLEISS_ICCS = {
    "ICC1": 0.17,
    "ICC2": 0.29,
    "ICC3": 0.71,
    "ICC1k": 0.44,
    "ICC2k": 0.62,
    "ICC3k": 0.91,
}


# pingouin >= 0.7 labels its ICCs in McGraw & Wong's notation, earlier versions in Shrout & Fleiss'.
PINGOUIN_FORMS = {
    "ICC(1,1)": "ICC1",
    "ICC(A,1)": "ICC2",
    "ICC(C,1)": "ICC3",
    "ICC(1,k)": "ICC1k",
    "ICC(A,k)": "ICC2k",
    "ICC(C,k)": "ICC3k",
    **{form: form for form in ICC_FORMS},
}


def pingouin_icc(table: np.ndarray) -> dict[str, float]:
    """The oracle: pingouin.intraclass_corr on a targets x raters table."""
    import pingouin

    n, k = table.shape
    long = pd.DataFrame(
        {
            "target": np.repeat(np.arange(n), k),
            "rater": np.tile(np.arange(k), n),
            "rating": table.reshape(-1),
        }
    )
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = pingouin.intraclass_corr(long, targets="target", raters="rater", ratings="rating")
    values = {
        PINGOUIN_FORMS[str(t)]: float(v) for t, v in zip(result["Type"], result["ICC"], strict=True)
    }
    return {form: values[form] for form in ICC_FORMS}


def random_tables() -> list[np.ndarray]:
    """Random ratings of several sizes, some with ties, an offset rater and a constant rater."""
    rng = np.random.default_rng(7)
    tables = []
    for n in (3, 5, 17, 60):  # pingouin refuses fewer than 5 ratings in all
        for k in (2, 3, 5):
            truth = rng.normal(40.0, 8.0, size=(n, 1))
            tables.append(truth + rng.normal(0.0, 4.0, size=(n, k)))  # no ties
            tables.append(np.round(truth + rng.normal(0.0, 4.0, size=(n, k)) / 3))  # many ties
            offset = truth + rng.normal(0.0, 2.0, size=(n, k)) + 10.0 * np.arange(k)
            tables.append(offset)  # raters disagree by a constant: ICC2 < ICC3
    constant = np.column_stack([np.full(9, 3.0), rng.normal(size=9)])
    return [*tables, constant]


@pytest.mark.parametrize("table", random_tables(), ids=lambda t: f"{t.shape[0]}x{t.shape[1]}")
def test_icc_equals_pingouin(table: np.ndarray) -> None:
    expected = pingouin_icc(table)
    result = icc(table)
    for form in ICC_FORMS:
        assert result[form] == pytest.approx(expected[form], rel=1e-9, abs=1e-12), form
    if table.shape[1] == 2:
        assert float(icc_c1(table[:, 0], table[:, 1])) == pytest.approx(result["ICC3"], abs=1e-12)
        assert float(icc_a1(table[:, 0], table[:, 1])) == pytest.approx(result["ICC2"], abs=1e-12)


def test_two_scans_are_enough() -> None:
    """pingouin refuses 2 x 2 tables; the closed forms for two raters say what to expect."""
    first, second = np.array([1.0, 4.0]), np.array([2.0, 3.5])
    cov = np.cov(first, second)
    assert float(icc_c1(first, second)) == pytest.approx(2 * cov[0, 1] / (cov[0, 0] + cov[1, 1]))
    # ICC(A,1) adds the raters' squared offset, less its share of the residual variance.
    residual = (cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]) / first.size
    offset = (first.mean() - second.mean()) ** 2 - residual
    expected = 2 * cov[0, 1] / (cov[0, 0] + cov[1, 1] + offset)
    assert float(icc_a1(first, second)) == pytest.approx(expected)
    metrics = agreement_metrics(first, second)
    assert metrics["icc_c1"] == pytest.approx(float(icc_c1(first, second)))
    assert metrics["icc_a1"] == pytest.approx(expected)


def test_all_equal_ratings_give_nan_like_pingouin() -> None:
    table = np.full((4, 3), 2.5)
    expected = pingouin_icc(table)
    result = icc(table)
    for form in ICC_FORMS:
        assert math.isnan(result[form]) and math.isnan(expected[form]), form


def test_two_rater_iccs_broadcast_over_leading_axes() -> None:
    rng = np.random.default_rng(3)
    labels = rng.normal(10.0, 2.0, size=12)
    stack = labels + rng.normal(0.0, 1.0, size=(4, 5, 12)) + rng.normal(0.0, 1.0, size=(4, 5, 1))
    for function, form in ((icc_c1, "ICC3"), (icc_a1, "ICC2")):
        values = function(stack, labels)  # one label vector serves the whole stack
        assert values.shape == (4, 5)
        for index in np.ndindex(4, 5):
            expected = pingouin_icc(np.column_stack([stack[index], labels]))[form]
            assert values[index] == pytest.approx(expected, rel=1e-9)
    # A constant rater scores 0, two constant raters nan, in every position of a stack.
    constant = np.stack([np.full(12, 3.0), labels, np.full(12, 1.0)])
    for function in (icc_c1, icc_a1):
        values = function(constant, np.stack([labels, np.full(12, 5.0), np.full(12, 1.0)]))
        assert values[:2] == pytest.approx([0.0, 0.0], abs=1e-12)
        assert math.isnan(values[2])


@pytest.fixture
def labels() -> np.ndarray:
    return np.random.default_rng(0).normal(50.0, 10.0, size=30)


@pytest.mark.parametrize("as_frame", [False, True])
def test_icc_reproduces_shrout_fleiss(as_frame: bool) -> None:
    ratings = np.array(SHROUT_FLEISS_RATINGS, dtype=float)
    table = pd.DataFrame(ratings, columns=list("ABCD")) if as_frame else ratings
    result = icc(table)
    assert tuple(result) == ICC_FORMS
    for form, published in SHROUT_FLEISS_ICCS.items():
        assert round(result[form], 2) == published, form


def test_perfect_predictions(labels: np.ndarray) -> None:
    metrics = agreement_metrics(labels.copy(), labels)
    assert set(metrics) == {"mse", "mae", "icc_c1", "icc_a1", "pearson"}
    assert metrics["mse"] == 0.0
    assert metrics["mae"] == 0.0
    for key in ("icc_c1", "icc_a1", "pearson"):
        assert metrics[key] == pytest.approx(1.0)


def test_constant_offset_keeps_consistency_but_loses_agreement(labels: np.ndarray) -> None:
    offset = 5.0
    metrics = agreement_metrics(labels + offset, labels)
    assert metrics["icc_c1"] == pytest.approx(1.0)
    # Two raters, no residual: ICC(A,1) = var / (var + offset^2 / 2) with the sample variance.
    variance = labels.var(ddof=1)
    assert metrics["icc_a1"] == pytest.approx(variance / (variance + offset**2 / 2))
    assert metrics["icc_a1"] < 1.0
    assert metrics["mse"] == pytest.approx(offset**2)
    assert metrics["mae"] == pytest.approx(offset)
    assert metrics["pearson"] == pytest.approx(1.0)


def test_scale_change_lowers_consistency(labels: np.ndarray) -> None:
    scale = 2.0
    centred = labels - labels.mean()
    metrics = agreement_metrics(scale * centred, centred)
    # Two raters x = a*y: ICC(3,1) = 2 cov / (var_x + var_y) = 2a / (1 + a^2).
    assert metrics["icc_c1"] == pytest.approx(2 * scale / (1 + scale**2))
    assert metrics["icc_a1"] < 1.0
    assert metrics["pearson"] == pytest.approx(1.0)


def test_errors_match_numpy(labels: np.ndarray) -> None:
    predictions = labels + np.random.default_rng(1).normal(0.0, 3.0, size=labels.size)
    metrics = agreement_metrics(predictions, labels)
    assert metrics["mse"] == pytest.approx(np.mean((predictions - labels) ** 2))
    assert metrics["mae"] == pytest.approx(np.mean(np.abs(predictions - labels)))
    assert metrics["pearson"] == pytest.approx(np.corrcoef(predictions, labels)[0, 1])
    assert 0.0 < metrics["icc_a1"] < 1.0
    assert 0.0 < metrics["icc_c1"] < 1.0


def test_accepts_tensors_and_columns(labels: np.ndarray) -> None:
    predictions = labels + 1.0
    expected = agreement_metrics(predictions, labels)
    column = torch.tensor(predictions, requires_grad=True).unsqueeze(1)
    assert agreement_metrics(column, torch.tensor(labels)) == pytest.approx(expected)


def test_constant_predictions_do_not_crash(labels: np.ndarray) -> None:
    metrics = agreement_metrics(np.full_like(labels, 3.0), labels)
    assert metrics["icc_c1"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["icc_a1"] == pytest.approx(0.0, abs=1e-9)
    assert math.isnan(metrics["pearson"])
    # Everything constant: the ICC formula divides 0 by 0.
    degenerate = agreement_metrics([2.0, 2.0, 2.0], [2.0, 2.0, 2.0])
    assert degenerate["mse"] == 0.0
    assert math.isnan(degenerate["icc_c1"])
    assert math.isnan(degenerate["pearson"])


@pytest.mark.parametrize(
    ("predictions", "labels", "message"),
    [
        ([1.0], [1.0], "at least 2 scans"),
        ([], [], "at least 2 scans"),
        ([1.0, 2.0, 3.0], [1.0, 2.0], "3 predictions and 2 labels"),
        ([1.0, float("nan"), 3.0], [1.0, 2.0, 3.0], r"predictions contain 1 non-finite .* index 1"),
        ([1.0, 2.0, 3.0], [1.0, 2.0, float("inf")], "labels contain 1 non-finite"),
        ([[1.0, 2.0], [3.0, 4.0]], [1.0, 2.0], r"one value per scan, got shape \(2, 2\)"),
    ],
)
def test_agreement_metrics_rejects_bad_input(predictions: list, labels: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        agreement_metrics(predictions, labels)


@pytest.mark.parametrize(
    ("ratings", "message"),
    [
        ([[1.0, 2.0]], "at least 2 targets"),
        ([[1.0], [2.0]], "at least 2 raters"),
        ([1.0, 2.0], "2-D targets x raters"),
        ([[1.0, 2.0], [float("nan"), 3.0]], r"ratings contain 1 non-finite .* \(1, 0\)"),
    ],
)
def test_icc_rejects_bad_input(ratings: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        icc(ratings)
