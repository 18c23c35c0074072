"""Where a study lives: storage URLs, printing them masked, opening them, and SQLite's locking.

Storage (``--storage``, else ``$HYDRALAB_STORAGE``, else a SQLite file in the sweep's folder):

- any SQLAlchemy URL: ``sqlite:///path/study.db`` on one machine, ``postgresql://user@host/db``
  for many (the password from ``PGPASSWORD`` or ``~/.pgpass``, or in the URL given through
  ``$HYDRALAB_STORAGE``; hydralab prints such URLs masked and never writes them anywhere);
- an Optuna journal file, ``journal:///abs/path/study.log`` or any path ending in ``.log``, for a
  shared file system without a database server. A journal has no heartbeat: a trial whose worker
  was killed stays RUNNING there and is not retried.

With a database, a worker records a heartbeat every ``heartbeat.interval`` seconds while a trial
runs; a trial whose heartbeat is older than ``heartbeat.grace_period`` is failed by the next
worker that looks, and Optuna's retry callback queues it again (see :mod:`.trials`).

A storage that cannot be opened (a server that refuses, or accepts and never answers, within
:data:`CONNECT_TIMEOUT_S`; a SQLite folder that cannot be made; a missing file to read) raises
:class:`StorageError`: one line with the masked URL and the file or host, which ``hydralab``
prints without a traceback.
"""

from __future__ import annotations

import os
import random
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from hydralab.sweeps.spec import SweepSpec
from hydralab.sweeps.trials import RETRY_ARGUMENT, RetryCallback, retry_history

DEFAULT_ROOT = "runs/sweeps"
STORAGE_ENV = "HYDRALAB_STORAGE"
CONNECT_TIMEOUT_S = 10
"""Seconds a database server has to answer a connection: one that accepts it and then says
nothing (a firewall, a stuck server) would otherwise hang a sweep for minutes."""
SERVER_DRIVERS = ("postgresql", "mysql")
"""URL schemes whose drivers take ``connect_timeout`` (psycopg, pymysql, mysqlclient)."""
T = TypeVar("T")


class StorageError(ValueError):
    """The storage cannot be opened or read. The message is one line naming the masked URL and
    the file or host; a ``ValueError``, so ``hydralab`` prints it without a traceback."""


def default_storage_url(sweep_dir: Path) -> str:
    """The embedded storage: a SQLite file in the sweep's folder."""
    return f"sqlite:///{(Path(sweep_dir) / 'study.db').resolve()}"


def resolve_storage_url(storage_url: str | None, sweep_dir: Path) -> str:
    """The storage a sweep or a report uses: the one given, else ``$HYDRALAB_STORAGE``, else
    the SQLite file in the sweep's folder."""
    return storage_url or os.environ.get(STORAGE_ENV) or default_storage_url(sweep_dir)


def journal_path(url: str) -> Path | None:
    """The file of a journal storage (``journal:///abs/x.log`` or ``path.log``), else None."""
    if url.startswith("journal://"):
        return Path(url.removeprefix("journal://"))
    if "://" not in url and url.endswith(".log"):
        return Path(url)
    return None


def masked(url: str) -> str:
    """The URL fit to print: any password replaced by ``***``."""
    if journal_path(url) is not None:
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable storage URL>"


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, else None (another backend, or in memory)."""
    if not url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        database = make_url(url).database
    except ArgumentError:
        return None
    return Path(database) if database and database != ":memory:" else None


def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLAlchemy engine options: SQLite waits for a lock, a server answers within
    :data:`CONNECT_TIMEOUT_S` (unless the URL sets its own ``connect_timeout``)."""
    if url.startswith("sqlite"):
        # Workers and their heartbeat threads write to one file: wait for its lock, don't fail.
        return {"connect_args": {"timeout": 60}}
    if url.split(":", 1)[0].split("+", 1)[0] in SERVER_DRIVERS and "connect_timeout" not in url:
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    return {}


def open_storage(url: str, spec: SweepSpec) -> BaseStorage:
    """The storage behind ``url``, with heartbeat and retry where the backend has them.

    Raises:
        StorageError: the storage cannot be opened (see :func:`storage_errors`).
    """
    with storage_errors(url):
        journal = journal_path(url)
        if journal is not None:
            from optuna.storages.journal import JournalFileBackend

            journal.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(journal)))
        database = sqlite_path(url)
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            callback = ReportingRetry(max_retry=spec.max_retry)
            storage = retry_races(
                lambda: RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs(url),
                    heartbeat_interval=spec.heartbeat_interval,
                    grace_period=spec.grace_period,
                    **{RETRY_ARGUMENT: callback},
                )
            )
        if url.startswith("sqlite"):
            _serialize_sqlite(storage.engine)
        return storage


@contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """Turn a failure to reach or use the storage into one :class:`StorageError` line.

    The driver's own words are kept (``Connection refused``, ``unable to open database
    file``), with the file or host they are about and the URL masked; a password that the
    driver repeated is masked too.
    """
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except StorageError:
        raise
    except (SQLAlchemyError, optuna.exceptions.StorageInternalError, OSError, ImportError) as e:
        raise StorageError(f"storage {masked(url)}: {_reason(e, url)}") from None


