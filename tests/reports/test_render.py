"""The report as text (markdown, LaTeX, CSV) and `hydralab report` on a fake study: the table,
runs.csv and two PNGs; no torch imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from hydralab.cli import main
from hydralab.reports import run_table, tables
from hydralab.reports.render import display_pairs, latex, markdown, render
from hydralab.sweeps.storage import load_study


def test_report_writes_table_and_two_pngs(
    fake_study: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    args = ["report", "--storage", fake_study, "--study", "fake", "--out", str(out)]
    assert main([*args, "--n-resamples", "100"]) == 0
    printed = capsys.readouterr().out
    assert "1 failed" in printed and "1 pruned" in printed and "1 missing" in printed
    assert "failed: baseline seed 1 data.n_train=16 (trial 3): ValueError: NaN loss" in printed
    table = (out / "fake.md").read_text()
    rows = table.split("\n\n")[0].splitlines()
    assert len(rows) == 5 and "hydranet ICC" in rows[0]  # header, rule, N = 8, N = 16, pooled
    for png in ("learning_curves.png", "predictions_vs_labels.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([*args, "--format", "latex", "--n-resamples", "10"]) == 0
    assert (out / "fake.tex").read_text().startswith(r"\begin{tabular}")


def test_unknown_study_is_reported(fake_study: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--storage", fake_study, "--study", "nope"]) == 2
    assert "no study 'nope'" in capsys.readouterr().err


def test_reports_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from hydralab.reports import plots, render, stats, tables\n"
        "heavy = [m for m in ('torch', 'lightning', 'wandb') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_report_finds_the_storage_in_the_environment(
    fake_study: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYDRALAB_STORAGE", fake_study)
    out = tmp_path / "from-env"
    assert main(["report", "--study", "fake", "--out", str(out), "--n-resamples", "10"]) == 0
    assert (out / "fake.md").is_file()


def test_report_without_a_storage_says_what_to_give(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HYDRALAB_STORAGE", raising=False)
    monkeypatch.chdir(tmp_path)  # no runs/sweeps/fake/study.db here
    assert main(["report", "--study", "fake"]) == 2
    error = capsys.readouterr().err
    assert "runs/sweeps/fake/study.db" in error and "--storage" in error


def test_formats(fake_study: str) -> None:
    runs = run_table.trial_runs(load_study(fake_study, "fake"))
    summary = tables.summary_table(runs, ["data.n_train"], n_resamples=50)
    md = render(summary, ["data.n_train"], "md")
    header = [cell.strip() for cell in md.splitlines()[0].split("|")]
    assert header[:3] == ["", "data.n_train", "baseline ICC"]
    assert len(md.split("\n\n")[0].splitlines()) == 5 and "±" in md
    latex = render(summary, ["data.n_train"], "latex")
    assert r"\toprule" in latex and r"data.n\_train" in latex and r"$\pm$" in latex
    csv = render(summary, ["data.n_train"], "csv")
    assert csv.splitlines()[0].startswith("data.n_train,row,baseline_icc_mean")
    with pytest.raises(ValueError, match="unknown format"):
        render(summary, ["data.n_train"], "html")


def test_markdown_and_latex_cells_are_escaped() -> None:
    table = pd.DataFrame({"a_b": ["x|y", None], "ΔICC": ["+0.100 ± 0.020", "≥ 5 & 10%"]})
    rows = markdown(table).splitlines()
    assert [cell.strip() for cell in rows[2].split(" | ")] == ["| x\\|y", "+0.100 ± 0.020 |"]
    assert rows[3].startswith("| –") and len(rows) == 4
    tex = latex(table).splitlines()
    assert tex[:2] == [r"\begin{tabular}{ll}", r"\toprule"]
    assert tex[2] == r"a\_b & $\Delta$ICC \\"
    assert tex[4] == r"x|y & +0.100 $\pm$ 0.020 \\"
    assert tex[5] == r"-- & $\geq$ 5 \& 10\% \\"
    assert tex[6:] == [r"\bottomrule", r"\end{tabular}"]


def test_pair_cells_show_each_p_value_in_its_column() -> None:
    pairs = pd.DataFrame(
        {
            "data.n_train": [12],
            "seed": [0],
            "subset_seed": [None],
            "n_test": [50],
            "icc_baseline": [0.5],
            "icc_hydranet": [0.6],
            "icc_diff": [0.1],
            "r_baseline": [0.55],
            "r_hydranet": [0.62],
            "r_between": [0.8],
            "williams_p": [0.2345],
            "permutation_p": [0.0312],
            "baseline_stop": ["plateau at 100, best 50"],
            "hydranet_stop": ["max_steps at 200, best 190"],
            "note": [""],
        }
    )
    row = display_pairs(pairs, ["data.n_train"]).iloc[0]
    assert row["Williams p (Pearson r)"] == "0.234"
    assert row["permutation p (ΔICC)"] == "0.0312"
    assert (row["ΔICC"], row["hydranet r"], row["note"]) == ("+0.100", "0.620", "–")
    assert "subset_seed" not in row
