"""Experiment tracking with Weights & Biases, offline unless asked otherwise.

Runs are written to ``<save_dir>/wandb/`` and need no account or network; ``wandb sync`` uploads
them later.

A run's transaction log (``run-<id>.wandb``) is the LevelDB log format (32 KiB blocks of
checksummed chunks behind a 7-byte ``:W&B`` header) holding one ``wandb_internal_pb2.Record``
protobuf per record. wandb >= 0.2x no longer ships a Python reader for it (only ``wandb leet
inspect``, which runs the Go core in a subprocess), so :func:`read_records` decodes the framing
and lets wandb's protobuf classes parse the records: :func:`finish_wandb` waits on it for the
exit record, and the tests (tests/helpers/wandb_log.py) read whole runs back with it.
"""

from __future__ import annotations

import os
import re
import struct
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import lightning.pytorch as pl
from lightning.pytorch.loggers import WandbLogger

if TYPE_CHECKING:
    from wandb.proto.wandb_internal_pb2 import Record

Mode = Literal["offline", "online", "disabled"]
MODES: tuple[str, ...] = get_args(Mode)

INIT_TIMEOUT_S = 15.0
"""How long ``wandb.init`` may try to reach the server of an ``online`` run (W&B's own default,
90 s with retries, hung a run ~100 s without network)."""

STEP_METRIC = "trainer/global_step"
"""The x axis Lightning's WandbLogger logs every metric against."""

CONSOLE = "wrap"
"""How W&B captures the console: ``wrap`` tees what Python writes to stdout and stderr into the
run (``files/output.log``), whatever ``WANDB_CONSOLE`` says, so a run keeps its own log."""


@dataclass
class Tracking:
    """Where a run's outputs go and how it appears in W&B.

    Args:
        root: folder holding all runs; each run gets ``root/name/version_N``.
        name: experiment name (the run folder's parent, and the W&B run name prefix).
        project: W&B project.
        group: W&B group (e.g. a sweep's study name).
        tags: W&B tags.
        wandb_mode: ``offline`` (default: no key, no network), ``online`` (needs WANDB_API_KEY
            in the environment) or ``disabled``.
        run_name: the W&B run's display name (default ``NAME/version_N``); a sweep names each
            trial's run after its method, training-set size and seed.
        log_model: log the best checkpoint (and ``last.ckpt``) to W&B as a ``model`` artifact
            when training ends; ``false`` keeps checkpoints on disk only.
    """

    root: str = "runs"
    name: str = "hydralab"
    project: str = "hydralab"
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    wandb_mode: Mode = "offline"
    run_name: str | None = None
    log_model: bool = True

    def wandb_name(self, run_dir: Path) -> str:
        """The W&B display name of the run in ``run_dir``."""
        return self.run_name or f"{self.name}/{Path(run_dir).name}"


