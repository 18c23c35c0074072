"""Do the report's p-values and intervals hold their level? A simulation of the report's inputs.

Each simulated comparison draws what a study hands the report: test labels and, per training
seed and method, predictions of the same test scans::

    prediction = label + c * u_scan + sigma_seed,method * noise

``u_scan`` is an error every model makes on a scan (hard scans), so the two methods'
predictions correlate, as real ones do. ``sigma`` sets a model's ICC: for two raters
ICC(3,1) = 2 cov / (var_1 + var_2), which is 2 / (2 + c^2 + sigma^2) with unit label variance.
Between seeds sigma varies as exp(spread * z): seeds give models of different quality.

Two kinds of truth are checked:

- **per pair** (one seed, no seed spread): the tests of :mod:`hydralab.reports.stats` must reject
  a true null (equal sigma) in 5 % of comparisons; the scan-only CI must cover the pair's true
  difference, known from its two sigmas;
- **per method** (several seeds, seed spread): the seed-aware interval of
  :mod:`hydralab.reports.verdict` must cover the method's true difference, the mean over seeds
  of the true ICCs, 0 under the null.

The earlier statistics are simulated too (Williams' test fed ICC values, the scan-only CI read as
the method's), to show what they got wrong. ``benchmarks/calibration.py`` prints the full table.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from hydralab.reports.stats import (
    PairedScans,
    compare_pair,
    paired_bootstrap,
    scan_bootstrap,
    williams_test,
)
from hydralab.reports.verdict import seed_aware_difference
from hydralab.training.metrics import icc_c1

ALPHA = 0.05


@dataclass(frozen=True)
class Scenario:
    """One simulated setting.

    ``icc``: the baseline's true ICC(3,1); ``shared``: the share of a model's error variance
    that every model makes on that scan; ``seeds``: training seeds per method; ``seed_spread``:
    sd of log sigma between seeds; ``effect``: Hydranet's sigma as a multiple of the baseline's
    (1 is the null); ``labels``: ``normal`` or ``skewed`` (a gamma, as counts and volumes are).
    """

    n: int
    icc: float
    seeds: int = 1
    seed_spread: float = 0.0
    shared: float = 0.5
    effect: float = 1.0
    labels: str = "normal"

    @property
    def error_variances(self) -> tuple[float, float]:
        """(c^2, sigma^2) of the baseline, from its ICC and the shared share."""
        total = 2 / self.icc - 2
        return self.shared * total, (1 - self.shared) * total

    def true_icc(self, sigma: np.ndarray) -> np.ndarray:
        c2, _ = self.error_variances
        return 2 / (2 + c2 + sigma**2)

    def method_difference(self) -> float:
        """The method's true difference: E_seed ICC_hydranet - E_seed ICC_baseline."""
        _, s2 = self.error_variances
        nodes, weights = np.polynomial.hermite_e.hermegauss(60)
        weights = weights / weights.sum()
        sigma = math.sqrt(s2) * np.exp(self.seed_spread * nodes)
        return float(weights @ self.true_icc(sigma * self.effect) - weights @ self.true_icc(sigma))


@dataclass(frozen=True)
class Draw:
    """One simulated study: pairs (one per seed) and the sigmas that made them."""

    pairs: list[PairedScans]
    sigma_baseline: np.ndarray
    sigma_hydranet: np.ndarray


def draw(scenario: Scenario, rng: np.random.Generator) -> Draw:
    """Labels, a shared scan error and per-seed predictions of both methods."""
    n = scenario.n
    if scenario.labels == "skewed":
        labels = (rng.gamma(2.0, 1.0, n) - 2.0) / math.sqrt(2.0)
    elif scenario.labels == "normal":
        labels = rng.standard_normal(n)
    else:
        raise ValueError(f"labels must be 'normal' or 'skewed', got {scenario.labels!r}")
    c2, s2 = scenario.error_variances
    common = labels + math.sqrt(c2) * rng.standard_normal(n)
    spread = np.exp(scenario.seed_spread * rng.standard_normal((2, scenario.seeds)))
    sigma_b = math.sqrt(s2) * spread[0]
    sigma_h = math.sqrt(s2) * scenario.effect * spread[1]
    subjects = np.arange(n).astype(str)
    pairs = [
        PairedScans(
            subjects=subjects,
            labels=labels,
            baseline=common + sb * rng.standard_normal(n),
            hydranet=common + sh * rng.standard_normal(n),
        )
        for sb, sh in zip(sigma_b, sigma_h, strict=True)
    ]
    return Draw(pairs, sigma_b, sigma_h)


