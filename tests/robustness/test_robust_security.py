"""Security: checkpoints cannot run code when loaded, YAML is read safely, and secrets (the W&B
key, a database password) never reach a file a sweep writes.

Each case is a row of docs/robustness.md.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

from hydralab.cli import main
from hydralab.sweeps.spec import SweepSpecError, load_spec
from hydralab.sweeps.study import run_sweep
from hydralab.training.runner import run_cli
from tests.helpers.postgres import postgres_url  # noqa: F401 (a fixture)
from tests.helpers.sweeps import BASE_CONFIG, write_sweep

PACKAGE = Path(__file__).resolve().parents[2] / "hydralab"
CONFIGS = PACKAGE.parent / "configs"


class _RunsCode:
    """Unpickling this would create ``marker``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("subcommand", ["test", "fit"])
def test_a_checkpoint_that_would_run_code_is_refused(
    tmp_path: Path, tiny_csv: Path, subcommand: str
):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": _RunsCode(marker)}}, evil)
    # The refusal names the file and never advises the unsafe load (weights_only=False).
    refused = rf"^{re.escape(str(evil))} holds objects that a safe"
    with pytest.raises(ValueError, match=refused) as no:
        run_cli(
            [
                subcommand,
                f"--config={CONFIGS / 'blobs' / 'hydranet.yaml'}",
                f"--data.csv={tiny_csv}",
                f"--ckpt_path={evil}",
                f"--tracking.root={tmp_path / 'runs'}",
                "--tracking.wandb_mode=disabled",
            ]
        )
    assert "weights_only=False" not in str(no.value)
    assert not marker.exists()


def test_yaml_is_only_read_with_the_safe_loader():
    """yaml.load / unsafe_load / full_load can build arbitrary Python objects from a file."""
    unsafe = re.compile(r"yaml\.(load|unsafe_load|full_load|load_all)\(|Loader\s*=")
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{number}"
        for path in PACKAGE.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if unsafe.search(line)
    ]
    assert found == []


def _runs_code(marker: Path) -> str:
    """A YAML value that, read with an unsafe loader, creates ``marker``."""
    return f"!!python/object/apply:os.system ['touch {marker}']"


@pytest.mark.parametrize("where", ["sweep file", "base config"])
def test_a_yaml_file_that_would_run_code_is_refused_naming_it(tmp_path: Path, where: str):
    """hydralab's own YAML reads (the sweep file, and the base config it names) refuse a tag
    that builds a Python object, with an error naming the file; nothing runs."""
    marker = tmp_path / "code-ran"
    base = tmp_path / "base.yaml"
    base.write_text(BASE_CONFIG.read_text())
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"base_config: {base}\nstudy: s\nspace: {{seed: [0]}}\n")
    evil = sweep if where == "sweep file" else base
    evil.write_text(evil.read_text() + f"tags: {_runs_code(marker)}\n")
    with pytest.raises(SweepSpecError, match=rf"^{re.escape(str(evil))}: not valid YAML: "):
        load_spec(sweep)
    assert not marker.exists()


def test_a_set_value_that_would_run_code_is_refused(tmp_path: Path, capsys):
    """``hydralab sweep --set KEY=VALUE`` reads VALUE as YAML: a Python tag must not run, and
    the refusal is one line naming the ``--set`` item (exit 2, no traceback)."""
    marker = tmp_path / "code-ran"
    sweep = write_sweep(tmp_path / "sweep.yaml", tmp_path / "none.csv", {"seed": [0]})
    command = ["sweep", str(sweep), "--out", str(tmp_path / "out")]
    assert main([*command, "--set", f"model.lr={_runs_code(marker)}"]) == 2
    err = capsys.readouterr().err
    assert '--set "model.lr=' in err and "not valid YAML" in err and "python/object/apply" in err
    assert "Traceback" not in err
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


SECRETS = {
    "WANDB_API_KEY": "wandb-key-0123456789abcdef0123456789abcdef",
    "PGPASSWORD": "pg-env-s3cr3t-41",
    "HYDRALAB_DB_PASSWORD": "db-env-s3cr3t-42",
}


@pytest.fixture(params=["journal", "postgres"])
def storage_with_secret(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(storage URL, the secret in it): a journal file (no secret in the URL), or PostgreSQL
    with the password in the URL (skipped, saying why, without a server)."""
    if request.param == "journal":
        return f"journal://{tmp_path / 'journal' / 'study.log'}", SECRETS["PGPASSWORD"]
    url = request.getfixturevalue("postgres_url")
    from sqlalchemy.engine import make_url

    return url, make_url(url).password


@pytest.mark.slow
def test_secrets_never_reach_a_sweeps_files(
    tmp_path: Path,
    tiny_csv: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    storage_with_secret: tuple[str, str],
):
    """Secrets where a user puts them: the environment, and the storage URL on the command line
    (which wandb would record as the program's arguments). W&B offline is on, so its files are
    scanned too; the offline mode never needs the key, but it is set anyway."""
    url, url_secret = storage_with_secret
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["hydralab", "sweep", "s.yaml", "--storage", url])
    sweep = write_sweep(
        tmp_path / "sweep.yaml",
        tiny_csv,
        {"seed": [0]},
        overrides={"tracking.wandb_mode": "offline", "trainer.max_steps": 2},
    )
    out = tmp_path / "sweeps"
    counts = run_sweep(load_spec(sweep), out=out, storage_url=url)
    assert counts.complete == 1

    secrets = [*SECRETS.values(), url_secret]
    printed = capsys.readouterr()
    for secret in secrets:
        assert secret not in printed.out + printed.err
    files = [path for path in out.rglob("*") if path.is_file()]
    names = {path.name for path in files}
    assert {"config.yaml", "metrics.csv", "last.ckpt", "test_predictions.csv"} <= names
    assert any(path.suffix == ".wandb" for path in files)  # the offline W&B run is there
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"{secret[:6]}... found in {path}"


def test_a_storage_error_never_prints_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    """A refused database (nothing listens on the port), its URL with the password given
    through ``$HYDRALAB_STORAGE``: one line naming the host, the password masked."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    password = SECRETS["HYDRALAB_DB_PASSWORD"]
    monkeypatch.setenv("HYDRALAB_STORAGE", f"postgresql://hydra:{password}@127.0.0.1:{port}/db")
    sweep = write_sweep(tmp_path / "sweep.yaml", tmp_path / "none.csv", {"seed": [0]})
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "out")]) == 2
    printed = capsys.readouterr()
    (line,) = printed.err.strip().splitlines()
    assert line.startswith(f"hydralab: error: storage postgresql://hydra:***@127.0.0.1:{port}/db")
    assert "Connection refused" in line and "Traceback" not in printed.err
    assert password not in printed.out + printed.err
    assert not (tmp_path / "out").exists()
