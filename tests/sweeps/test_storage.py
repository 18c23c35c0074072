"""Storage: URLs (SQLite, journal files, masked passwords), the heartbeat check Optuna lacks,
and storage faults as one line (a refused or silent server, an unwritable or missing file)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from optuna.storages import JournalStorage, RDBStorage
from optuna.trial import TrialState

from hydralab.cli import main
from hydralab.sweeps import storage as storage_module
from hydralab.sweeps.spec import load_spec
from hydralab.sweeps.storage import (
    CONNECT_TIMEOUT_S,
    StorageError,
    default_storage_url,
    engine_kwargs,
    fail_trials_without_heartbeat,
    journal_path,
    load_study,
    masked,
    open_storage,
)
from hydralab.sweeps.study import open_study
from hydralab.sweeps.trials import RetryCallback, count_trials, queued_point
from tests.helpers.sweeps import write_sweep


def test_journal_storage_and_masked_urls(tmp_path: Path, tiny_csv: Path):
    spec = load_spec(write_sweep(tmp_path / "sweep.yaml", tiny_csv, {"seed": [0, 1, 2]}))
    log = tmp_path / "shared" / "study.log"
    assert journal_path(f"journal://{log}") == log and journal_path(str(log)) == log
    assert journal_path("sqlite:///x.log") is None
    storage = open_storage(f"journal://{log}", spec)
    assert isinstance(storage, JournalStorage) and log.is_file()
    study = open_study(spec, storage)
    assert count_trials(study, spec.target_trials()).left == 3
    assert isinstance(open_storage(default_storage_url(tmp_path), spec), RDBStorage)

    url = "postgresql://hydra:s3cret@db.example.org:5432/sweeps"
    assert "s3cret" not in masked(url) and "db.example.org" in masked(url)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_trial_killed_before_its_first_heartbeat_is_failed_and_queued_once(
    tmp_path: Path, tiny_csv: Path
):
    """Optuna's stale check skips a trial with no heartbeat yet; it must not block the study."""
    spec = load_spec(
        write_sweep(
            tmp_path / "sweep.yaml",
            tiny_csv,
            {"seed": [0, 1]},
            heartbeat={"interval": 1, "grace_period": 1},
        )
    )
    storage = open_storage(default_storage_url(tmp_path), spec)
    study = open_study(spec, storage)
    study.ask()  # RUNNING (the first queued point), and no heartbeat thread ever started
    fail_trials_without_heartbeat(study, storage)
    assert study.trials[0].state == TrialState.RUNNING  # still within the grace period
    time.sleep(1.2)
    fail_trials_without_heartbeat(study, storage)
    fail_trials_without_heartbeat(study, storage)
    trials = study.get_trials()  # trial 1 is the other point, still queued
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING, TrialState.WAITING]
    assert [RetryCallback.retried_trial_number(t) for t in trials] == [None, None, 0]
    assert queued_point(trials[2]) == queued_point(trials[0])


PASSWORD = "s3cret-pw-77"


