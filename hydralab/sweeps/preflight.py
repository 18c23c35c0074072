"""A sweep checked before its first trial: every config its trials would train, validated by the
Lightning CLI without training.

A mistake in a sweep (an unknown key in ``space``, a value of the wrong type, a ``--set`` key the
CLI does not know, a dataset not made yet) would otherwise fail every trial one by one, after
the study was created. :func:`check_sweep` builds each trial's full command line as the
objective does (:meth:`~.spec.SweepSpec.trial_overrides` and :func:`~.objective.cli_args`) and
hands it to :func:`hydralab.training.runner.check_config`, which parses it, builds the model and
the data module and reads the dataset table: no trainer, no run folder, no W&B run.

Which points: a grid's queued points; for a sampler (TPE), each categorical choice and both ends
of each range, the other keys at their first value. Points that differ only in their seed give
one config, checked once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna

from hydralab.data.sets import SetSpec
from hydralab.sweeps.spec import Dimension, Scalar, SweepSpec, SweepSpecError
from hydralab.sweeps.storage import journal_path, open_storage, sqlite_path
from hydralab.sweeps.trials import count_trials

BUILT_IN_DATA = re.compile(r"(\S*\bdata/(blobs|lesions|pvs|wmh))/dataset\.csv")
"""A dataset path of the built-in tasks, which ``hydralab make-data TASK data/TASK`` writes."""
MAKE_DATA_OPTIONS = {"pvs": " --size 24", "wmh": " --size 24"}
"""``make-data`` options the shipped configs of a task need (their crop takes 24^3 scans)."""


def needs_check(spec: SweepSpec, url: str) -> bool:
    """Whether a sweep has trials left to run: False only for a stored study that is complete,
    which a resume leaves as it is (even if its dataset has moved since). Finding out creates
    nothing: a storage file that does not exist holds no study."""
    path = journal_path(url) or sqlite_path(url)
    if path is not None and not path.is_file():
        return True
    try:
        study = optuna.load_study(study_name=spec.study, storage=open_storage(url, spec))
    except KeyError:
        return True
    return count_trials(study, spec.target_trials()).left > 0


def sampler_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """The values a sampler's trials are checked with: each categorical choice and both ends of
    each range, the other keys at their first value (choice or lower bound).

    A key only Hydranet samples (``model.k``, ``model.p``) is varied with a method that samples
    it, so that a baseline default does not hide it.
    """
    defaults = {key: _ends(dim)[0] for key, dim in spec.space.items()}
    methods = spec.space.get("model.method")
    points = []
    for key, dim in spec.space.items():
        for value in _ends(dim):
            point = {**defaults, key: value}
            if key in SetSpec.fixed_for(spec.method_of(point)) and methods is not None:
                takes_it = [m for m in methods.choices or () if key not in SetSpec.fixed_for(m)]
                point["model.method"] = takes_it[0] if takes_it else point["model.method"]
            points.append(spec.sample(lambda dim, point=point: point[dim.key]))
    return points


def _ends(dim: Dimension) -> list[Scalar]:
    if dim.choices is not None:
        return list(dim.choices)
    if dim.integer:
        return [int(dim.low), int(dim.high)]  # type: ignore[arg-type]
    return [dim.low, dim.high]


def trial_configs(
    spec: SweepSpec, sweep_dir: Path, points: Sequence[dict[str, Any]]
) -> list[tuple[dict[str, Any], list[str]]]:
    """(point, ``hydralab fit`` arguments) of each distinct config the points train.

    Built as :class:`~.objective.SweepObjective` builds a trial's, numbered 0: the trial number
    only names the run folder, which nothing here creates. A point without its own seed takes
    the sweep's, else 0 (a trial takes its number); seeds are ints the schema has checked, so
    points that differ only there are one config.
    """
    from hydralab.sweeps.objective import cli_args

    fixed_seed = spec.overrides.get("seed")
    configs: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for point in points:
        overrides = spec.trial_overrides(point, fixed_seed if fixed_seed is not None else 0)
        args = cli_args(spec, overrides, sweep_dir, 0)
        unseeded = {key: value for key, value in point.items() if key != "seed"}
        configs.setdefault(json.dumps(unseeded, sort_keys=True, default=str), (point, args))
    return list(configs.values())


def check_sweep(spec: SweepSpec, sweep_dir: Path, points: Sequence[dict[str, Any]]) -> int:
    """Validate the config of every point (see the module's docstring); return how many
    distinct configs were checked.

    Raises:
        SweepSpecError: a config the CLI, the model or the data module refuses, naming the
            sweep file, the point (``key=value, ...``) and the refusal; for a missing built-in
            dataset, how to make it.
    """
    from hydralab.training.runner import check_config, quiet_environment

    quiet_environment()
    configs = trial_configs(spec, Path(sweep_dir), points)
    for point, args in configs:
        try:
            check_config(args)
        except Exception as error:  # whatever refused it, the sweep cannot run
            raise SweepSpecError(f"{spec.path}: {_where(point)}: {_why(error)}") from None
    return len(configs)


def _where(point: dict[str, Any]) -> str:
    shown = [f"{key}={value}" for key, value in point.items() if key != "seed"]
    return f"space point {', '.join(shown)}" if shown else "the trials' config"


def _why(error: Exception) -> str:
    text = " ".join(str(error).split())
    if not isinstance(error, ValueError):  # not a refusal the code words for a user
        text = f"{type(error).__name__}: {text}"
    found = BUILT_IN_DATA.search(text)
    if found and "not found" in text:
        folder, task = found.groups()
        command = f"hydralab make-data {task} {folder}{MAKE_DATA_OPTIONS.get(task, '')}"
        text += f" (the built-in {task} data: run `{command}` first)"
    return text
