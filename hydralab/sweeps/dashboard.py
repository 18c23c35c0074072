"""optuna-dashboard on a sweep's storage: live trial curves, the objective's name, artifacts.

``hydralab dashboard [--study NAME] [--storage URL] [--port N] [--artifacts DIR]`` serves
optuna-dashboard's WSGI app on 127.0.0.1 only (the storage URL may hold a password, and the
dashboard can delete studies). It shows every study of the storage; with ``--study`` the
printed address opens that study. Trials report their metric at every validation, so a running
sweep's curves grow live; each finished trial's prediction plot and CSV, and a report's figures,
are its artifacts (the store a worker recorded in the study, :mod:`.artifacts`).

optuna-dashboard is the ``dashboard`` extra (``pip install hydralab[dashboard]``; in ``dev``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage

from hydralab.sweeps.artifacts import artifact_store
from hydralab.sweeps.storage import (
    DEFAULT_ROOT,
    STORAGE_ENV,
    StorageError,
    default_storage_url,
    engine_kwargs,
    journal_path,
    masked,
    sqlite_path,
    storage_errors,
)
from hydralab.sweeps.trials import ARTIFACTS

HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def find_storage(storage: str | None, study: str | None, root: str | Path = DEFAULT_ROOT) -> str:
    """The storage to show: the one given, ``$HYDRALAB_STORAGE``, the study's default
    (``<root>/<study>/study.db``), or without ``study`` the only ``<root>/*/study.db``.

    Raises:
        ValueError: none of these exists; the message says what to give.
    """
    url = storage or os.environ.get(STORAGE_ENV)
    if url:
        return url
    if study is not None:
        return default_storage_url(Path(root) / study)
    found = sorted(Path(root).glob("*/study.db"))
    if len(found) == 1:
        return default_storage_url(found[0].parent)
    names = ", ".join(path.parent.name for path in found) or "none"
    raise ValueError(
        f"no --storage and no ${STORAGE_ENV}: give --study NAME or --storage URL "
        f"(studies in {root}: {names})"
    )


def read_storage(url: str) -> BaseStorage:
    """The existing storage behind ``url``, opened to read (a missing SQLite or journal file is
    an error, not a new empty storage).

    Raises:
        StorageError: the file does not exist, or the storage cannot be reached.
    """
    journal, database = journal_path(url), sqlite_path(url)
    for path in (journal, database):
        if path is not None and not path.is_file():
            raise StorageError(f"storage {masked(url)}: {path} does not exist (is the path right?)")
    with storage_errors(url):
        if journal is not None:
            from optuna.storages.journal import JournalFileBackend

            return JournalStorage(JournalFileBackend(str(journal)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, engine_kwargs=engine_kwargs(url))


def artifacts_of(storage: BaseStorage, study: str | None) -> Path | None:
    """The artifact folder the study recorded (without ``study``: the one all studies record),
    if it exists here."""
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    recorded = {s.user_attrs.get(ARTIFACTS) for s in summaries if study in (None, s.study_name)}
    recorded.discard(None)
    if len(recorded) != 1:
        return None
    folder = Path(recorded.pop())
    return folder if folder.is_dir() else None


def dashboard_app(storage: BaseStorage, artifacts: Path | None = None) -> Any:
    """optuna-dashboard's WSGI app on ``storage``, serving artifacts from ``artifacts``."""
    try:
        from optuna_dashboard import wsgi
    except ImportError:
        raise ValueError(
            "optuna-dashboard is not installed: pip install 'hydralab[dashboard]' "
            "(make install does)"
        ) from None
    store = artifact_store(artifacts) if artifacts is not None else None
    return wsgi(storage, artifact_store=store)


class _QuietHandler(WSGIRequestHandler):
    """No line per HTTP request: the browser polls every few seconds."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def dashboard_server(
    storage_url: str,
    study: str | None = None,
    port: int = DEFAULT_PORT,
    artifacts: str | Path | None = None,
) -> Iterator[tuple[WSGIServer, str]]:
    """A dashboard server bound to 127.0.0.1:``port`` (0: any free port), and the address that
    opens ``study`` (or the study list); closed on exit. Nothing is served until the caller
    runs ``server.serve_forever()`` (in a thread, for a test).

    Raises:
        StorageError: the storage cannot be opened.
        ValueError: no study of that name; optuna-dashboard missing; the port is taken.
    """
    storage = read_storage(storage_url)
    path = "/dashboard"
    if study is not None:
        try:
            path += f"/studies/{storage.get_study_id_from_name(study)}"
        except KeyError:
            names = [s.study_name for s in optuna.get_all_study_summaries(storage, False)]
            raise ValueError(
                f"no study {study!r} in {masked(storage_url)}; it holds {names}"
            ) from None
    folder = Path(artifacts) if artifacts is not None else artifacts_of(storage, study)
    app = dashboard_app(storage, folder)
    try:
        server = make_server(HOST, port, app, handler_class=_QuietHandler)
    except OSError as error:
        raise ValueError(f"cannot serve on {HOST}:{port} ({error.strerror}); try --port") from None
    try:
        yield server, f"http://{HOST}:{server.server_port}{path}"
    finally:
        server.server_close()


def serve_dashboard(
    storage_url: str,
    study: str | None = None,
    port: int = DEFAULT_PORT,
    artifacts: str | Path | None = None,
) -> None:
    """Serve the dashboard until Ctrl-C, after printing its address (``hydralab dashboard``)."""
    with dashboard_server(storage_url, study, port, artifacts) as (server, address):
        print(f"optuna-dashboard of {masked(storage_url)} at {address} (Ctrl-C stops it)")
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
