"""Read a W&B offline run back from its transaction log, so tests check what was logged without
a W&B server.

Only tests read whole runs; the library itself needs only the record framing
(:func:`hydralab.training.tracking.read_records`), to wait for a run's exit record.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from hydralab.training.tracking import read_records

if TYPE_CHECKING:
    from wandb.proto.wandb_internal_pb2 import Record


def read_offline_run(run_dir: Path) -> dict[str, Any]:
    """Read a run back from its local transaction log.

    Args:
        run_dir: a run folder (``<save_dir>/wandb/offline-run-<date>-<id>``, or
            ``latest-run``) or its ``run-<id>.wandb`` file.

    Returns:
        ``{"summary": {...}, "history": [row, ...], "config": {...}, "run": {...},
        "artifacts": [...], "console": "...", "charts": {...}}``.
        ``summary`` is the run summary as wandb recorded it, so a metric declared through
        ``WandbSummaryCallback`` appears as e.g. ``{"max": 0.9}``. Should a log hold no summary
        records (another wandb version), it is rebuilt from the history: the last value of each
        key, and min/max/mean/first/last for declared metrics. ``history`` holds one
        dict per logged step, nested keys joined with ``.``. ``run`` holds ``id``, ``name``,
        ``project``, ``group``, ``job_type``, ``tags`` and ``exit_code`` (``None`` while the
        run has not exited, or if it was killed). wandb's internal ``_wandb`` entries are left
        out of ``config`` and ``summary``. ``artifacts`` holds one dict per logged artifact
        version (``name``, ``type``, ``aliases``, ``metadata``, ``files``: the paths in its
        manifest); ``console`` the captured stdout and stderr; ``charts`` each custom chart
        (``wandb.plot.*``) by key, as its panel config.

    Raises:
        FileNotFoundError: no ``run-*.wandb`` file there.
        ValueError: the file is not a W&B transaction log, or a record cannot be decoded.
    """
    return _fold_records(read_records(_find_log(Path(run_dir))))


def _find_log(run_dir: Path) -> Path:
    if run_dir.is_file():
        return run_dir
    logs = sorted(run_dir.glob("run-*.wandb"))
    if len(logs) != 1:
        found = ", ".join(p.name for p in logs) or "none"
        raise FileNotFoundError(f"expected one run-*.wandb file in {run_dir}, found {found}")
    return logs[0]


def _fold_records(records: Iterator[Record]) -> dict[str, Any]:
    """Replay the records into the run's final config and summary, and its history rows."""
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    declared: dict[str, list[str]] = {}
    saw_summary = False
    run: dict[str, Any] = {"exit_code": None}
    artifacts: list[dict[str, Any]] = []
    console: list[str] = []
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.update(
                id=r.run_id,
                name=r.display_name,
                project=r.project,
                group=r.run_group or None,
                job_type=r.job_type or None,
                tags=list(r.tags),
            )
            _apply(config, r.config.update, ())
        elif kind == "config":
            _apply(config, record.config.update, record.config.remove)
        elif kind == "summary":
            saw_summary = True
            _apply(summary, record.summary.update, record.summary.remove)
        elif kind == "history":
            history.append(
                {".".join(_path(item)): _history_value(item) for item in record.history.item}
            )
        elif kind == "metric" and record.metric.name:
            options = record.metric.summary
            wanted = [f for f in ("min", "max", "mean", "first", "last") if getattr(options, f)]
            if wanted:
                declared[record.metric.name] = wanted
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
        elif kind == "artifact":
            a = record.artifact
            artifacts.append(
                {
                    "name": a.name,
                    "type": a.type,
                    "aliases": list(a.aliases),
                    "metadata": json.loads(a.metadata) if a.metadata else {},
                    "files": [entry.path for entry in a.manifest.contents],
                }
            )
        elif kind in ("output_raw", "output"):
            console.append(getattr(record, kind).line)
    if not saw_summary:
        summary = _summary_from_history(history, declared)
    charts = dict(config.get("_wandb", {}).get("visualize", {}))
    for mapping in (config, summary):
        mapping.pop("_wandb", None)
    return {
        "summary": summary,
        "history": history,
        "config": config,
        "run": run,
        "artifacts": artifacts,
        "console": "".join(console),
        "charts": charts,
    }


def logged_tables(run_dir: Path, key: str) -> list[tuple[int | None, pd.DataFrame]]:
    """Every ``wandb.Table`` logged under ``key``, with the ``trainer/global_step`` of its row,
    read back from the run's ``files/`` folder.

    Raises:
        ValueError: a row holds ``key`` as something other than a table.
    """
    folder = _find_log(Path(run_dir)).parent
    tables = []
    for row in read_offline_run(run_dir)["history"]:
        value = {
            name.removeprefix(f"{key}."): v for name, v in row.items() if name.startswith(f"{key}.")
        }
        if not value:
            continue
        if value.get("_type") != "table-file":
            raise ValueError(f"{key} at step {row.get('_step')} is not a table: {value}")
        table = json.loads((folder / "files" / value["path"]).read_text())
        step = row.get("trainer/global_step")
        frame = pd.DataFrame(table["data"], columns=table["columns"])
        tables.append((None if step is None else int(step), frame))
    return tables


def _path(item: Any) -> list[str]:
    return list(item.nested_key) or [item.key]


def _apply(target: dict[str, Any], updates: Any, removals: Any) -> None:
    """Apply config or summary items (a key, or a nested key path, and a JSON value)."""
    for item in updates:
        _set_path(target, _path(item), json.loads(item.value_json))
    for item in removals:
        *parents, leaf = _path(item)
        node: Any = target
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)


def _set_path(target: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    target[path[-1]] = value


def _history_value(item: Any) -> Any:
    """A history value: typed (newer wandb) or JSON text (``value_json``)."""
    case = item.WhichOneof("value")
    if case is None:
        return json.loads(item.value_json) if item.value_json else None
    if case == "none":
        return None
    if case == "json":
        return json.loads(item.json)
    return getattr(item, case)


def _summary_from_history(
    history: list[dict[str, Any]], declared: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """What wandb's summary would hold: last values, or the declared aggregates."""
    summary: dict[str, Any] = {}
    for row in history:
        summary.update(row)
    for name, aggregates in declared.items():
        values = [row[name] for row in history if isinstance(row.get(name), int | float)]
        if not values:
            continue
        computed = {
            "min": min(values),
            "max": max(values),
            "mean": sum(values) / len(values),
            "first": values[0],
            "last": values[-1],
        }
        summary[name] = {aggregate: computed[aggregate] for aggregate in aggregates}
    return summary
