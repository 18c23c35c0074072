"""A throwaway PostgreSQL server on 127.0.0.1 for the tests that need one (``postgres_url``).

Skipped, saying why, where the PostgreSQL server programs (Debian's ``postgresql`` package) or
a driver (``psycopg[binary]``) are missing. The password comes from ``HYDRALAB_PG_PASSWORD``
or is made up for the run. A conftest.py imports the fixture for the tests below it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest


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
