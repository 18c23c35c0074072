"""Pairs and summaries: failed, pruned and missing runs said as such, never averaged in;
baseline runs serve every value of a Hydranet-only key; seeds on other test scans share no
scan noise; the per-pair tests are the ones of reports/stats on the paired scans."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hydralab.reports import run_table, tables
from hydralab.reports.stats import PairedScans, paired_bootstrap, permutation_test, williams_test
from hydralab.sweeps.storage import load_study
from hydralab.training.outputs import LABEL, PREDICTION, SUBJECT


@pytest.fixture
def runs(fake_study: str) -> pd.DataFrame:
    return run_table.trial_runs(load_study(fake_study, "fake"))


def test_summary_counts_completed_runs_only(runs: pd.DataFrame) -> None:
    summary = tables.summary_table(runs, ["data.n_train"], n_resamples=100)
    summary = summary[summary["row"] == "point"].set_index("data.n_train")
    assert summary.loc[8, "baseline_n"] == 1 and summary.loc[8, "hydranet_n"] == 2
    assert math.isnan(summary.loc[8, "baseline_icc_sd"])  # one run: no sd, not 0
    done = runs[(runs["state"] == "complete") & (runs["method"] == "hydranet")]
    expected = done[done["data.n_train"] == 8]["test_icc_c1"]
    assert summary.loc[8, "hydranet_icc_mean"] == pytest.approx(expected.mean())
    assert summary.loc[8, "n_pairs"] == 1  # only seed 0 has both methods
    assert (
        summary.loc[8, "icc_diff_low"]
        < summary.loc[8, "icc_diff"]
        < summary.loc[8, "icc_diff_high"]
    )
    assert "pruned" in summary.loc[8, "not_complete"]
    assert "failed (ValueError: NaN loss)" in summary.loc[16, "not_complete"]
    assert "hydranet seed 1 missing" in summary.loc[16, "not_complete"]


def test_baseline_serves_every_k() -> None:
    """A baseline run has no k (it trains with k=1): it is compared with Hydranet at each k."""
    rows = [
        ("baseline", 0, None, 0.5),
        ("hydranet", 0, 2, 0.7),
        ("hydranet", 0, 4, 0.8),
    ]
    runs = pd.DataFrame(
        [
            {
                "number": i,
                "state": "complete",
                "method": m,
                "seed": s,
                "data.n_train": 10,
                "model.k": k,
                "test_icc_c1": v,
                "test_mse": 1.0,
                "test_predictions": None,
                "note": "",
            }
            for i, (m, s, k, v) in enumerate(rows)
        ]
    )
    summary = tables.summary_table(runs, ["model.k", "data.n_train"])
    assert list(summary.columns[:2]) == ["data.n_train", "model.k"]
    assert list(summary["model.k"]) == [2, 4]
    assert list(summary["baseline_n"]) == [1, 1]
    assert list(summary["n_pairs"]) == [0, 0]  # no prediction files: no test, said by n_pairs


def _seed_runs(tmp_path: Path, subjects_of: Callable[[int], list[str]]) -> pd.DataFrame:
    """Three seeds of both methods whose predictions are the same numbers up to a small
    per-seed jitter; seed s is tested on the scans ``subjects_of(s)``."""
    rng = np.random.default_rng(9)
    folder = tmp_path / subjects_of(0)[0]
    folder.mkdir()
    labels = rng.normal(size=40)
    noise = {"baseline": rng.normal(0, 1.0, 40), "hydranet": rng.normal(0, 0.6, 40)}
    rows = []
    for seed in range(3):
        for method in ("baseline", "hydranet"):
            csv = folder / f"{method}-{seed}.csv"
            prediction = labels + noise[method] + rng.normal(0, 0.05, 40)
            pd.DataFrame(
                {SUBJECT: subjects_of(seed), LABEL: labels, PREDICTION: prediction}
            ).to_csv(csv, index=False)
            rows.append(
                {
                    "number": len(rows),
                    "state": "complete",
                    "method": method,
                    "seed": seed,
                    "data.n_train": 12,
                    "test_icc_c1": 0.5,
                    "test_mse": 1.0,
                    "test_predictions": str(csv),
                    "note": "",
                }
            )
    return pd.DataFrame(rows)


def test_seeds_tested_on_different_scans_share_no_scan_noise(tmp_path: Path) -> None:
    """The seed-aware interval adds the shared-scan covariance only for seeds tested on the
    same scans. Here the seeds' numbers barely differ: on shared scans the interval is as wide
    as the scan noise of one pair; on different scans that noise is not shared (it shows in the
    spread of the seeds, tiny here), so the interval is several times narrower."""
    shared = _seed_runs(tmp_path, lambda seed: [f"s{i}" for i in range(40)])
    apart = _seed_runs(tmp_path, lambda seed: [f"seed{seed}-s{i}" for i in range(40)])
    width = {}
    for name, runs in (("shared", shared), ("apart", apart)):
        pairs = tables.collect_pairs(runs, ["data.n_train"])
        assert [len(p.scans.labels) for p in pairs] == [40, 40, 40]
        assert {p.scans.subjects[0] for p in pairs} == (
            {"s0"} if name == "shared" else {"seed0-s0", "seed1-s0", "seed2-s0"}
        )
        row = tables.summary_table(runs, ["data.n_train"], n_resamples=1000, pairs=pairs).iloc[0]
        assert row["n_seeds"] == 3 and row["icc_diff_low"] < row["icc_diff"] < row["icc_diff_high"]
        width[name] = row["icc_diff_high"] - row["icc_diff_low"]
    one_pair = paired_bootstrap([pairs[0].scans], n_resamples=1000)
    assert width["shared"] > 0.5 * (one_pair.high - one_pair.low)
    assert width["apart"] < width["shared"] / 3


def test_pair_table_tests_each_pair_on_its_own_scans(seed_study: str) -> None:
    """Each row's tests, recomputed from the two runs' prediction files merged by subject."""
    runs = run_table.trial_runs(load_study(seed_study, "seeds"))
    pairs = tables.collect_pairs(runs, ["data.n_train"])
    table = tables.pair_table(pairs, ["data.n_train"], n_permutations=100, seed=3)
    assert len(table) == 6
    for pair, (_, row) in zip(pairs, table.iterrows(), strict=True):
        files = [pd.read_csv(pair.runs[m]["test_predictions"]) for m in ("baseline", "hydranet")]
        merged = files[0].merge(files[1], on=SUBJECT, suffixes=("_b", "_h"))
        labels, base, hydra = (
            merged[c].to_numpy() for c in ("label_b", "prediction_b", "prediction_h")
        )
        assert (row["data.n_train"], row["seed"], row["n_test"]) == (
            pair.point[0],
            pair.replicate[0],
            len(merged),
        )
        r = np.corrcoef([labels, base, hydra])
        assert row["williams_p"] == pytest.approx(
            williams_test(r[0, 2], r[0, 1], r[1, 2], len(labels)).p
        )
        scans = PairedScans(merged[SUBJECT].to_numpy(), labels, base, hydra)
        assert row["permutation_p"] == permutation_test(scans, 100, seed=3)
        assert row["icc_diff"] == pytest.approx(scans.icc_difference())
