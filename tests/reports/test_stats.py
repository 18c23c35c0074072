"""The per-pair tests (Williams' test on Pearson r, the permutation test of the ICC difference,
the scan bootstrap, pairs on shared or different scans): independent oracles and the edge cases;
the ICC they use is the training one. Their level and coverage are simulated in test_calibration.

The ICC itself is cross-checked against Shrout & Fleiss' (1979) published example in
tests/training/test_metrics.py (test_icc_reproduces_shrout_fleiss); not repeated here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from hydralab.reports.stats import (
    PairedScans,
    compare_pair,
    icc_c1,
    paired_bootstrap,
    pearson,
    permutation_test,
    scan_bootstrap,
    williams_test,
)
from hydralab.training import metrics
from hydralab.training.metrics import icc


def _steiger_z1(r_jk: float, r_jh: float, r_kh: float, n: int) -> float:
    """Steiger's (1980) Z1* on Fisher z (his eq. 14 with the pooled rbar): another derivation
    of the same comparison, asymptotically equal to Williams' T2."""
    rbar = (r_jk + r_jh) / 2
    psi = r_kh * (1 - 2 * rbar**2) - 0.5 * rbar**2 * (1 - 2 * rbar**2 - r_kh**2)
    s = psi / (1 - rbar**2) ** 2
    return (math.atanh(r_jk) - math.atanh(r_jh)) * math.sqrt((n - 3) / (2 - 2 * s))


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


def test_williams_rejects_clear_differences_only() -> None:
    assert williams_test(0.9, 0.5, 0.5, 60).p < 1e-4
    assert williams_test(0.52, 0.50, 0.5, 20).p > 0.5
    with pytest.raises(ValueError, match="n > 3"):
        williams_test(0.5, 0.4, 0.3, 3)


