"""PostgreSQL, for real: a throwaway server on 127.0.0.1, two workers on one study, every grid
point completed exactly once, and the password nowhere in the output or the run folders.

Skipped, saying why, where the PostgreSQL server programs (Debian's ``postgresql`` package) or
a driver (``psycopg[binary]``) are missing. The password comes from ``HYDRALAB_PG_PASSWORD``
or is made up for the run; it reaches the sweep only through ``HYDRALAB_STORAGE``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]


def _server_programs() -> Path | None:
    """The folder holding initdb and pg_ctl, on PATH or where Debian puts them."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh server and database; its URL holds the password, so it is never printed."""
    psycopg = pytest.importorskip(
        "psycopg", reason="PostgreSQL test needs psycopg[binary], SQLAlchemy's default driver"
    )
    programs = _server_programs()
    if programs is None:
        pytest.skip("PostgreSQL test needs the server programs (Debian package postgresql)")
    # PostgreSQL refuses to run as root: run it as the `postgres` user when we are root.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user and shutil.which("runuser") is None:
        pytest.skip("running as root, and no runuser to start PostgreSQL as `postgres`")
    password = os.environ.get("HYDRALAB_PG_PASSWORD") or secrets.token_urlsafe(16)
    home = Path(tempfile.mkdtemp(prefix="hydralab-pg-"))
    data, password_file = home / "data", home / "password"
    password_file.write_text(password)
    if as_user:
        shutil.chown(home, "postgres")
        shutil.chown(password_file, "postgres")
    port = _free_port()

    def run(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, capture_output=True, timeout=120)

    try:
        run(
            str(programs / "initdb"),
            "-D",
            str(data),
            "-U",
            "hydra",
            "--auth=scram-sha-256",
            f"--pwfile={password_file}",
        )
        password_file.unlink()
        settings = f"-p {port} -k {home} -c listen_addresses=127.0.0.1"
        run(
            str(programs / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            settings,
            "-l",
            str(home / "log"),
            "-w",
            "start",
        )
        with psycopg.connect(
            host="127.0.0.1", port=port, user="hydra", password=password, dbname="postgres"
        ) as connection:
            connection.autocommit = True
            connection.execute("CREATE DATABASE sweeps")
        yield f"postgresql://hydra:{quote(password, safe='')}@127.0.0.1:{port}/sweeps"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [*as_user, str(programs / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_on_postgres_run_each_grid_point_once(
    tmp_path: Path, tiny_csv: Path, postgres_url: str
):
    sweep = tmp_path / "sweep.yaml"
    raw = {
        "base_config": str(ROOT / "configs" / "blobs" / "hydranet.yaml"),
        "study": "on-postgres",
        "overrides": {
            "data.csv": str(tiny_csv),
            "data.n_train": None,
            "data.batch_size": 4,
            "trainer.max_steps": 2,
            "trainer.check_val_every_n_epoch": 1,
            "trainer.val_check_interval": 1.0,
            "trainer.log_every_n_steps": 1,
            "trainer.enable_model_summary": False,
            "tracking.wandb_mode": "disabled",
        },
        "space": {"model.method": ["baseline", "hydranet"], "model.k": [2, 4]},
        "heartbeat": {"interval": 1},
    }
    sweep.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = tmp_path / "sweeps"
    command = [sys.executable, "-m", "hydralab.cli", "sweep", str(sweep), "--out", str(out)]
    env = {**os.environ, "HYDRALAB_STORAGE": postgres_url}
    done = subprocess.run(
        [*command, "--workers", "2"], env=env, capture_output=True, text=True, timeout=300
    )
    password = make_url(postgres_url).password
    assert password not in done.stdout + done.stderr
    assert done.returncode == 0, done.stderr[-3000:]
    assert "postgresql://hydra:***@127.0.0.1" in done.stdout

    study = optuna.load_study(study_name="on-postgres", storage=postgres_url)
    ran = [t for t in study.trials if "skipped" not in t.user_attrs]
    points = sorted(tuple(sorted(t.params.items())) for t in ran)
    assert len(ran) == 3 and len(set(points)) == 3  # baseline once, hydranet with k=2 and k=4
    assert all(t.state == TrialState.COMPLETE for t in ran)
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".csv", ".log", ".json", ".txt"):
            assert password not in path.read_text(errors="ignore"), path
