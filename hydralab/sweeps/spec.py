"""The sweep file: which config to start from, what to vary, how to search and what to optimise.

A sweep file is YAML; paths in it are relative to the file itself::

    base_config: ../configs/blobs/hydranet.yaml   # the Lightning config every trial starts from
    study: learning-curve-blobs                   # Optuna study name (and the output folder's)
    overrides: {trainer.max_steps: 600}           # fixed config keys, the same for every trial
    space:                                        # what the sampler varies
      model.method: [baseline, hydranet]          # a list: categorical choices
      data.n_train: {choices: [12, 16, 20]}       # the same, spelled out
      model.k: {low: 2, high: 8}                  # int range (both bounds ints), `step` optional
      model.lr: {low: 1.0e-3, high: 1.0, log: true}   # float range, log scale optional
      seed: [0, 1, 2]                             # sets seed_everything and data.seed
      data.subset_seed: [0, 1]                    # which data.n_train scans (0 if not swept)
    sampler: grid                                 # grid | tpe, or {name: tpe, seed: 0}
    n_trials: 40                                  # required for tpe; a grid runs every point
    objective: {metric: val/icc_c1, direction: maximize}
    pruning: {enabled: false, n_startup_trials: 5, n_warmup_steps: 10}   # steps = epochs
    heartbeat: {interval: 60, grace_period: 120, max_retry: 3}
    tags: [learning-curve]                        # W&B tags of every trial

Pruning is Optuna's median pruner fed by optuna-integration's Lightning callback, which reports
the objective metric at each validation with the epoch as its step. ``heartbeat`` applies to
database storages (see :mod:`hydralab.sweeps.study`).

Keys are the dotted keys of the Lightning CLI (``hydralab fit --help``). The rules the model
imposes are applied per trial rather than rejected, so that one space can hold both methods:

- a baseline trial trains with ``k=1`` and ``p=0``: ``model.k`` and ``model.p`` are not sampled
  for it, and in a grid the points that differ only in those keys run once;
- ``data.batch_size`` (given in ``overrides`` or ``space``) is rounded up to a multiple of the
  trial's ``k``, since a batch holds whole sets. A space that samples ``model.k`` must give it.

Each trial has its own seed: the swept ``seed``, else ``overrides.seed`` (one seed for all),
else the trial's number (a retried trial keeps the seed of the trial it replaces). The seed is
the training randomness only (initialisation, sampler, augmentation): it does not choose the
data. ``data.subset_seed`` draws which training scans a ``data.n_train`` uses (the subsets of
one subset seed are nested across N) and ``data.split_seed`` the val/test split of a CSV without
a ``split`` column; both may be fixed in ``overrides`` or swept next to ``seed``, which crosses
training seeds with training subsets while every trial keeps the same test scans.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

Scalar = str | int | float | bool | None
SAMPLERS = ("grid", "tpe")
SECTIONS = ("model", "data", "trainer", "checkpoint", "tracking", "seed_everything")
"""Top-level keys of the Lightning CLI a sweep may set (plus ``seed``)."""

OWNED_KEYS = {
    "tracking.root": "each trial's folder is under the sweep's folder",
    "tracking.name": "each trial is named after its number",
    "tracking.group": "the W&B group is the study name",
    "tracking.tags": "use the sweep file's `tags` (the study and trial are added)",
    "checkpoint.monitor": "the checkpoint follows objective.metric",
    "checkpoint.mode": "the checkpoint follows objective.direction",
    "seed_everything": "use `seed`, which sets seed_everything and data.seed together",
    "data.seed": (
        "use `seed`, which sets seed_everything and data.seed together (data.subset_seed and "
        "data.split_seed choose the training scans and the split)"
    ),
    "data.method": "set model.method; the CLI links it into the data module",
    "data.k": "set model.k; the CLI links it into the data module",
    "data.p": "set model.p; the CLI links it into the data module",
}
"""Keys a sweep sets itself, with the reason a sweep file may not."""

DATA_SEEDS = ("data.subset_seed", "data.split_seed")
"""Seeds of the data (which training scans, which test scans), independent of ``seed``."""

SWEEP_DEFAULTS: dict[str, Any] = {"trainer.enable_progress_bar": False}
"""Overrides every trial gets unless the sweep file says otherwise (a sweep's log is its own)."""

MINIMIZED = ("mse", "mae", "loss")
MAXIMIZED = ("icc", "pearson")


class SweepSpecError(ValueError):
    """A sweep file that cannot run; the message names the file and the key."""


@dataclass(frozen=True)
class Dimension:
    """One swept key: categorical ``choices`` or an int/float range."""

    key: str
    choices: tuple[Scalar, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False

    def suggest(self, trial: Any) -> Any:
        """Ask an Optuna trial for this key's value."""
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.integer:
            step = int(self.step or 1)
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), step=step, log=self.log
            )
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def grid_values(self) -> list[Scalar]:
        """Every value a grid visits (choices, or each step of an int range)."""
        if self.choices is not None:
            return list(self.choices)
        return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))

    def describe(self) -> Any:
        """A plain-data form, stored with the study to recognise the same sweep on resume."""
        if self.choices is not None:
            return list(self.choices)
        out: dict[str, Any] = {"low": self.low, "high": self.high, "log": self.log}
        out.update(step=self.step, type="int" if self.integer else "float")
        return out


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file; build it with :func:`load_spec`."""

    path: Path
    base_config: Path
    study: str
    space: dict[str, Dimension]
    overrides: dict[str, Any] = field(default_factory=dict)
    sampler: Literal["grid", "tpe"] = "grid"
    sampler_seed: int | None = None
    n_trials: int | None = None
    metric: str = "val/icc_c1"
    direction: Literal["maximize", "minimize"] = "maximize"
    pruning: bool = False
    pruning_startup_trials: int = 5
    pruning_warmup_steps: int = 0
    heartbeat_interval: int = 60
    grace_period: int | None = None
    max_retry: int | None = 3
    tags: tuple[str, ...] = ()
    base_method: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The file's YAML as read, for :meth:`with_changes` and :meth:`fingerprint`."""

    # -- per trial ----------------------------------------------------------------------------

    def method_of(self, params: Mapping[str, Any]) -> str | None:
        """The trial's method: sampled, fixed in overrides, or the base config's."""
        for source in (params, self.overrides):
            if "model.method" in source:
                return source["model.method"]
        return self.base_method

    def sample(self, value_of: Callable[[Dimension], Any]) -> dict[str, Any]:
        """One trial's values of the swept keys, asking ``value_of`` for each.

        ``model.method`` is asked first, and a baseline trial is never asked ``model.k`` or
        ``model.p`` (a conditional space: TPE learns those from Hydranet trials only, and two
        grid points that differ only there train the same baseline).
        """
        params: dict[str, Any] = {}
        for key in sorted(self.space, key=lambda key: key != "model.method"):
            if key in ("model.k", "model.p") and self.method_of(params) == "baseline":
                continue
            params[key] = value_of(self.space[key])
        return params

    def trial_overrides(self, params: Mapping[str, Any], seed: int) -> dict[str, Any]:
        """The config keys one trial sets on top of ``base_config``, in the order to apply them.

        Fixed overrides come before sampled values, so a class path in ``overrides`` (e.g.
        ``model.regressor``) precedes the ``init_args`` a space samples.
        """
        values: dict[str, Any] = {**SWEEP_DEFAULTS, **self.overrides, **params}
        values.pop("seed", None)
        values["seed_everything"] = values["data.seed"] = seed
        if self.method_of(params) == "baseline":
            values["model.k"], values["model.p"] = 1, 0.0
        k = values.get("model.k")
        if isinstance(k, int) and isinstance(values.get("data.batch_size"), int):
            values["data.batch_size"] = k * math.ceil(values["data.batch_size"] / k)
        values["checkpoint.monitor"] = self.metric
        values["checkpoint.mode"] = "max" if self.direction == "maximize" else "min"
        return values

    # -- the whole sweep ----------------------------------------------------------------------

    def grid_space(self) -> dict[str, list[Scalar]]:
        """The grid sampler's search space: every swept key with all its values."""
        return {key: dim.grid_values() for key, dim in self.space.items()}

    def grid_point_key(self, point: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
        """What makes two grid points the same run: the values a trial would sample."""
        return tuple(sorted(self.sample(lambda dim: point[dim.key]).items()))

    def grid(self) -> list[dict[str, Any]]:
        """The distinct grid points (a baseline point once, whatever the swept k and p)."""
        space = self.grid_space()
        seen: dict[tuple[tuple[str, Any], ...], dict[str, Any]] = {}
        for values in itertools.product(*space.values()):
            point = dict(zip(space, values, strict=True))
            seen.setdefault(self.grid_point_key(point), point)
        return list(seen.values())

    def target_trials(self) -> int:
        """How many finished trials make the sweep complete."""
        if self.sampler == "grid":
            size = len(self.grid())
            return size if self.n_trials is None else min(self.n_trials, size)
        assert self.n_trials is not None
        return self.n_trials

    def fingerprint(self) -> dict[str, Any]:
        """What defines the study's trials; a resumed study must match it."""
        return {
            "base_config": self.raw.get("base_config", str(self.base_config)),
            "overrides": {key: _plain(value) for key, value in self.overrides.items()},
            "space": {key: dim.describe() for key, dim in self.space.items()},
            "sampler": self.sampler,
            "objective": {"metric": self.metric, "direction": self.direction},
        }

    def with_changes(
        self,
        study: str | None = None,
        n_trials: int | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> SweepSpec:
        """The same sweep with command-line changes, validated like the file's own values."""
        raw = copy.deepcopy(self.raw)
        if study is not None:
            raw["study"] = study
        if n_trials is not None:
            raw["n_trials"] = n_trials
        if overrides:
            raw["overrides"] = {**(raw.get("overrides") or {}), **overrides}
        return parse_spec(raw, self.path)


# ------------------------------------------------------------------------------------------------
# Loading and validation


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file.

    Raises:
        SweepSpecError: the file is missing or not YAML, or a key is unknown, missing or has a
            value of the wrong kind; the message names the file and the key.
    """
    path = Path(path)
    if not path.is_file():
        raise SweepSpecError(f"sweep file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SweepSpecError(f"{path}: not valid YAML: {error}") from error
    return parse_spec(raw, path)


TOP_KEYS = (
    "base_config",
    "study",
    "overrides",
    "space",
    "sampler",
    "n_trials",
    "objective",
    "pruning",
    "heartbeat",
    "tags",
)


def parse_spec(raw: Any, path: Path) -> SweepSpec:
    """Validate the parsed YAML of a sweep file (see :func:`load_spec`)."""
    check = _Checker(path)
    if not isinstance(raw, dict):
        check.fail("", f"expected a mapping with keys {', '.join(TOP_KEYS)}")
    check.known("", raw, TOP_KEYS)
    base = check.required(raw, "base_config", str)
    base_config = (path.parent / base).resolve()
    if not base_config.is_file():
        check.fail("base_config", f"{base_config} does not exist")
    study = check.required(raw, "study", str)
    if not study or "/" in study or study.startswith("."):
        check.fail("study", f"{study!r} must be a plain name (it names the output folder)")

    overrides = check.mapping(raw, "overrides")
    for key in overrides:
        if key == "seed":
            if not _is_int(overrides[key]):
                check.fail("overrides.seed", f"must be an integer, got {overrides[key]!r}")
            continue
        check.config_key(f"overrides.{key}", key)
        if key in DATA_SEEDS and not (_is_int(overrides[key]) and overrides[key] >= 0):
            check.fail(f"overrides.{key}", f"must be an integer >= 0, got {overrides[key]!r}")
    space = {
        key: _dimension(check, key, value) for key, value in check.mapping(raw, "space").items()
    }
    if not space:
        check.fail("space", "is empty: name at least one key to vary")
    for key in set(space) & set(overrides):
        check.fail(f"space.{key}", "is also fixed in overrides; keep it in one of the two")

    sampler, sampler_seed = _sampler(check, raw.get("sampler", "grid"))
    n_trials = raw.get("n_trials")
    if n_trials is not None and (not _is_int(n_trials) or n_trials < 1):
        check.fail("n_trials", f"must be a positive integer, got {n_trials!r}")
    if sampler == "tpe" and n_trials is None:
        check.fail("n_trials", "is required with sampler tpe (a grid runs each point once)")
    if sampler == "grid":
        for key, dim in space.items():
            if dim.choices is None and not dim.integer:
                check.fail(f"space.{key}", "a grid needs a list of values or an int range")

    metric, direction = _objective(check, check.mapping(raw, "objective"))
    pruning = check.mapping(raw, "pruning")
    check.known("pruning", pruning, ("enabled", "n_startup_trials", "n_warmup_steps"))
    heartbeat = check.mapping(raw, "heartbeat")
    check.known("heartbeat", heartbeat, ("interval", "grace_period", "max_retry"))
    tags = raw.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        check.fail("tags", f"must be a list of strings, got {tags!r}")

    spec = SweepSpec(
        path=path,
        base_config=base_config,
        study=study,
        space=space,
        overrides=dict(overrides),
        sampler=sampler,
        sampler_seed=sampler_seed,
        n_trials=n_trials,
        metric=metric,
        direction=direction,
        pruning=check.typed(pruning, "pruning.enabled", "enabled", bool, False),
        pruning_startup_trials=check.count("pruning", pruning, "n_startup_trials", 5, minimum=0),
        pruning_warmup_steps=check.count("pruning", pruning, "n_warmup_steps", 0, minimum=0),
        heartbeat_interval=check.count("heartbeat", heartbeat, "interval", 60, minimum=1),
        grace_period=check.count("heartbeat", heartbeat, "grace_period", None, minimum=1),
        max_retry=check.count("heartbeat", heartbeat, "max_retry", 3, minimum=0),
        tags=tuple(tags),
        base_method=_base_value(base_config, "model", "method"),
        raw=raw,
    )
    _check_sets(check, spec)
    return spec


def _check_sets(check: _Checker, spec: SweepSpec) -> None:
    """A sampled k needs a batch size to round; a fixed baseline cannot sample k or p."""
    swept = set(spec.space)
    if "model.k" in swept and not ({"data.batch_size"} & (swept | set(spec.overrides))):
        check.fail(
            "space.model.k",
            "set data.batch_size in overrides too (each trial rounds it up to a multiple of k)",
        )
    if "model.method" not in swept and spec.method_of({}) == "baseline":
        for key in ("model.k", "model.p"):
            if key in swept:
                check.fail(f"space.{key}", "the baseline trains with k=1, p=0; sweep model.method")
    method = spec.space.get("model.method")
    if method is not None and (
        method.choices is None or not set(method.choices) <= {"baseline", "hydranet"}
    ):
        check.fail("space.model.method", "choices must be among baseline, hydranet")


def _dimension(check: _Checker, key: str, value: Any) -> Dimension:
    where = f"space.{key}"
    if key != "seed":
        check.config_key(where, key)
    if isinstance(value, list):
        value = {"choices": value}
    if not isinstance(value, dict):
        check.fail(where, f"expected a list of values or {{low, high}}, got {value!r}")
    if "choices" in value:
        check.known(where, value, ("choices",))
        choices = value["choices"]
        if not isinstance(choices, list) or not choices:
            check.fail(f"{where}.choices", "must be a non-empty list")
        for choice in choices:
            if choice is not None and not isinstance(choice, str | int | float | bool):
                check.fail(f"{where}.choices", f"{choice!r} is not a number, string or bool")
        if len(set(map(repr, choices))) != len(choices):
            check.fail(f"{where}.choices", f"has repeated values: {choices}")
        if key == "seed" and not all(_is_int(c) for c in choices):
            check.fail(f"{where}.choices", "seeds must be integers")
        if key in DATA_SEEDS and not all(_is_int(c) and c >= 0 for c in choices):
            check.fail(f"{where}.choices", "seeds must be integers >= 0")
        return Dimension(key, choices=tuple(choices))
    check.known(where, value, ("low", "high", "log", "step", "type"))
    low, high, step = (_number(value.get(name)) for name in ("low", "high", "step"))
    for name, bound in (("low", low), ("high", high)):
        if isinstance(bound, bool) or not isinstance(bound, int | float):
            check.fail(f"{where}.{name}", f"must be a number, got {value.get(name)!r}")
    kind = value.get("type", "int" if _is_int(low) and _is_int(high) else "float")
    if kind not in ("int", "float"):
        check.fail(f"{where}.type", f"must be int or float, got {kind!r}")
    log = value.get("log", False)
    if not isinstance(log, bool):
        check.fail(f"{where}.log", f"must be true or false, got {log!r}")
    if not low < high:
        check.fail(where, f"low ({low}) must be below high ({high})")
    if log and low <= 0:
        check.fail(f"{where}.low", f"a log range needs low > 0, got {low}")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int | float)):
        check.fail(f"{where}.step", f"must be a number, got {step!r}")
    if step is not None and (step <= 0 or log):
        check.fail(f"{where}.step", "must be positive, and cannot go with log: true")
    if kind == "int" and not (_is_int(low) and _is_int(high) and (step is None or _is_int(step))):
        check.fail(where, "an int range needs integer low, high and step")
    if key in ("seed", *DATA_SEEDS) and kind != "int":
        check.fail(where, "seeds must be integers")
    if key in DATA_SEEDS and low < 0:
        check.fail(f"{where}.low", f"seeds must be integers >= 0, got {low}")
    return Dimension(key, low=low, high=high, log=log, step=step, integer=kind == "int")


def _sampler(check: _Checker, value: Any) -> tuple[Literal["grid", "tpe"], int | None]:
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        check.fail("sampler", f"expected grid, tpe or {{name: tpe, seed: 0}}, got {value!r}")
    check.known("sampler", value, ("name", "seed"))
    name = value.get("name")
    if name not in SAMPLERS:
        check.fail("sampler.name", f"must be one of {', '.join(SAMPLERS)}, got {name!r}")
    seed = value.get("seed")
    if seed is not None and not _is_int(seed):
        check.fail("sampler.seed", f"must be an integer, got {seed!r}")
    return name, seed


def _objective(check: _Checker, objective: dict[str, Any]) -> tuple[str, Any]:
    check.known("objective", objective, ("metric", "direction"))
    metric = objective.get("metric", "val/icc_c1")
    if not isinstance(metric, str) or not metric.startswith("val/"):
        check.fail(
            "objective.metric",
            f"must be a validation metric such as val/icc_c1 or val/mse, got {metric!r} "
            "(the test split stays untouched by the search)",
        )
    direction = objective.get("direction")
    if direction is None:
        name = metric.removeprefix("val/")
        if name.startswith(MAXIMIZED):
            direction = "maximize"
        elif name.startswith(MINIMIZED):
            direction = "minimize"
        else:
            check.fail("objective.direction", f"cannot tell for {metric}: maximize or minimize")
    if direction not in ("maximize", "minimize"):
        check.fail("objective.direction", f"must be maximize or minimize, got {direction!r}")
    return metric, direction


class _Checker:
    """Raises :class:`SweepSpecError` naming the file and the offending key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, message: str) -> Any:
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        raise SweepSpecError(where + message)

    def known(self, where: str, mapping: Mapping[str, Any], allowed: Iterable[str]) -> None:
        allowed = tuple(allowed)
        for key in mapping:
            if key not in allowed:
                name = f"{where}.{key}" if where else str(key)
                self.fail(name, f"unknown key; expected one of {', '.join(allowed)}")

    def required(self, raw: Mapping[str, Any], key: str, kind: type) -> Any:
        if key not in raw:
            self.fail(key, "is required")
        if not isinstance(raw[key], kind):
            self.fail(key, f"must be a {kind.__name__}, got {raw[key]!r}")
        return raw[key]

    def mapping(self, raw: Mapping[str, Any], key: str) -> dict[str, Any]:
        value = raw.get(key) or {}
        if not isinstance(value, dict):
            self.fail(key, f"must be a mapping, got {value!r}")
        return value

    def typed(self, raw: Mapping[str, Any], where: str, key: str, kind: type, default: Any) -> Any:
        value = raw.get(key, default)
        if not isinstance(value, kind):
            self.fail(where, f"must be a {kind.__name__}, got {value!r}")
        return value

    def count(
        self, section: str, raw: Mapping[str, Any], key: str, default: Any, minimum: int
    ) -> Any:
        value = raw.get(key)
        if value is None:
            return default
        if not _is_int(value) or value < minimum:
            self.fail(f"{section}.{key}", f"must be an integer >= {minimum}, got {value!r}")
        return value

    def config_key(self, where: str, key: Any) -> None:
        if not isinstance(key, str) or key.split(".", 1)[0] not in SECTIONS:
            self.fail(where, f"not a config key; keys start with one of {', '.join(SECTIONS)}")
        if key in OWNED_KEYS:
            self.fail(where, f"is set by the sweep: {OWNED_KEYS[key]}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` (no dot) as text; take it as the number the user meant."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _plain(value: Any) -> Any:
    """YAML-loaded values as JSON-storable data (tuples become lists)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _base_value(config: Path, section: str, key: str) -> Any:
    """A value written inline in the base config (e.g. ``model.method``), or ``None``.

    Only the file itself is read: a value coming from a nested config file or a default stays
    ``None``, and the trial then keeps whatever the Lightning CLI resolves.
    """
    try:
        raw = yaml.safe_load(config.read_text())
    except yaml.YAMLError as error:
        raise SweepSpecError(f"{config}: not valid YAML: {error}") from error
    block = raw.get(section) if isinstance(raw, dict) else None
    return block.get(key) if isinstance(block, dict) else None