@dataclass(frozen=True)
class Rates:
    """Per-pair rejection rates at ALPHA (the size under the null, the power otherwise) and the
    scan-only CI's coverage of the pair's true difference. ``williams_icc`` is Williams' test fed
    ICC values, as the report did before: kept to show why it changed."""

    williams_pearson: float
    williams_icc: float
    permutation: float
    scan_ci_coverage: float


def pair_rates(scenario: Scenario, sims: int, resamples: int = 1000, seed: int = 0) -> Rates:
    """Simulate ``sims`` single pairs (the first seed of each draw)."""
    rng = np.random.default_rng(seed)
    hits = np.zeros(4)
    for index in range(sims):
        sample = draw(scenario, rng)
        pair = sample.pairs[0]
        n = len(pair.labels)
        report = compare_pair(pair, resamples, seed=index)  # what the report feeds its tests
        icc_h, icc_b = icc_c1(pair.hydranet, pair.labels), icc_c1(pair.baseline, pair.labels)
        icc_kh = np.clip(icc_c1(pair.hydranet, pair.baseline), -1, 1)
        truth = float(
            scenario.true_icc(sample.sigma_hydranet[0])
            - scenario.true_icc(sample.sigma_baseline[0])
        )
        ci = paired_bootstrap([pair], resamples, seed=index)
        hits += [
            report["williams_p"] < ALPHA,
            williams_test(float(icc_h), float(icc_b), float(icc_kh), n).p < ALPHA,  # before
            report["permutation_p"] < ALPHA,
            ci.low <= truth <= ci.high,
        ]
    return Rates(*(hits / sims))


@dataclass(frozen=True)
class SeedRates:
    """Seed-aware interval: coverage of the method's truth and rejection of 0; the scan-only
    interval read as the method's, for comparison."""

    seed_aware_coverage: float
    seed_aware_rejects: float
    scan_only_coverage: float
    scan_only_rejects: float


def seed_rates(scenario: Scenario, sims: int, resamples: int = 1000, seed: int = 0) -> SeedRates:
    """Simulate ``sims`` studies of ``scenario.seeds`` seed pairs each."""
    rng = np.random.default_rng(seed)
    truth = scenario.method_difference()
    hits = np.zeros(4)
    for index in range(sims):
        pairs = draw(scenario, rng).pairs
        per_seed = [pair.icc_difference() for pair in pairs]
        replicates = scan_bootstrap(pairs, resamples, seed=index)
        aware = seed_aware_difference(per_seed, replicates, level=1 - ALPHA)
        scan_only = np.nanquantile(replicates.mean(axis=1), [ALPHA / 2, 1 - ALPHA / 2])
        hits += [
            aware.low <= truth <= aware.high,
            aware.low > 0 or aware.high < 0,
            scan_only[0] <= truth <= scan_only[1],
            scan_only[0] > 0 or scan_only[1] < 0,
        ]
    return SeedRates(*(hits / sims))


PAIR_SCENARIOS = tuple(
    Scenario(n, icc, shared=shared, effect=effect, labels=labels)
    for n in (50, 300)
    for icc in (0.2, 0.5, 0.9)
    for shared, effect, labels in ((0.5, 1.0, "normal"), (0.5, 0.8, "normal"), (0.5, 1.0, "skewed"))
)
SEED_SCENARIOS = tuple(
    Scenario(n, icc, seeds=seeds, seed_spread=0.3, effect=effect)
    for n in (50, 300)
    for icc in (0.2, 0.5, 0.9)
    for seeds in (3, 5)
    for effect in (1.0, 0.8)
)


def calibration_rows(
    sims: int,
    resamples: int = 1000,
    seed: int = 0,
    pair_scenarios: tuple[Scenario, ...] = PAIR_SCENARIOS,
    seed_scenarios: tuple[Scenario, ...] = SEED_SCENARIOS,
) -> Iterator[dict[str, float | int | str]]:
    """Every scenario's rates, one dict per row: the table of docs/method.md."""
    for scenario in pair_scenarios:
        rates = pair_rates(scenario, sims, resamples, seed)
        yield {"kind": "pair", **asdict(scenario), **asdict(rates)}
    for scenario in seed_scenarios:
        rates = seed_rates(scenario, sims, resamples, seed)
        yield {"kind": "seeds", **asdict(scenario), **asdict(rates)}
