"""Williams' test and the paired bootstrap: properties, a Monte-Carlo check of the test's size,
and the fast two-rater ICC against the package's pingouin-based one.

The ICC itself is cross-checked against Shrout & Fleiss' (1979) published example in
tests/training/test_metrics.py (test_icc_reproduces_shrout_fleiss); not repeated here.
"""

from __future__ import annotations

import numpy as np
import pytest

from hydralab.reports.stats import PairedScans, icc_c1, paired_bootstrap, williams_test
from hydralab.training.metrics import icc


def test_williams_is_antisymmetric_and_one_when_equal() -> None:
    forward = williams_test(0.8, 0.6, 0.5, 50)
    backward = williams_test(0.6, 0.8, 0.5, 50)
    assert forward.t == pytest.approx(-backward.t)
    assert forward.p == pytest.approx(backward.p)
    assert forward.df == 47
    assert williams_test(0.7, 0.7, 0.4, 50).p == pytest.approx(1.0)


def test_williams_reproduces_howells_worked_example() -> None:
    """Howell, Statistical Methods for Psychology (6th ed., p. 262), as computed by Weaver's
    SPSS syntax (MRC CBU statistics wiki, FAQ/Will): r12=.80, r13=.72, r23=.89, n=26 gives
    t=1.361, df=23, p=.187."""
    result = williams_test(0.80, 0.72, 0.89, 26)
    assert round(result.t, 3) == 1.361
    assert result.df == 23
    assert round(result.p, 3) == 0.187


def test_williams_matches_the_formula_by_hand() -> None:
    """Steiger (1980) eq. 3 evaluated step by step for r_jk=.5, r_jh=.3, r_kh=.4, n=103."""
    det = 1 - 0.25 - 0.09 - 0.16 + 2 * 0.5 * 0.3 * 0.4  # 0.62
    t = 0.2 * np.sqrt(102 * 1.4 / (2 * 102 / 100 * det + 0.16 * 0.6**3))
    assert williams_test(0.5, 0.3, 0.4, 103).t == pytest.approx(t)
    assert t == pytest.approx(2.0967, abs=1e-4)  # 0.2 * sqrt(142.8 / 1.29936)


def test_williams_rejects_clear_differences_only() -> None:
    assert williams_test(0.9, 0.5, 0.5, 60).p < 1e-4
    assert williams_test(0.52, 0.50, 0.5, 20).p > 0.5
    with pytest.raises(ValueError, match="n > 3"):
        williams_test(0.5, 0.4, 0.3, 3)


def test_williams_holds_its_level_in_simulation() -> None:
    """Under H0 (equal correlations with the truth) about 5% of tests reject at 0.05."""
    rng = np.random.default_rng(0)
    cov = np.array([[1.0, 0.6, 0.6], [0.6, 1.0, 0.4], [0.6, 0.4, 1.0]])
    samples = rng.multivariate_normal(np.zeros(3), cov, size=(2000, 40))
    rejected = 0
    for sample in samples:
        r = np.corrcoef(sample.T)
        rejected += williams_test(r[0, 1], r[0, 2], r[1, 2], 40).p < 0.05
    assert 0.03 < rejected / len(samples) < 0.07


def test_fast_icc_equals_pingouin() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=15), rng.normal(size=15)
    b = a + 0.5 * b + 1.0
    assert icc_c1(a, b) == pytest.approx(icc(np.stack([a, b], axis=1))["ICC3"])


def _pairs(n: int, seeds: int, rng: np.random.Generator) -> list[PairedScans]:
    """Labels N(0,1); predictions = label + noise: ICC(3,1) = 2 / (2 + sd^2)."""
    labels = rng.normal(size=n)
    subjects = np.arange(n).astype(str)
    return [
        PairedScans(
            subjects,
            labels,
            baseline=labels + rng.normal(0, 1.0, n),
            hydranet=labels + rng.normal(0, 0.5, n),
        )
        for _ in range(seeds)
    ]


def test_bootstrap_covers_the_true_difference_and_is_reproducible() -> None:
    true = 2 / 2.25 - 2 / 3
    pairs = _pairs(300, 3, np.random.default_rng(2))
    result = paired_bootstrap(pairs, n_resamples=500, seed=7)
    assert result.low < true < result.high
    assert result.low < result.difference < result.high
    assert result.high - result.low < 0.15
    assert paired_bootstrap(pairs, n_resamples=500, seed=7) == result
    assert paired_bootstrap(pairs, n_resamples=500, seed=8) != result


def test_bootstrap_of_equal_methods_covers_zero() -> None:
    rng = np.random.default_rng(3)
    labels = rng.normal(size=200)
    same = PairedScans(
        np.arange(200).astype(str),
        labels,
        labels + rng.normal(0, 1, 200),
        labels + rng.normal(0, 1, 200),
    )
    result = paired_bootstrap([same], n_resamples=500)
    assert result.low < 0 < result.high
