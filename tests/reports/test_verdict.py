"""The seed-aware interval: it sees seed-to-seed spread that a scan-only interval cannot, and the
detectable difference reproduces the verdict issue's worked numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hydralab.reports.verdict import detectable_difference, seed_aware_difference


def test_seed_luck_is_no_difference() -> None:
    """The issue's case: per-seed differences +0.23, +0.04, -0.48 with tight scan replicates.
    A scan-only CI called that "significantly worse"; the seed-aware one must cover 0."""
    rng = np.random.default_rng(0)
    per_seed = np.array([0.23, 0.04, -0.48])
    replicates = per_seed + rng.normal(0, 0.02, (1000, 3))
    result = seed_aware_difference(per_seed, replicates)
    assert result.low < 0 < result.high
    assert result.verdict() == "no difference shown" and not result.shows_difference()
    assert result.difference == pytest.approx(-0.07)
    assert result.df == pytest.approx(2, rel=0.05)  # the seed part dominates: S - 1


def test_shared_test_scans_widen_the_interval() -> None:
    """Identical seeds (no seed spread) still vary with the shared test scans."""
    rng = np.random.default_rng(1)
    common = rng.normal(0, 0.05, 2000)
    replicates = np.stack([common, common, common], axis=1) + 0.1
    result = seed_aware_difference([0.1, 0.1, 0.1], replicates)
    assert result.se == pytest.approx(0.05, rel=0.1)
    assert result.low > 0 and result.verdict() == "Hydranet better"


def test_one_seed_is_conditional() -> None:
    replicates = np.random.default_rng(2).normal(0.2, 0.05, (500, 1))
    result = seed_aware_difference([0.2], replicates)
    assert result.conditional and result.verdict() == "one seed: says nothing about the method"
    assert result.low < 0.2 < result.high


def test_bad_shapes_and_nans() -> None:
    with pytest.raises(ValueError, match=r"\(B, S\)"):
        seed_aware_difference([0.1, 0.2], np.zeros((10, 3)))
    result = seed_aware_difference([math.nan, 0.1], np.zeros((10, 2)))
    assert math.isnan(result.low) and result.verdict() == "no test"


def test_detectable_difference_reproduces_the_issues_numbers() -> None:
    """ICCs of 0.73 and 0.68, predictions correlated at 0.9: about 300 scans for 80 % power;
    at 0.95, about 150 (issue 13, point 5)."""
    assert detectable_difference(300, 0.705, 0.9) == pytest.approx(0.05, abs=0.003)
    assert detectable_difference(150, 0.705, 0.95) == pytest.approx(0.05, abs=0.003)
    assert detectable_difference(50, 0.705, 0.9) > detectable_difference(500, 0.705, 0.9)
    assert math.isnan(detectable_difference(3, 0.5, 0.5))
