"""Every p-value and interval of the report holds its level in simulation (a fast version of
``benchmarks/calibration.py``, whose full table is in docs/method.md).

400 simulated comparisons give a rejection rate of 5 % +- 1.1 % (one sd): the bounds below allow
about 2.5 sd, and still fail for Williams' test fed ICC values (0-1.5 % at these ICCs) and for
the scan-only interval read as the method's (75-85 % coverage with three seeds).
"""

from __future__ import annotations

import pytest

from hydralab.reports.calibration import Scenario, pair_rates, seed_rates
from hydralab.reports.verdict import detectable_difference

SIMS = 400


@pytest.mark.parametrize("icc", [0.2, 0.8])
def test_per_pair_tests_hold_their_level_and_the_scan_ci_covers(icc: float) -> None:
    rates = pair_rates(Scenario(n=50, icc=icc), SIMS, resamples=200, seed=11)
    assert 0.025 <= rates.williams_pearson <= 0.085
    assert 0.025 <= rates.permutation <= 0.085
    assert 0.91 <= rates.scan_ci_coverage <= 0.98


def test_seed_aware_interval_covers_the_methods_difference() -> None:
    """Three seeds whose models differ (the seed spread): the interval must vary the seeds."""
    null = seed_rates(Scenario(n=50, icc=0.5, seeds=3, seed_spread=0.3), SIMS, 200, seed=12)
    assert 0.915 <= null.seed_aware_coverage <= 0.985
    assert null.scan_only_coverage < 0.9  # why the scan-only interval is not the headline
    effect = Scenario(n=50, icc=0.5, seeds=3, seed_spread=0.3, effect=0.7)
    assert effect.method_difference() > 0.05
    covered = seed_rates(effect, SIMS, 200, seed=13).seed_aware_coverage
    assert 0.915 <= covered <= 0.985


def test_detectable_difference_has_its_power() -> None:
    """The stated detectable difference is detected in about 80 % of simulated test sets."""
    import numpy as np

    from hydralab.reports.stats import williams_test

    n, r_kh, low = 300, 0.9, 0.68
    high = low + detectable_difference(n, low + 0.025, r_kh)
    cov = np.array([[1, high, low], [high, 1, r_kh], [low, r_kh, 1]])
    samples = np.random.default_rng(14).multivariate_normal(np.zeros(3), cov, size=(1000, n))
    rejected = 0
    for sample in samples:
        r = np.corrcoef(sample.T)
        rejected += williams_test(r[0, 1], r[0, 2], r[1, 2], n).p < 0.05
    assert 0.75 <= rejected / len(samples) <= 0.85