def test_the_pair_tests_use_the_training_icc() -> None:
    """One ICC(3,1) implementation: the one every validation epoch logs, equal to ICC3."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=15), rng.normal(size=15)
    b = a + 0.5 * b + 1.0
    assert icc_c1 is metrics.icc_c1
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


@pytest.mark.parametrize(
    ("r_jk", "r_jh", "r_kh"), [(0.51, 0.5, 0.4), (0.805, 0.8, 0.9), (0.21, 0.2, 0.1)]
)
def test_williams_agrees_with_steigers_z_in_large_samples(r_jk, r_jh, r_kh) -> None:
    """An independent oracle: for close correlations in a large sample (a local alternative)
    Williams' t and Steiger's Z must coincide."""
    t = williams_test(r_jk, r_jh, r_kh, 100_000).t
    assert t == pytest.approx(_steiger_z1(r_jk, r_jh, r_kh, 100_000), rel=0.002)


def test_williams_is_nan_where_no_correlation_matrix_exists() -> None:
    """|R| < 0: no data have these three correlations, so there is no p-value to give."""
    result = williams_test(0.9, -0.9, 0.9, 50)
    assert math.isnan(result.t) and math.isnan(result.p)
    assert math.isnan(williams_test(math.nan, 0.5, 0.5, 50).p)


def test_compare_pair_feeds_williams_pearson_r_not_icc() -> None:
    """A model with a shrunk spread keeps its Pearson r but loses ICC: Williams' p must follow
    Pearson r (equal here), while the ICC difference is large."""
    rng = np.random.default_rng(4)
    labels = rng.normal(size=200)
    noise = rng.normal(0, 0.5, 200)
    pair = PairedScans(np.arange(200).astype(str), labels, labels + noise, 0.3 * (labels + noise))
    result = compare_pair(pair, n_permutations=200)
    assert result["r_baseline"] == pytest.approx(result["r_hydranet"])
    assert result["williams_p"] == pytest.approx(1.0)
    assert result["icc_diff"] < -0.3
    assert result["permutation_p"] < 0.01


def test_constant_predictions_give_a_note_not_a_crash() -> None:
    labels = np.arange(10.0)
    pair = PairedScans(labels.astype(str), labels, np.full(10, 3.0), np.full(10, 3.0))
    result = compare_pair(pair, n_permutations=50)
    assert math.isnan(result["williams_p"])
    assert result["note"] == "constant predictions (baseline, hydranet): no Pearson r"
    assert result["icc_baseline"] == 0.0 and result["icc_diff"] == 0.0
    assert math.isnan(float(pearson(np.ones(5), np.arange(5.0))))


def test_permutation_test_is_exact_and_ignores_offsets() -> None:
    rng = np.random.default_rng(5)
    labels = rng.normal(size=40)
    base = labels + rng.normal(0, 1, 40)
    hydra = labels + rng.normal(0, 1, 40) + 100.0  # an offset: ICC(3,1) does not see it
    shifted = permutation_test(PairedScans(labels.astype(str), labels, base, hydra), 500, seed=1)
    centred = permutation_test(PairedScans(labels.astype(str), labels, base, hydra - 100), 500, 1)
    assert shifted == centred
    assert 1 / 501 <= shifted <= 1
    better = labels + rng.normal(0, 0.2, 40)
    assert permutation_test(PairedScans(labels.astype(str), labels, base, better), 500) < 0.01


def _renamed(pair: PairedScans, prefix: str) -> PairedScans:
    """The same numbers on other test scans (other subject names)."""
    subjects = np.array([f"{prefix}{i}" for i in range(len(pair.labels))])
    return PairedScans(subjects, pair.labels, pair.baseline, pair.hydranet)


def test_bootstrap_keeps_each_scan_whole() -> None:
    """Hydranet = label and baseline = label / 2 + 1: ICC(3,1) 1 and exactly 0.8 on any set of
    whole scans, so every replicate is 0.2; a label drawn apart from its predictions is not."""
    rng = np.random.default_rng(6)
    labels, other = rng.normal(size=30), rng.normal(size=30)
    pair = PairedScans(np.arange(30).astype(str), labels, labels / 2 + 1, labels.copy())
    second = _renamed(PairedScans(pair.subjects, other, other / 2 + 1, other.copy()), "other")
    for pairs in ([pair], [pair, second]):
        boot = scan_bootstrap(pairs, n_resamples=300, seed=1)
        assert boot.shape == (300, len(pairs))
        assert np.allclose(boot, 0.2)


def test_bootstrap_of_pairs_on_different_scans_resamples_each_on_its_own() -> None:
    """Two pairs with the same numbers on different scans: a joint draw would give identical
    replicates; drawn each on its own, they are uncorrelated. Pairs on the same scans share one
    draw (a hard scan stays hard in every seed)."""
    pair = _pairs(40, 1, np.random.default_rng(7))[0]
    apart = scan_bootstrap([pair, _renamed(pair, "other")], n_resamples=2000, seed=2)
    assert abs(np.corrcoef(apart.T)[0, 1]) < 0.1  # sd of r is about 0.022 here
    assert apart[:, 0].std() == pytest.approx(apart[:, 1].std(), rel=0.15)
    together = scan_bootstrap([pair, pair], n_resamples=2000, seed=2)
    assert np.array_equal(together[:, 0], together[:, 1])


def test_bootstrap_of_pairs_on_different_scans_draws_from_each_pairs_own_scans() -> None:
    """A second pair with more scans, equal methods on its first 30 and very different on its
    last 10: drawn with the first pair's 30 indices it would be 0 in every replicate."""
    rng = np.random.default_rng(8)
    first = _pairs(30, 1, rng)[0]
    labels = rng.normal(size=40)
    hydranet = labels + rng.normal(0, 0.3, 40)
    baseline = hydranet.copy()
    baseline[30:] = rng.normal(size=10) * 5
    second = PairedScans(np.array([f"b{i}" for i in range(40)]), labels, baseline, hydranet)
    boot = scan_bootstrap([first, second], n_resamples=500, seed=3)
    assert (np.abs(boot[:, 1]) > 1e-9).mean() > 0.99
    assert np.mean(boot[:, 1]) == pytest.approx(second.icc_difference(), abs=0.1)


def test_compare_pair_matches_an_independent_computation() -> None:
    """Every field of compare_pair from other code: pingouin's ICC3, scipy's Pearson r, and
    Williams' test on those r with Hydranet first (t > 0 when Hydranet correlates better)."""
    rng = np.random.default_rng(10)
    labels = rng.normal(size=60)
    base, hydra = labels + rng.normal(0, 1, 60), labels + rng.normal(0, 0.7, 60)
    pair = PairedScans(np.arange(60).astype(str), labels, base, hydra)
    result = compare_pair(pair, n_permutations=300, seed=4)
    r_b, r_h = stats.pearsonr(base, labels)[0], stats.pearsonr(hydra, labels)[0]
    r_kh = stats.pearsonr(base, hydra)[0]
    expected = williams_test(r_h, r_b, r_kh, 60)
    assert result["icc_baseline"] == pytest.approx(icc(np.stack([base, labels], 1))["ICC3"])
    assert result["icc_hydranet"] == pytest.approx(icc(np.stack([hydra, labels], 1))["ICC3"])
    assert result["icc_diff"] == pytest.approx(result["icc_hydranet"] - result["icc_baseline"])
    assert [result["r_baseline"], result["r_hydranet"], result["r_between"]] == pytest.approx(
        [r_b, r_h, r_kh]
    )
    assert result["williams_t"] == pytest.approx(expected.t) and expected.t > 0
    assert result["williams_p"] == pytest.approx(expected.p) and 0.001 < expected.p < 0.5
    assert result["permutation_p"] == permutation_test(pair, 300, seed=4)
    assert result["permutation_p"] != pytest.approx(result["williams_p"], abs=0.01)
    assert result["note"] == ""
