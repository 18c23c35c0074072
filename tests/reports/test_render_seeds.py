"""`hydralab report` on a complete three-seed study: what the verdict issue asks the report to
say, in each of its three formats."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from hydralab.cli import main
from hydralab.reports import run_table, tables
from hydralab.sweeps.storage import load_study


def _report(seed_study: str, out: Path, fmt: str) -> str:
    args = ["report", "--storage", seed_study, "--study", "seeds", "--out", str(out)]
    assert main([*args, "--format", fmt, "--n-resamples", "200"]) == 0
    suffix = {"md": "md", "csv": "csv", "latex": "tex"}[fmt]
    return (out / f"seeds.{suffix}").read_text()


def test_markdown_says_per_seed_ci_pooled_convergence_and_power(
    seed_study: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _report(seed_study, tmp_path, "md")
    assert text in capsys.readouterr().out  # printed as written
    header, _, row8, row16, pooled = text.splitlines()[:5]
    assert "ΔICC per seed" in header and "mean ΔICC [95% CI, seeds]" in header
    cells = [c.strip() for c in row8.split("|")[1:-1]]
    per_seed = cells[[c.strip() for c in header.split("|")[1:-1]].index("ΔICC per seed")]
    assert len(per_seed.split(", ")) == 3  # three seeds, each its own difference
    assert "NOT CONVERGED: 1 of 6 at a cap (3000–5000 steps)" in row8
    assert "6/6 on plateau (3000 steps)" in row16
    assert pooled.split("|")[1].strip() == "all"
    assert "Power, data.n_train=8: 30 test scans" in text
    assert "NOT CONVERGED (data.n_train=8)" in text
    assert "Per pair, conditional on the two trained models:" in text
    assert "max_steps at 5000, best 4950" in text
    pairs = pd.read_csv(tmp_path / "pairs.csv")
    assert len(pairs) == 6 and pairs["williams_p"].between(0, 1).all()
    assert pairs["permutation_p"].between(0, 1).all()


def test_csv_and_latex_carry_the_same_verdict(seed_study: str, tmp_path: Path) -> None:
    summary = pd.read_csv(pd.io.common.StringIO(_report(seed_study, tmp_path, "csv")))
    assert list(summary["row"]) == ["point", "point", "pooled"]
    assert (summary["n_seeds"] == 3).all()
    for _, row in summary.iterrows():
        assert row["icc_diff_low"] < row["icc_diff"] < row["icc_diff_high"]
        assert 0 < row["mde_seeds"] < 1 and 0 < row["mde_pair"] < 1
    assert list(summary["not_converged"]) == [1, 0, 1]
    latex = _report(seed_study, tmp_path, "latex")
    assert latex.count(r"\begin{tabular}") == 2 and "NOT CONVERGED" in latex
    assert r"$\Delta$ICC per seed" in latex
    assert r"detects $\Delta$ICC $\geq$ 0." in latex  # the power note, ≥ in TeX


def test_pooled_row_averages_each_seed_over_the_rows(seed_study: str) -> None:
    runs = run_table.trial_runs(load_study(seed_study, "seeds"))
    pairs = tables.collect_pairs(runs, ["data.n_train"])
    summary = tables.summary_table(runs, ["data.n_train"], n_resamples=100, pairs=pairs)
    by_seed: dict = {}
    for pair in pairs:
        by_seed.setdefault(pair.replicate, []).append(pair.scans.icc_difference())
    expected = [sum(v) / len(v) for _, v in sorted(by_seed.items(), key=str)]
    pooled = summary[summary["row"] == "pooled"].iloc[0]
    assert pooled["per_seed_diff"] == ", ".join(f"{d:+.3f}" for d in expected)
    assert pooled["icc_diff"] == pytest.approx(sum(expected) / 3)


def test_constant_predictions_are_a_note_not_a_crash(seed_study: str, tmp_path: Path) -> None:
    runs = run_table.trial_runs(load_study(seed_study, "seeds"))
    for path in runs["test_predictions"]:
        table = pd.read_csv(path)
        table["prediction"] = 4.0
        table.to_csv(path, index=False)
    summary = tables.summary_table(runs, ["data.n_train"], n_resamples=50)
    assert "constant predictions: baseline seed 0" in summary.loc[0, "constant"]
    assert _report(seed_study, tmp_path, "md")


def test_a_saved_runs_table_is_reported_again(
    seed_study: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/results keep runs.csv and the predictions, not the database: a report from them
    must equal the report from the storage."""
    first = _report(seed_study, tmp_path / "first", "csv")
    shared = tmp_path / "shared"
    shared.mkdir()
    runs = pd.read_csv(tmp_path / "first" / "runs.csv")
    for index, path in enumerate(runs["test_predictions"]):
        (shared / f"trial-{index}.csv").write_text(Path(path).read_text())
        runs.loc[index, "test_predictions"] = f"trial-{index}.csv"  # relative to runs.csv
    runs.to_csv(shared / "runs.csv", index=False)
    args = ["report", "--runs", str(shared / "runs.csv"), "--study", "seeds", "--format", "csv"]
    assert main([*args, "--out", str(tmp_path / "again"), "--n-resamples", "200"]) == 0
    assert (tmp_path / "again" / "seeds.csv").read_text() == first
    assert main(["report", "--runs", str(tmp_path / "nope.csv"), "--study", "x"]) == 2
    assert "runs table" in capsys.readouterr().err


def test_subset_seeds_are_replicates_not_rows(tmp_path: Path) -> None:
    """A sweep crossing training seeds with subset seeds: each (seed, subset seed) is one more
    pair of models of the same row, not a row of its own."""
    import numpy as np

    rng = np.random.default_rng(3)
    labels = rng.normal(size=20)
    rows = []
    for number, (method, seed, subset) in enumerate(
        (m, s, u) for m in ("baseline", "hydranet") for s in (0, 1) for u in (0, 1)
    ):
        csv = tmp_path / f"{number}.csv"
        noise = rng.normal(0, 1 if method == "baseline" else 0.5, 20)
        pd.DataFrame(
            {"subject": [f"s{i}" for i in range(20)], "label": labels, "prediction": labels + noise}
        ).to_csv(csv, index=False)
        rows.append(
            {
                "number": number,
                "state": "complete",
                "method": method,
                "seed": seed,
                "data.subset_seed": subset,
                "data.n_train": 12,
                "test_icc_c1": 0.5,
                "test_mse": 1.0,
                "test_predictions": str(csv),
                "note": "",
            }
        )
    runs = pd.DataFrame(rows)
    summary = tables.summary_table(runs, ["data.n_train"], n_resamples=100)
    assert len(summary) == 1 and summary.loc[0, "n_seeds"] == 4
    pairs = tables.pair_table(tables.collect_pairs(runs, ["data.n_train"]), ["data.n_train"], 50)
    assert sorted(zip(pairs["seed"], pairs["subset_seed"], strict=True)) == [
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
    ]
