"""`hydralab report` on a fake study: the table, runs.csv and two PNGs; no torch imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hydralab.cli import main


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