def _reason(error: BaseException, url: str) -> str:
    """What went wrong, in one line, naming the file or the host."""
    from sqlalchemy.engine import make_url

    if isinstance(error, optuna.exceptions.StorageInternalError) and error.__cause__:
        error = error.__cause__
    if isinstance(error, OSError) and error.filename:
        # mkdir(exist_ok=True) says "File exists" when a file stands where a folder should be
        why = "a file is in the way" if isinstance(error, FileExistsError) else error.strerror
        return f"cannot create or write {error.filename}: {why}"
    if isinstance(error, OSError):
        text = error.strerror or str(error)
    elif isinstance(error, ImportError):
        text = f"no database driver for this URL ({error})"
    else:
        text = str(getattr(error, "orig", None) or error)
    lines = [line.strip() for line in text.splitlines()]
    text = " ".join(line for line in lines if line and not line.startswith("(Background on"))
    database = sqlite_path(url)
    if database is not None and str(database) not in text:
        text = f"{text} ({database})"
    elif url.startswith(SERVER_DRIVERS):
        parsed = make_url(url)
        where = f"{parsed.host}:{parsed.port}" if parsed.port else str(parsed.host)
        if "timeout" in text:
            text = f"no answer from {where} within {CONNECT_TIMEOUT_S} s ({text})"
        elif str(parsed.host) not in text:
            text = f"{text} (server {where})"
        if parsed.password:
            text = text.replace(parsed.password, "***")
    return text


class ReportingRetry(RetryCallback):
    """Optuna's retry of a trial whose worker stopped, with a progress line saying so."""

    def __init__(self, max_retry: int | None) -> None:
        super().__init__(max_retry=max_retry)
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        tries = len(retry_history(trial)) + 1
        again = self.max_retry is None or tries <= self.max_retry
        print(
            f"[{study.study_name}] trial {trial.number} FAIL: its worker stopped (no heartbeat); "
            + (f"queued again (retry {tries})" if again else "not retried (heartbeat.max_retry)"),
            flush=True,
        )
        super().__call__(study, trial)


def _serialize_sqlite(engine: Any) -> None:
    """Make each SQLite transaction take the database's write lock as it begins.

    Optuna changes a trial's state by reading it, checking it, then writing it, relying on
    ``SELECT ... FOR UPDATE``, which SQLite ignores; and Python's sqlite3 does not even begin
    a transaction before a SELECT. Two workers could then both take the same queued trial,
    or both fail the same stale one and queue two retries. ``BEGIN IMMEDIATE`` makes those
    read-check-write steps atomic across processes (SQLAlchemy's recipe for pysqlite).
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened while creating the tables come back with the hooks


def retry_races(make: Callable[[], T], attempts: int = 12) -> T:
    """Call ``make`` again when another process won a race for the same new database.

    Two workers starting on a fresh SQLite file both create Optuna's tables and its schema
    version row: the loser gets "table ... already exists", a UNIQUE constraint failure or
    "database is locked". The winner's work is then done, so trying again succeeds.
    """
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(1, attempts + 1):
        try:
            return make()
        except (IntegrityError, OperationalError, optuna.exceptions.StorageInternalError) as e:
            text = f"{e} {e.__cause__}"  # Optuna wraps the database's error
            racy = isinstance(e, IntegrityError) or any(
                word in text for word in ("already exists", "locked", "UNIQUE")
            )
            if not racy or attempt == attempts:
                raise
            time.sleep(random.uniform(0.05, 0.25) * attempt)
    raise AssertionError("unreachable")


def fail_trials_without_heartbeat(study: optuna.Study, storage: RDBStorage) -> None:
    """Fail, and queue again, RUNNING trials that never recorded a heartbeat.

    Optuna's ``fail_stale_trials`` skips those: a worker killed between creating its trial and
    starting the heartbeat thread leaves a trial RUNNING for ever, and the study could never
    complete. One older than the grace period is treated like a stale one. Optuna has no API
    for heartbeats, so this reads its tables (``trials``, ``trial_heartbeats``) directly.
    """
    from sqlalchemy import DateTime, bindparam, text

    grace = storage.grace_period or 2 * (storage.heartbeat_interval or 0)
    started_before = datetime.now() - timedelta(seconds=grace)  # Optuna stores local time
    query = text(
        "SELECT t.trial_id FROM trials t LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
        "WHERE t.study_id = :study AND t.state = 'RUNNING' AND h.trial_id IS NULL "
        "AND t.datetime_start < :started_before"
    ).bindparams(bindparam("started_before", type_=DateTime()))
    study_id = storage.get_study_id_from_name(study.study_name)
    with storage.engine.connect() as connection:
        rows = connection.execute(query, {"study": study_id, "started_before": started_before})
        trial_ids = [row[0] for row in rows]
    callback = storage.get_heartbeat_stale_trial_callback()
    for trial_id in trial_ids:
        try:
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        if callback is not None:
            callback(study, storage.get_trial(trial_id))


def load_study(url: str, study: str) -> optuna.Study:
    """Open an existing study to read it (nothing is written), journal files included.

    Raises:
        StorageError: the storage cannot be reached, or its file does not exist (SQLAlchemy
            would otherwise create an empty database and report no study).
        ValueError: the storage holds no study of that name; the message lists those it holds.
    """
    journal = journal_path(url)
    database = sqlite_path(url)
    for path in (journal, database):
        if path is not None and not path.is_file():
            raise StorageError(f"storage {masked(url)}: {path} does not exist (is the path right?)")
    with storage_errors(url):
        if journal is not None:
            from optuna.storages.journal import JournalFileBackend

            backend: BaseStorage = JournalStorage(JournalFileBackend(str(journal)))
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                backend = RDBStorage(url, engine_kwargs=engine_kwargs(url))
        try:
            return optuna.load_study(study_name=study, storage=backend)
        except KeyError:
            names = [s.study_name for s in optuna.get_all_study_summaries(backend)]
    raise ValueError(f"no study {study!r} in the storage; it holds {names}")
