"""Is Hydranet better than the baseline on *one* pair of trained models? Tests on test scans.

A *pair* is a baseline run and a Hydranet run with the same training-set size, seed and other
swept keys, predicting the same test scans. Everything here conditions on those two trained
models: the only randomness is which test scans were drawn. Whether the *method* is better, over
training seeds, is :mod:`hydralab.reports.verdict`'s question.

- :func:`williams_test`: the paper's test of two dependent correlations sharing a variable (the
  labels). It is defined for **Pearson** correlations, and :func:`compare_pair` feeds it Pearson
  r: fed ICC(3,1) values, as an earlier version did, it rejected a true null in 0.35-3.75 % of
  simulated comparisons instead of 5 % (docs/method.md, the calibration table).
- :func:`permutation_test`: a paired test of the ICC(3,1) difference itself. Under the null the
  two models' predictions of a scan are exchangeable, so swapping them scan by scan draws from
  the null distribution of the difference: the test holds its level exactly, at any n.
- :func:`scan_bootstrap`: resamples test scans, both models' predictions kept with their scan;
  the replicates feed the scan-only CI and the seed-aware CI of the verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from hydralab.training.metrics import icc_c1

CONSTANT = 1e-12
"""Relative spread below which a prediction set counts as constant (no correlation exists)."""


@dataclass(frozen=True)
class WilliamsResult:
    """Williams' T2 statistic, its degrees of freedom (n - 3) and two-sided p-value."""

    t: float
    df: int
    p: float


def williams_test(r_jk: float, r_jh: float, r_kh: float, n: int) -> WilliamsResult:
    """Test H0: rho_jk = rho_jh for Pearson correlations that share variable j, on n cases.

    Williams' T2 (Williams 1959; in the form of Steiger 1980, Psychological Bulletin 87(2),
    p. 245, eq. 3)::

        T2 = (r_jk - r_jh) * sqrt( (n - 1)(1 + r_kh)
                                   / (2 (n - 1)/(n - 3) |R| + rbar^2 (1 - r_kh)^3) )
        |R| = 1 - r_jk^2 - r_jh^2 - r_kh^2 + 2 r_jk r_jh r_kh,   rbar = (r_jk + r_jh) / 2

    T2 follows Student's t with n - 3 degrees of freedom. Here j is the ground truth, k and h
    the two models' predictions, r_kh their correlation with each other. Equal correlations give
    t = 0, p = 1. A correlation that is NaN (constant predictions) or three values that form no
    correlation matrix (|R| < 0: not positive semi-definite) give NaN: there is nothing to test.
    """
    if n <= 3:
        raise ValueError(f"Williams' test needs n > 3 cases, got {n}")
    values = {"r_jk": r_jk, "r_jh": r_jh, "r_kh": r_kh}
    if any(math.isnan(r) for r in values.values()):
        return WilliamsResult(t=math.nan, df=n - 3, p=math.nan)
    for name, r in values.items():
        if not -1.0 <= r <= 1.0:
            raise ValueError(f"{name} must lie in [-1, 1], got {r}")
    det = 1 - r_jk**2 - r_jh**2 - r_kh**2 + 2 * r_jk * r_jh * r_kh
    if det < -1e-12:  # not a correlation matrix: no data could have produced these values
        return WilliamsResult(t=math.nan, df=n - 3, p=math.nan)
    if math.isclose(r_jk, r_jh, abs_tol=1e-12):  # no difference (also identical predictions)
        return WilliamsResult(t=0.0, df=n - 3, p=1.0)
    rbar = (r_jk + r_jh) / 2
    denominator = 2 * (n - 1) / (n - 3) * max(det, 0.0) + rbar**2 * (1 - r_kh) ** 3
    if denominator <= 0:
        return WilliamsResult(t=math.nan, df=n - 3, p=math.nan)
    t = (r_jk - r_jh) * math.sqrt((n - 1) * (1 + r_kh) / denominator)
    p = float(2 * stats.t.sf(abs(t), n - 3))
    return WilliamsResult(t=float(t), df=n - 3, p=p)


def pearson(first: ArrayLike, second: ArrayLike) -> np.ndarray:
    """Pearson's r along the last axis, vectorised over leading axes; NaN for a constant input."""
    a = np.asarray(first, float)
    b = np.asarray(second, float)
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    norm = np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (a * b).sum(axis=-1) / norm
    return np.where(norm > 0, np.clip(r, -1.0, 1.0), np.nan)


def is_constant(values: ArrayLike) -> bool:
    """True when a prediction set has (numerically) no spread: it correlates with nothing."""
    array = np.asarray(values, float)
    scale = max(float(np.abs(array).max(initial=0.0)), 1.0)
    return bool(np.ptp(array) <= CONSTANT * scale) if array.size else True


@dataclass(frozen=True)
class PairedScans:
    """One baseline/Hydranet pair's test scans, aligned by subject."""

    subjects: np.ndarray
    labels: np.ndarray
    baseline: np.ndarray
    hydranet: np.ndarray

    def icc_difference(self) -> float:
        """Hydranet's ICC(3,1) with the labels minus the baseline's."""
        return float(icc_c1(self.hydranet, self.labels) - icc_c1(self.baseline, self.labels))

    def constant(self) -> list[str]:
        """The methods whose predictions are constant on these scans."""
        sets = (("baseline", self.baseline), ("hydranet", self.hydranet))
        return [method for method, values in sets if is_constant(values)]