def make_wandb_logger(
    save_dir: Path,
    *,
    project: str,
    name: str | None = None,
    group: str | None = None,
    job_type: str | None = None,
    tags: Sequence[str] = (),
    mode: Mode = "offline",
    config: Mapping[str, Any] | None = None,
    log_model: bool = False,
    resume: bool = False,
) -> WandbLogger:
    """A Lightning WandbLogger writing under ``save_dir/wandb``; the run starts on first use.

    The run captures the console (:data:`CONSOLE`). With ``log_model``, Lightning logs the
    trainer's checkpoints as one ``model`` artifact when training ends successfully: the best
    as the version aliased ``best``, ``last.ckpt`` as ``latest``.

    ``mode`` is handed to ``wandb.init`` rather than set through Lightning's ``offline=True``,
    which would overwrite ``WANDB_MODE`` in ``os.environ`` for the rest of the process.
    ``online`` takes the API key from ``WANDB_API_KEY`` only, so no key is ever written into a
    config or a file by hydralab.

    ``online`` without a reachable server does not hang: ``wandb.init`` gives up after
    :data:`INIT_TIMEOUT_S` (``$WANDB_INIT_TIMEOUT`` if set), and the run **falls back to
    offline**, saying so in one line on stderr with the ``wandb sync`` command that uploads it
    later. A run that trains is worth more than its live dashboard, and a sweep keeps going
    through a network outage. A key W&B refuses is an error (:class:`WandbKeyError`), not a
    fallback: it will not fix itself.

    ``resume``: the run continues an earlier one in ``save_dir`` (``fit --ckpt_path last``), so
    it takes the newest earlier run's id with ``resume="allow"``: online, W&B appends to that
    run; offline, the new folder carries the same id, and `wandb sync` of both fills one run.

    Raises:
        ValueError: an unknown ``mode``; ``online`` without ``WANDB_API_KEY``; a config key
            that looks like a credential.
    """
    if mode not in MODES:
        raise ValueError(f"unknown W&B mode {mode!r}; expected one of {', '.join(MODES)}")
    if mode == "online" and not os.environ.get("WANDB_API_KEY"):
        raise ValueError(
            "W&B mode 'online' needs the WANDB_API_KEY environment variable "
            "(or use mode 'offline' and `wandb sync` the run later)"
        )
    config = dict(config or {})
    _reject_credentials(config)
    # Absolute: a W&B service inherited from a parent process (WANDB_SERVICE) resolves a
    # relative folder against its own working directory, not this process's.
    save_dir = Path(save_dir).resolve()
    save_dir.mkdir(parents=True, exist_ok=True)
    import wandb

    timeout = float(os.environ.get("WANDB_INIT_TIMEOUT", INIT_TIMEOUT_S))
    earlier = local_run_dirs(save_dir) if resume else []
    same_run = {"id": run_id(earlier[-1]), "resume": "allow"} if earlier else {}
    logger = FallbackWandbLogger(
        save_dir=os.fspath(save_dir),
        project=project,
        name=name,
        group=group,
        job_type=job_type,
        tags=[tags] if isinstance(tags, str) else list(tags),
        config=config,
        mode=mode,
        log_model=log_model,
        settings=wandb.Settings(init_timeout=timeout, console=CONSOLE),
        **same_run,
    )
    # Lightning always passes `anonymous=None`, which current wandb warns about on every run;
    # the setting has no effect, so leave it out of wandb.init's arguments.
    init_kwargs = getattr(logger, "_wandb_init", {})
    if init_kwargs.get("anonymous", "absent") is None:
        del init_kwargs["anonymous"]
    return logger


class WandbKeyError(ValueError):
    """W&B refused the key in ``WANDB_API_KEY``; the message never holds the key."""


class FallbackWandbLogger(WandbLogger):
    """A WandbLogger whose ``online`` run falls back to offline when W&B cannot be reached.

    See :func:`make_wandb_logger`. Only the first start of an online run is guarded; errors of
    an offline run, or after the run has started, are W&B's own.
    """

    @property
    def experiment(self) -> Any:
        import wandb

        try:
            return WandbLogger.experiment.fget(self)
        except wandb.errors.AuthenticationError as error:
            raise WandbKeyError(
                f"W&B refused the key in WANDB_API_KEY ({_without_key(error)}); check the key, "
                "or use --tracking.wandb_mode=offline and `wandb sync` the run later"
            ) from None
        except wandb.errors.Error as error:
            if self._experiment is not None or self._wandb_init.get("mode") != "online":
                raise
            runs = Path(self._wandb_init["dir"]) / "wandb"
            print(
                f"hydralab: warning: W&B online failed ({type(error).__name__}: "
                f"{_without_key(error)}); logging this run offline instead: upload it later "
                f"with `wandb sync {runs}/offline-run-*`",
                file=sys.stderr,
            )
            self._wandb_init["mode"] = "offline"
            return WandbLogger.experiment.fget(self)