def _postgres(port: int) -> str:
    return f"postgresql://hydra:{PASSWORD}@127.0.0.1:{port}/sweeps"


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A local port that accepts connections (the kernel's backlog) and never says a word."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and PASSWORD not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hydralab: error: storage "), err
    return lines[0]


def test_a_server_url_waits_at_most_the_connect_timeout():
    assert CONNECT_TIMEOUT_S <= 10
    assert engine_kwargs(_postgres(5432)) == {"connect_args": {"connect_timeout": 10}}
    assert engine_kwargs(_postgres(5432) + "?connect_timeout=3") == {}  # the user's own wins
    assert engine_kwargs("sqlite:///x.db") == {"connect_args": {"timeout": 60}}


def test_a_server_that_accepts_and_never_answers_fails_within_the_timeout(
    tmp_path: Path,
    tiny_csv: Path,
    silent_port: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    """The real timeout is 10 s; 2 s here (libpq's least) keeps the test short."""
    monkeypatch.setattr(storage_module, "CONNECT_TIMEOUT_S", 2)
    spec = load_spec(write_sweep(tmp_path / "sweep.yaml", tiny_csv, {"seed": [0]}))
    start = time.monotonic()
    with pytest.raises(StorageError, match=rf"no answer from 127\.0\.0\.1:{silent_port} within"):
        open_storage(_postgres(silent_port), spec)
    assert time.monotonic() - start < 6
    start = time.monotonic()
    assert main(["report", "--storage", _postgres(silent_port), "--study", "s"]) == 2
    assert time.monotonic() - start < 6
    line = _one_line_error(capsys)
    assert "postgresql://hydra:***@127.0.0.1" in line and "connection timeout expired" in line


def test_a_refused_connection_is_one_line_naming_the_host(
    tmp_path: Path, tiny_csv: Path, closed_port: int, capsys: pytest.CaptureFixture[str]
):
    spec = load_spec(write_sweep(tmp_path / "sweep.yaml", tiny_csv, {"seed": [0]}))
    start = time.monotonic()
    with pytest.raises(StorageError) as refused:
        open_storage(_postgres(closed_port), spec)
    message = str(refused.value)
    assert "Connection refused" in message and f'"127.0.0.1", port {closed_port}' in message
    assert PASSWORD not in message and "\n" not in message
    assert main(["report", "--storage", _postgres(closed_port), "--study", "s"]) == 2
    assert "Connection refused" in _one_line_error(capsys)
    assert time.monotonic() - start < 10


def test_sqlite_whose_folder_cannot_be_made_names_it(tmp_path: Path, tiny_csv: Path):
    """A path under a regular file: the folder cannot be created (even by root)."""
    spec = load_spec(write_sweep(tmp_path / "sweep.yaml", tiny_csv, {"seed": [0]}))
    (tmp_path / "afile").write_text("not a folder")
    url = f"sqlite:///{tmp_path / 'afile' / 'study.db'}"
    with pytest.raises(StorageError) as blocked:
        open_storage(url, spec)
    folder = tmp_path / "afile"
    assert str(blocked.value) == (
        f"storage {url}: cannot create or write {folder}: a file is in the way"
    )
    journal = f"journal://{folder / 'deeper' / 'study.log'}"
    with pytest.raises(StorageError) as deeper:
        open_storage(journal, spec)
    assert str(deeper.value) == (
        f"storage {journal}: cannot create or write {folder / 'deeper'}: Not a directory"
    )


def test_sqlite_that_cannot_be_opened_names_the_file(tmp_path: Path, tiny_csv: Path):
    """The folder exists, the database path is a folder: SQLite's words, and which file."""
    spec = load_spec(write_sweep(tmp_path / "sweep.yaml", tiny_csv, {"seed": [0]}))
    (tmp_path / "study.db").mkdir()
    url = f"sqlite:///{tmp_path / 'study.db'}"
    with pytest.raises(StorageError) as failed:
        open_storage(url, spec)
    assert str(failed.value) == (
        f"storage {url}: unable to open database file ({tmp_path / 'study.db'})"
    )


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_report_on_a_missing_storage_file_says_so_and_creates_nothing(
    tmp_path: Path,
    kind: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    """SQLAlchemy would create an empty database and report "no study": the file is checked."""
    monkeypatch.chdir(tmp_path)
    url = "sqlite:///missing/study.db" if kind == "sqlite" else "journal:///missing/study.log"
    assert main(["report", "--storage", url, "--study", "s"]) == 2
    line = _one_line_error(capsys)
    name = "missing/study.db" if kind == "sqlite" else "/missing/study.log"
    assert line.endswith(f"{url}: {name} does not exist (is the path right?)")
    assert not (tmp_path / "missing").exists()
    with pytest.raises(StorageError, match="does not exist"):
        load_study(url, "s")