def compare_pair(
    pair: PairedScans, n_permutations: int = 2000, seed: int = 0
) -> dict[str, float | str]:
    """Both models' ICC(3,1) and Pearson r with the labels, Williams' test on the Pearson r,
    and the permutation test of the ICC difference, on one pair's test scans.

    Constant predictions have no Pearson r: Williams' test is then NaN and ``note`` says why;
    the ICC of a constant rater is 0 (no consistency) and the permutation test still runs.
    """
    constant = pair.constant()
    r_h = float(pearson(pair.hydranet, pair.labels))
    r_b = float(pearson(pair.baseline, pair.labels))
    r_kh = float(pearson(pair.hydranet, pair.baseline))
    williams = williams_test(r_h, r_b, r_kh, len(pair.labels))
    note = f"constant predictions ({', '.join(constant)}): no Pearson r" if constant else ""
    return {
        "icc_baseline": float(icc_c1(pair.baseline, pair.labels)),
        "icc_hydranet": float(icc_c1(pair.hydranet, pair.labels)),
        "icc_diff": pair.icc_difference(),
        "r_baseline": r_b,
        "r_hydranet": r_h,
        "r_between": r_kh,
        "williams_t": williams.t,
        "williams_p": williams.p,
        "permutation_p": permutation_test(pair, n_permutations, seed),
        "note": note,
    }


def permutation_test(pair: PairedScans, n_permutations: int = 2000, seed: int = 0) -> float:
    """Two-sided p-value of H0: the two models' predictions are exchangeable, scan by scan.

    Each permutation swaps the baseline and Hydranet predictions of a random half of the scans
    (a sign flip of the paired design) and recomputes the ICC(3,1) difference; the p-value is
    (1 + #{|diff*| >= |diff|}) / (1 + n_permutations), valid at any n. Each method's mean is
    removed first: ICC(3,1) ignores a rater's offset, so an offset must not make swapped data
    look worse than the observed.
    """
    rng = np.random.default_rng(seed)
    base = pair.baseline - pair.baseline.mean()
    hydra = pair.hydranet - pair.hydranet.mean()
    observed = abs(float(icc_c1(hydra, pair.labels) - icc_c1(base, pair.labels)))
    if math.isnan(observed):
        return math.nan
    swap = rng.random((n_permutations, len(pair.labels))) < 0.5
    first = np.where(swap, base, hydra)
    second = np.where(swap, hydra, base)
    diffs = np.abs(icc_c1(first, pair.labels) - icc_c1(second, pair.labels))
    # A tiny tolerance counts the permutations equal to the observed as at least as extreme.
    extreme = int(np.count_nonzero(diffs >= observed - 1e-12))
    return (1 + extreme) / (1 + n_permutations)


def scan_bootstrap(
    pairs: list[PairedScans] | tuple[PairedScans, ...], n_resamples: int = 2000, seed: int = 0
) -> np.ndarray:
    """ICC differences of ``n_resamples`` scan resamples, shape (n_resamples, len(pairs)).

    A resample draws test scans with replacement, keeping a scan's label and both predictions
    together (the paired design). When every pair holds the same subjects, one draw serves all
    pairs, so a hard scan stays hard in every seed and the replicates keep the covariance that
    shared test scans create between seeds; otherwise each pair is resampled on its own.
    """
    if not pairs:
        raise ValueError("scan_bootstrap needs at least one baseline/Hydranet pair")
    rng = np.random.default_rng(seed)
    shared = all(np.array_equal(p.subjects, pairs[0].subjects) for p in pairs)
    common = rng.integers(0, len(pairs[0].labels), (n_resamples, len(pairs[0].labels)))
    columns = []
    for pair in pairs:
        n = len(pair.labels)
        index = common if shared else rng.integers(0, n, (n_resamples, n))
        labels = pair.labels[index]
        columns.append(icc_c1(pair.hydranet[index], labels) - icc_c1(pair.baseline[index], labels))
    return np.stack(columns, axis=1)


@dataclass(frozen=True)
class BootstrapResult:
    """Mean over pairs of the Hydranet minus baseline ICC(3,1), and its percentile CI."""

    difference: float
    low: float
    high: float
    level: float
    n_resamples: int


def paired_bootstrap(
    pairs: list[PairedScans] | tuple[PairedScans, ...],
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """Percentile CI of mean_pairs(ICC_hydranet - ICC_baseline), resampling test scans only.

    This interval is **conditional on the trained models**: it says how sure we are about
    these runs on new scans, not about the method, whose runs vary from seed to seed (see
    :func:`hydralab.reports.verdict.seed_aware_difference`).
    """
    replicates = np.nanmean(scan_bootstrap(pairs, n_resamples, seed), axis=1)
    observed = float(np.mean([pair.icc_difference() for pair in pairs]))
    alpha = (1 - level) / 2
    low, high = np.nanquantile(replicates, [alpha, 1 - alpha])
    return BootstrapResult(observed, float(low), float(high), level, n_resamples)
