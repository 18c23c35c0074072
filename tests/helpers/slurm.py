"""A real SLURM cluster for the tests that submit jobs (``slurm_cluster``), and waiting on jobs.

The cluster is the one already running, else the single-node one ``.ci/slurm-start.sh`` starts
on this machine (it installs Debian's slurm-wlm and munge if needed, which takes root). Where it
cannot start, the tests skip with the script's reason; with ``HYDRALAB_REQUIRE_SLURM=1`` (CI)
they fail instead, so that CI runs them rather than skips them.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from hydralab.sweeps.slurm import LOGS, job_name

ROOT = Path(__file__).resolve().parents[2]
START = ROOT / ".ci" / "slurm-start.sh"
REQUIRE = "HYDRALAB_REQUIRE_SLURM"


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """A SLURM cluster that takes jobs from this machine (started once per test session)."""
    try:
        done = subprocess.run([str(START)], capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as error:
        reason = f"{START.name} could not run: {error}"
    else:
        if done.returncode == 0:
            return
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        reason = " | ".join(lines[-4:]) or f"{START.name} exited with {done.returncode}"
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"SLURM could not start, and ${REQUIRE}=1: {reason}")
    pytest.skip(f"SLURM cannot start on this machine: {reason}")


def queued_jobs(study: str) -> list[str]:
    """The study's jobs that SLURM still holds (pending, running or completing)."""
    done = subprocess.run(
        ["squeue", "--noheader", f"--name={job_name(study)}", "--format=%i %T"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout.split("\n")[:-1]


def wait_for_jobs(study: str, sweep_dir: Path, timeout: float = 300) -> None:
    """Wait until SLURM holds none of the study's jobs; on timeout, fail with their logs."""
    deadline = time.monotonic() + timeout
    while queued_jobs(study):
        if time.monotonic() > deadline:
            subprocess.run(["scancel", f"--name={job_name(study)}"], check=False)
            pytest.fail(f"jobs still queued after {timeout} s:\n{job_logs(sweep_dir)}")
        time.sleep(1)


def job_logs(sweep_dir: Path) -> str:
    """The end of every job log of a sweep, for an assertion's message."""
    logs = sorted((Path(sweep_dir) / LOGS).glob("*/*_log.*"))
    return "\n".join(f"--- {log}\n{log.read_text()[-2500:]}" for log in logs) or "no job logs"
