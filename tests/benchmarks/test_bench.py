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
