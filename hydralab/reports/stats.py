"""Is Hydranet's ICC higher than the baseline's on the same test scans?

Two tools, both on the test-set predictions of a *pair* of runs: a baseline and a Hydranet
trial with the same training-set size, seed and other swept keys (hence the same test scans).

- :func:`williams_test`: the paper's test for two dependent correlations sharing a variable
  (here the ground truth);
- :func:`paired_bootstrap`: a percentile confidence interval of the ICC difference, resampling
  test scans with both methods' predictions kept together.

Pooling over seeds: Williams' test is run *per seed* (each pair's scans are independent, so n is
honest); pooling all seeds' predictions into one test would count each scan once per seed and
overstate n. The bootstrap estimates the mean over seeds of the per-seed ICC difference and
resamples scans (jointly across seeds when all pairs share the same test scans, so that a hard
scan stays hard in every seed), which carries both the scan-to-scan and the seed-to-seed spread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats


@dataclass(frozen=True)
class WilliamsResult:
    """Williams' T2 statistic, its degrees of freedom (n - 3) and two-sided p-value."""

    t: float
    df: int
    p: float


def williams_test(r_jk: float, r_jh: float, r_kh: float, n: int) -> WilliamsResult:
    """Test H0: rho_jk = rho_jh for correlations that share variable j, measured on n cases.

    Williams' T2 (Williams 1959; in the form of Steiger 1980, Psychological Bulletin 87(2),
    p. 245, eq. 3)::

        T2 = (r_jk - r_jh) * sqrt( (n - 1)(1 + r_kh)
                                   / (2 (n - 1)/(n - 3) |R| + rbar^2 (1 - r_kh)^3) )
        |R| = 1 - r_jk^2 - r_jh^2 - r_kh^2 + 2 r_jk r_jh r_kh,   rbar = (r_jk + r_jh) / 2

    T2 follows Student's t with n - 3 degrees of freedom; equal correlations give t = 0, p = 1,
    and values that form no correlation matrix (|R| < 0, possible when ICCs stand in for r)
    give ``nan``. Here j is the ground truth, k and h the
    two models' predictions, r_kh their correlation with each other. Steiger recommends T2 over
    Hotelling's t for this case. The test is derived for Pearson correlations; see
    :func:`compare_pair` for what the report feeds it.
    """
    if n <= 3:
        raise ValueError(f"Williams' test needs n > 3 cases, got {n}")
    for name, r in (("r_jk", r_jk), ("r_jh", r_jh), ("r_kh", r_kh)):
        if not -1.0 <= r <= 1.0:
            raise ValueError(f"{name} must lie in [-1, 1], got {r}")
    det = 1 - r_jk**2 - r_jh**2 - r_kh**2 + 2 * r_jk * r_jh * r_kh
    rbar = (r_jk + r_jh) / 2
    denominator = 2 * (n - 1) / (n - 3) * det + rbar**2 * (1 - r_kh) ** 3
    if math.isclose(r_jk, r_jh, abs_tol=1e-12):  # no difference (also identical predictions)
        return WilliamsResult(t=0.0, df=n - 3, p=1.0)
    if denominator <= 0:  # the three values are no correlation matrix (|R| < 0): no test
        return WilliamsResult(t=math.nan, df=n - 3, p=math.nan)
    t = (r_jk - r_jh) * math.sqrt((n - 1) * (1 + r_kh) / denominator)
    p = float(2 * stats.t.sf(abs(t), n - 3))
    return WilliamsResult(t=float(t), df=n - 3, p=p)


def icc_c1(first: ArrayLike, second: ArrayLike) -> np.ndarray:
    """ICC(3,1) (consistency) of two raters, vectorised over leading axes.

    The two-way ANOVA formula of Shrout & Fleiss (1979), (BMS - EMS) / (BMS + EMS) for k = 2,
    written out so that a bootstrap of thousands of resamples stays fast; it equals
    :func:`hydralab.training.metrics.icc`'s ``ICC3`` (a test checks).
    """
    x = np.stack([np.asarray(first, float), np.asarray(second, float)], axis=-1)
    n = x.shape[-2]
    grand = x.mean(axis=(-2, -1), keepdims=True)
    rows = x.mean(axis=-1, keepdims=True)
    cols = x.mean(axis=-2, keepdims=True)
    ss_rows = 2 * ((rows - grand) ** 2).sum(axis=(-2, -1))
    ss_error = ((x - rows - cols + grand) ** 2).sum(axis=(-2, -1))
    bms = ss_rows / (n - 1)
    ems = ss_error / (n - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (bms - ems) / (bms + ems)


@dataclass(frozen=True)
class PairedScans:
    """One baseline/Hydranet pair's test scans, aligned by subject."""

    subjects: np.ndarray
    labels: np.ndarray
    baseline: np.ndarray
    hydranet: np.ndarray


def compare_pair(pair: PairedScans) -> dict[str, float]:
    """ICCs of both methods and Williams' test of their difference on one pair's scans.

    Williams' test gets the two ICC(3,1) values against the labels as r_jk and r_jh (the
    quantity the report compares) and the ICC(3,1) between the two prediction sets as r_kh.
    For two raters ICC(3,1) = 2 cov / (var_1 + var_2), Pearson's r shrunk by unequal spreads,
    so the test's t distribution is an approximation here, as in the paper.
    """
    r_h = float(icc_c1(pair.hydranet, pair.labels))
    r_b = float(icc_c1(pair.baseline, pair.labels))
    r_kh = float(np.clip(icc_c1(pair.hydranet, pair.baseline), -1.0, 1.0))
    result = williams_test(r_h, r_b, r_kh, len(pair.labels))
    return {
        "icc_hydranet": r_h,
        "icc_baseline": r_b,
        "williams_t": result.t,
        "williams_p": result.p,
    }


@dataclass(frozen=True)
class BootstrapResult:
    """Mean over pairs of the Hydranet minus baseline ICC(3,1), and its percentile CI."""

    difference: float
    low: float
    high: float
    level: float
    n_resamples: int


def paired_bootstrap(
    pairs: Sequence[PairedScans],
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """Percentile CI of mean_pairs(ICC_hydranet - ICC_baseline), resampling test scans.

    Each resample draws scans with replacement, keeping a scan's label and both predictions
    together (the paired design). When every pair holds the same subjects the same draw is used
    for all pairs; otherwise each pair is resampled on its own. Reproducible for a ``seed``.
    """
    if not pairs:
        raise ValueError("paired_bootstrap needs at least one baseline/Hydranet pair")
    rng = np.random.default_rng(seed)
    shared = all(np.array_equal(p.subjects, pairs[0].subjects) for p in pairs)
    draws = []
    common = rng.integers(0, len(pairs[0].labels), (n_resamples, len(pairs[0].labels)))
    for pair in pairs:
        n = len(pair.labels)
        index = common if shared else rng.integers(0, n, (n_resamples, n))
        diff = icc_c1(pair.hydranet[index], pair.labels[index]) - icc_c1(
            pair.baseline[index], pair.labels[index]
        )
        draws.append(diff)
    resampled = np.nanmean(np.stack(draws), axis=0)
    observed = float(
        np.mean([icc_c1(p.hydranet, p.labels) - icc_c1(p.baseline, p.labels) for p in pairs])
    )
    alpha = (1 - level) / 2
    low, high = np.nanquantile(resampled, [alpha, 1 - alpha])
    return BootstrapResult(observed, float(low), float(high), level, n_resamples)
