"""``benchmarks/bench.py --quick`` runs end to end and prints its one table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench.py"


def test_quick_bench_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("hydralab_bench", BENCH)
    bench = sys.modules.setdefault("hydralab_bench", importlib.util.module_from_spec(spec))
    spec.loader.exec_module(bench)
    bench.main(["--quick"])
    lines = capsys.readouterr().out.splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert table[0] == "| measure | setting | median | IQR | unit | ratio |"
    measures = {line.split("|")[1].strip() for line in table[2:]}
    assert measures == {"step", "zero-slot", "data", "memory", "flops"}
    assert any("p=0.5" in line and "time saved" in line for line in table)
    assert any("chunked" in line and "x K=" in line for line in table)


def test_speedups_times_each_switch_against_eager(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(BENCH.parent))  # speedups.py imports bench.py beside it
    spec = importlib.util.spec_from_file_location("hydralab_speedups", BENCH.parent / "speedups.py")
    speedups = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speedups)
    speedups.main(["--sides", "6", "--batch", "4", "--repeats", "2", "--only", "channels_last_3d"])
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert table[0] == "| measure | setting | median | IQR | unit | ratio |"
    settings = [line.split("|")[2].strip() for line in table[2:]]
    assert settings == ["eager float32 side 6", "channels_last_3d side 6"]
    assert table[2].endswith("| img/s | 1.00x eager |")
    assert all(float(line.split("|")[3]) > 0 for line in table[2:])


def test_calibration_script_prints_both_tables(capsys: pytest.CaptureFixture[str]) -> None:
    path = BENCH.parent / "calibration.py"
    spec = importlib.util.spec_from_file_location("hydralab_calibration", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--quick", "--sims", "20", "--resamples", "50"])
    lines = capsys.readouterr().out.splitlines()
    headers = [line for line in lines if line.startswith("| n | icc")]
    assert len(headers) == 2 and "williams_pearson" in headers[0]
    assert "seed_aware_coverage" in headers[1]
    rows = [line for line in lines if line.startswith("| 50 |")]
    assert len(rows) == 2 and all(line.count("%") == 4 for line in rows)
