"""``hydralab dashboard`` and ``hydralab report --wandb`` from the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import optuna
import pytest

from hydralab.cli import main
from hydralab.sweeps.storage import default_storage_url


def _ctrl_c_as_at_a_terminal() -> None:
    """SIGINT handled by default and not blocked, whatever this process inherited (a background
    job ignores it; a thread of an earlier test's library may have blocked it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_dashboard_serves_until_ctrl_c(tmp_path: Path):
    url = default_storage_url(tmp_path)
    study = optuna.create_study(study_name="s", storage=url)
    study.enqueue_trial({})
    command = [sys.executable, "-m", "hydralab.cli", "dashboard", "--study", "s", "--port", "0"]
    env = {**os.environ, "HYDRALAB_STORAGE": url}
    server = subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, env=env, preexec_fn=_ctrl_c_as_at_a_terminal
    )
    try:
        line = server.stdout.readline()
        assert line.startswith("optuna-dashboard of sqlite:///") and "http://127.0.0.1:" in line
        address = line.split(" at ")[1].split()[0]
        assert address.endswith("/dashboard/studies/1")
        base = address.partition("/dashboard")[0]
        with urllib.request.urlopen(f"{base}/api/studies", timeout=30) as answer:
            assert [s["study_name"] for s in json.load(answer)["study_summaries"]] == ["s"]
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0
    finally:
        server.kill()
        server.wait()


def test_dashboard_of_a_missing_storage_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    missing = default_storage_url(tmp_path / "nowhere")
    assert main(["dashboard", "--storage", missing]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("hydralab: error:") and "does not exist" in error
    assert "\n" not in error