def _without_key(error: BaseException) -> str:
    """An error's message on one line, without its advice lines and never with the key."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    key = os.environ.get("WANDB_API_KEY", "")
    return text.replace(key, "***") if len(key) >= 4 else text


class WandbSummaryCallback(pl.Callback):
    """Make the W&B run summary keep each metric's best value rather than its last one.

    Without this, a run's summary (what the W&B table and sweep comparisons show) is the value of
    the final epoch. On fit start, every WandbLogger of the trainer gets ``define_metric`` calls:
    metrics in ``max`` keep their maximum, those in ``min`` their minimum.

    Args:
        max: metrics where higher is better.
        min: metrics where lower is better.
    """

    def __init__(
        self,
        max: Sequence[str] = ("val/icc_c1",),
        min: Sequence[str] = ("val/mse",),
    ) -> None:
        self.max = (max,) if isinstance(max, str) else tuple(max)
        self.min = (min,) if isinstance(min, str) else tuple(min)
        both = set(self.max) & set(self.min)
        if both:
            raise ValueError(f"metrics {sorted(both)} are listed under both max and min")

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                self.define_summaries(logger.experiment)

    def define_summaries(self, experiment: Any) -> None:
        """Declare the summaries on one run (or Lightning's no-op experiment off rank zero)."""
        for goal, names in (("max", self.max), ("min", self.min)):
            for name in names:
                # Naming a metric replaces the glob definition Lightning made for "*", so
                # keep its x axis explicitly.
                experiment.define_metric(
                    name, summary=goal, step_metric=STEP_METRIC, step_sync=True
                )


LOG_CLOSE_TIMEOUT_S = 30.0
"""How long :func:`finish_wandb` waits for wandb-core to write out a finished run's log."""


def finish_wandb(exit_code: int | None = None) -> None:
    """Finish the active W&B run, if any, so the next run in this process starts clean.

    Safe to call always, typically in a ``finally`` block: it does nothing when no run is active
    (without importing wandb if nothing did), and a failure to finish is reported as a warning
    rather than raised, so it never hides the exception that brought the caller there.

    On return the run's transaction log is complete, so it can be read at
    once: ``wandb.finish()`` returns when wandb-core has *handled* the exit record, but the core
    writes the buffered log out only when it closes the stream, which ``finish`` requests
    without waiting. Under CPU load a reader could find the log still holding only its header.
    """
    wandb = sys.modules.get("wandb")
    run = None if wandb is None else getattr(wandb, "run", None)
    if run is None:
        return
    log = _sync_file(run)
    try:
        wandb.finish(exit_code=exit_code)
    except Exception as error:
        warnings.warn(f"wandb.finish() failed: {error!r}", RuntimeWarning, stacklevel=2)
        return
    if log is not None and not _wait_for_exit_record(log, LOG_CLOSE_TIMEOUT_S):
        warnings.warn(
            f"W&B has not written the end of {log} after {LOG_CLOSE_TIMEOUT_S:g} s; "
            "the run's log may be incomplete",
            RuntimeWarning,
            stacklevel=2,
        )


def _sync_file(run: Any) -> Path | None:
    """The run's transaction log, if it has one on disk (not in ``disabled`` mode)."""
    try:
        path = Path(run.settings.sync_file)
    except Exception:  # a disabled run's stand-in settings, or another wandb version
        return None
    return path if path.is_file() else None


def _wait_for_exit_record(log: Path, timeout: float) -> bool:
    """Poll ``log`` until its exit record (the last one wandb-core writes) is on disk."""
    deadline = time.monotonic() + timeout
    delay, last_size = 0.005, -1
    while True:
        size = log.stat().st_size if log.exists() else -1
        if size != last_size:  # the log is written out at once when the stream closes
            last_size = size
            try:
                if any(r.WhichOneof("record_type") == "exit" for r in read_records(log)):
                    return True
            except (OSError, ValueError):  # not yet there, or its header not yet written
                pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


RUN_FOLDER = re.compile(r"run-(?P<time>\d{8}_\d{6})-(?P<id>[A-Za-z0-9]+)(?:-\d+)?$")
"""``<prefix>run-<YYYYmmdd_HHMMSS>-<id>``, and ``-N`` after it when W&B starts the same id twice
within one second (a fast resume)."""


def run_id(run_dir: Path) -> str:
    """A local W&B run folder's run id: ``offline-run-20261202_140726-gs7jmurk(-1)`` ->
    ``gs7jmurk``."""
    name = Path(run_dir).name
    found = RUN_FOLDER.search(name)
    return found["id"] if found else name


def local_run_dirs(save_dir: Path) -> list[Path]:
    """Run folders under ``save_dir/wandb`` (offline and synced-online), oldest first."""
    wandb_dir = Path(save_dir) / "wandb"
    runs = [
        p
        for p in wandb_dir.glob("*run-*-*")
        if p.is_dir() and not p.is_symlink() and RUN_FOLDER.search(p.name)
    ]
    # Order by the timestamp whatever the prefix; within one second, a -N suffix comes later.
    return sorted(runs, key=lambda p: (RUN_FOLDER.search(p.name)["time"], len(p.name), p.name))


# --------------------------------------------------------------------------------------------
# Transaction log reading


_BLOCK_SIZE = 32 * 1024
_HEADER = struct.Struct("<4sHB")  # ident, magic, version
_CHUNK_HEADER = struct.Struct("<IHB")  # masked crc32c, length, chunk type
_IDENT, _MAGIC, _VERSION = b":W&B", 0xBEE1, 0
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_records(path: Path) -> Iterator[Record]:
    """Yield the records of a transaction log, stopping quietly at a torn last record."""
    from google.protobuf.message import DecodeError
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    if len(data) < _HEADER.size or _HEADER.unpack_from(data) != (_IDENT, _MAGIC, _VERSION):
        raise ValueError(
            f"{path} is not a W&B transaction log this reader knows (header {data[:7]!r}); "
            "`wandb leet inspect --json` may still read it"
        )
    position, pending = _HEADER.size, bytearray()
    while True:
        left_in_block = _BLOCK_SIZE - position % _BLOCK_SIZE
        if left_in_block < _CHUNK_HEADER.size:  # trailer padding: chunks never straddle blocks
            position += left_in_block
            continue
        if position + _CHUNK_HEADER.size > len(data):
            return
        _, length, kind = _CHUNK_HEADER.unpack_from(data, position)
        start = position + _CHUNK_HEADER.size
        position = start + length
        if kind == 0:  # zero-filled, preallocated space: nothing more in this block
            position = start - _CHUNK_HEADER.size + left_in_block
            continue
        if position > len(data):  # the writer was interrupted mid-record
            return
        chunk = data[start:position]
        if kind in (_FULL, _FIRST):
            pending = bytearray(chunk)
        elif kind in (_MIDDLE, _LAST):
            pending += chunk
        else:
            raise ValueError(f"{path}: unknown chunk type {kind} at byte {start}")
        if kind in (_FIRST, _MIDDLE):
            continue
        record = Record()
        try:
            record.ParseFromString(bytes(pending))
        except DecodeError as error:
            raise ValueError(f"{path}: cannot decode the record ending at {position}") from error
        yield record


def _reject_credentials(config: Mapping[str, Any], prefix: str = "") -> None:
    for key, value in config.items():
        path = f"{prefix}{key}"
        if any(word in str(key).lower() for word in ("api_key", "apikey", "password", "secret")):
            raise ValueError(
                f"config key {path!r} looks like a credential; W&B keys belong in the "
                "WANDB_API_KEY environment variable, never in a logged config"
            )
        if isinstance(value, Mapping):
            _reject_credentials(value, f"{path}.")
