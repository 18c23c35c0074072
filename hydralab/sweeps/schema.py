"""The sweep file's schema: which keys each section takes, their types, and the file's rules.

pydantic checks the types (:class:`SweepFile` and its sections); the validators below add what
a type cannot say (config keys a sweep owns, seeds, sets). :func:`.validation.validate` reports
the first problem naming the file and the key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    PrivateAttr,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hydralab.data.sets import HYDRANET_ONLY, METHODS, SetSpec
from hydralab.sweeps.validation import Problem, Section, explain, read_yaml, says

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

MINIMIZED = ("mse", "mae", "loss")
MAXIMIZED = ("icc", "pearson")


def _number(value: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` (no dot) as text; take it as the number the user meant."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


Number = Annotated[StrictInt | StrictFloat, BeforeValidator(_number)]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Choices(Section):
    """A categorical dimension: ``[a, b]`` or ``{choices: [a, b]}``."""

    choices: list[Any] = says("a non-empty list", min_length=1)

    @model_validator(mode="after")
    def _scalars(self) -> Choices:
        for choice in self.choices:
            if choice is not None and not isinstance(choice, str | int | float | bool):
                raise Problem(f"{choice!r} is not a number, string or bool", "choices")
        if len(set(map(repr, self.choices))) != len(self.choices):
            raise Problem(f"has repeated values: {self.choices}", "choices")
        return self


class Range(Section):
    """An int or float range; its type follows the bounds unless ``type`` says."""

    low: Number = says("a number")
    high: Number = says("a number")
    log: StrictBool = says("true or false", False)
    step: Number | None = says("a number", None)
    type: Literal["int", "float"] | None = says("int or float", None)

    @property
    def integer(self) -> bool:
        return self.type == "int"

    @model_validator(mode="after")
    def _bounds(self) -> Range:
        low, high, step = self.low, self.high, self.step
        if self.type is None:
            self.type = "int" if _is_int(low) and _is_int(high) else "float"
        if not low < high:
            raise Problem(f"low ({low}) must be below high ({high})")
        if self.log and low <= 0:
            raise Problem(f"a log range needs low > 0, got {low}", "low")
        if step is not None and (step <= 0 or self.log):
            raise Problem("must be positive, and cannot go with log: true", "step")
        if self.integer and not (
            _is_int(low) and _is_int(high) and (step is None or _is_int(step))
        ):
            raise Problem("an int range needs integer low, high and step")
        return self


class Sampler(Section):
    name: Literal["grid", "tpe"] = says("one of grid, tpe", "grid")
    seed: StrictInt | None = says("an integer", None)


class Objective(Section):
    metric: StrictStr = says("a string", "val/icc_c1")
    direction: Literal["maximize", "minimize"] | None = says("maximize or minimize", None)

    @model_validator(mode="after")
    def _direction(self) -> Objective:
        if not self.metric.startswith("val/"):
            raise Problem(
                f"must be a validation metric such as val/icc_c1 or val/mse, got {self.metric!r} "
                "(the test split stays untouched by the search)",
                "metric",
            )
        name = self.metric.removeprefix("val/")
        if self.direction is None and name.startswith(MAXIMIZED):
            self.direction = "maximize"
        elif self.direction is None and name.startswith(MINIMIZED):
            self.direction = "minimize"
        elif self.direction is None:
            raise Problem(f"cannot tell for {self.metric}: maximize or minimize", "direction")
        return self


class Pruning(Section):
    enabled: StrictBool = says("true or false", False)
    n_startup_trials: StrictInt = says("an integer >= 0", 5, ge=0)
    n_warmup_steps: StrictInt = says("an integer >= 0", 0, ge=0)


class Heartbeat(Section):
    interval: StrictInt = says("an integer >= 1", 60, ge=1)
    grace_period: StrictInt | None = says("an integer >= 1", None, ge=1)
    max_retry: StrictInt = says("an integer >= 0", 3, ge=0)


SLURM_TIME = re.compile(r"^(?:(\d+)-)?(\d+):(\d{2})(?::(\d{2}))?$")
"""SLURM's ``[days-]hours:minutes[:seconds]`` time limit."""
MEMORY = re.compile(r"^\d+[KMGT]$")
"""SLURM's memory with a unit: ``16G``, ``500M``."""


class Slurm(Section):
    """Resources of each SLURM job (one sweep worker), for ``hydralab sweep --launcher slurm``.

    Only the job's shape: where the study lives is the sweep's storage, and how many jobs run
    is ``--workers``. ``time`` is per job; a job that reaches it is requeued (see
    :mod:`hydralab.sweeps.slurm`), so it may be shorter than the sweep.
    """

    partition: StrictStr | None = says("a partition name", None)
    account: StrictStr | None = says("an account name", None)
    time: StrictInt | StrictStr = says("minutes, or [days-]hours:minutes[:seconds]", 240)
    gpus: StrictInt = says("an integer >= 0 (GPUs per worker)", 0, ge=0)
    cpus: StrictInt = says("an integer >= 1 (CPUs per worker)", 1, ge=1)
    mem: StrictInt | StrictStr | None = says("GB as an integer, or a size such as 16G", None)
    setup: list[StrictStr] = says("a list of shell lines", [])
    options: dict[StrictStr, StrictStr | StrictInt | None] = says(
        "a mapping of sbatch options to values (e.g. {qos: high})", {}
    )

    @field_validator("time")
    @classmethod
    def _time(cls, value: int | str) -> int | str:
        minutes = value if isinstance(value, int) else _slurm_minutes(value)
        if minutes is None or minutes < 1:
            raise Problem(f"must be at least 1 minute, as minutes or D-HH:MM[:SS], got {value!r}")
        return value

    @field_validator("mem")
    @classmethod
    def _memory(cls, value: int | str | None) -> int | str | None:
        too_small = isinstance(value, int) and value < 1
        if too_small or (isinstance(value, str) and not MEMORY.match(value)):
            raise Problem(f"must be GB as an integer >= 1, or a size such as 16G, got {value!r}")
        return value

    @property
    def minutes(self) -> int:
        """The time limit in whole minutes (what submitit takes), at least 1."""
        if isinstance(self.time, int):
            return self.time
        minutes = _slurm_minutes(self.time)
        assert minutes is not None  # checked by the validator
        return minutes

    @property
    def memory(self) -> str | None:
        """The memory as sbatch takes it (``16G``), or None for the partition's default."""
        return f"{self.mem}G" if isinstance(self.mem, int) else self.mem


def _slurm_minutes(text: str) -> int | None:
    """``[D-]HH:MM[:SS]`` in minutes (seconds rounded up), else None."""
    found = SLURM_TIME.match(text.strip())
    if found is None:
        return None
    days, hours, minutes, seconds = (int(part or 0) for part in found.groups())
    return (days * 24 + hours) * 60 + minutes + (1 if seconds else 0)


def _sampler_name(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class SweepFile(Section):
    """The sweep file as written (see :mod:`.spec` for what each key does)."""

    base_config: StrictStr = says("a str")
    study: StrictStr = says("a str")
    overrides: dict[str, Any] = says("a mapping", {})
    space: dict[str, Choices | Range] = says("a mapping", {})
    sampler: Annotated[Sampler, BeforeValidator(_sampler_name)] = says(
        "grid, tpe or {name: tpe, seed: 0}", Sampler()
    )
    n_trials: StrictInt | None = says("a positive integer", None, ge=1)
    objective: Objective = says("a mapping", Objective())
    pruning: Pruning = says("a mapping", Pruning())
    heartbeat: Heartbeat = says("a mapping", Heartbeat())
    slurm: Slurm | None = says("a mapping", None)
    tags: list[StrictStr] = says("a list of strings", [])
    _base_method: str | None = PrivateAttr(None)

    @field_validator("base_config")
    @classmethod
    def _exists(cls, value: str, info: ValidationInfo) -> str:
        if not base_config_path(value, info.context["path"]).is_file():
            raise Problem(f"{base_config_path(value, info.context['path'])} does not exist")
        return value

    @field_validator("study")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not value or "/" in value or value.startswith("."):
            raise Problem(f"{value!r} must be a plain name (it names the output folder)")
        return value

    @field_validator("overrides", mode="before")
    @classmethod
    def _fixed_keys(cls, value: Any) -> Any:
        for key, fixed in value.items() if isinstance(value, dict) else ():
            if key == "seed":
                if not _is_int(fixed):
                    raise Problem(f"must be an integer, got {fixed!r}", "seed")
                continue
            _config_key(key)
            if key in DATA_SEEDS and not (_is_int(fixed) and fixed >= 0):
                raise Problem(f"must be an integer >= 0, got {fixed!r}", key)
        return value

    @field_validator("space", mode="before")
    @classmethod
    def _dimensions(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {key: _dimension(key, dim) for key, dim in value.items()}

    @model_validator(mode="after")
    def _whole_file(self, info: ValidationInfo) -> SweepFile:
        self._base_method = _base_value(self.base_path(info.context["path"]), "model", "method")
        if not self.space:
            raise Problem("is empty: name at least one key to vary", "space")
        for key in sorted(set(self.space) & set(self.overrides)):
            raise Problem("is also fixed in overrides; keep it in one of the two", f"space.{key}")
        if self.sampler.name == "tpe" and self.n_trials is None:
            raise Problem("is required with sampler tpe (a grid runs each point once)", "n_trials")
        for key, dim in self.space.items():
            if self.sampler.name == "grid" and isinstance(dim, Range) and not dim.integer:
                raise Problem("a grid needs a list of values or an int range", f"space.{key}")
        self._check_sets()
        return self

    def _check_sets(self) -> None:
        """A sampled k needs a batch size to round; a fixed baseline cannot sample k or p."""
        swept = set(self.space)
        if "model.k" in swept and not ({"data.batch_size"} & (swept | set(self.overrides))):
            raise Problem(
                "set data.batch_size in overrides too (each trial rounds it up to a multiple of k)",
                "space.model.k",
            )
        fixed = SetSpec.fixed_for(self.overrides.get("model.method", self._base_method))
        for key in HYDRANET_ONLY:
            if "model.method" not in swept and key in swept and key in fixed:
                raise Problem(
                    "the baseline trains with k=1, p=0; sweep model.method", f"space.{key}"
                )
        method = self.space.get("model.method")
        if method is not None and not (
            isinstance(method, Choices) and set(method.choices) <= set(METHODS)
        ):
            raise Problem(f"choices must be among {', '.join(METHODS)}", "space.model.method")

    @property
    def base_method(self) -> str | None:
        """``model.method`` as written in the base config itself (None when not there)."""
        return self._base_method

    def base_path(self, path: Path) -> Path:
        return base_config_path(self.base_config, path)


def base_config_path(base_config: str, path: Path) -> Path:
    """The base config, relative to the sweep file's folder."""
    return (Path(path).parent / base_config).resolve()


def _config_key(key: Any) -> None:
    if not isinstance(key, str) or key.split(".", 1)[0] not in SECTIONS:
        raise Problem(f"not a config key; keys start with one of {', '.join(SECTIONS)}", key)
    if key in OWNED_KEYS:
        raise Problem(f"is set by the sweep: {OWNED_KEYS[key]}", key)


def _dimension(key: Any, value: Any) -> Choices | Range:
    """One swept key's values, checked as a :class:`Choices` or a :class:`Range`."""
    if key != "seed":
        _config_key(key)
    if isinstance(value, list):
        value = {"choices": value}
    if not isinstance(value, dict):
        raise Problem(f"expected a list of values or {{low, high}}, got {value!r}", key)
    model: type[Choices | Range] = Choices if "choices" in value else Range
    try:
        dim = model.model_validate(value)
    except ValidationError as error:
        where, message = explain(model, error)
        raise Problem(message, f"{key}.{where}" if where else key) from None
    seeds = key == "seed" or key in DATA_SEEDS
    at_least = " >= 0" if key in DATA_SEEDS else ""
    if isinstance(dim, Choices) and seeds:
        if not all(_is_int(c) and (key == "seed" or c >= 0) for c in dim.choices):
            raise Problem(f"seeds must be integers{at_least}", f"{key}.choices")
    elif isinstance(dim, Range) and seeds:
        if not dim.integer:
            raise Problem("seeds must be integers", key)
        if key in DATA_SEEDS and dim.low < 0:
            raise Problem(f"seeds must be integers >= 0, got {dim.low}", f"{key}.low")
    return dim


def _base_value(config: Path, section: str, key: str) -> Any:
    """A value written inline in the base config (e.g. ``model.method``), or ``None``.

    Only the file itself is read: a value coming from a nested config file or a default stays
    ``None``, and the trial then keeps whatever the Lightning CLI resolves.
    """
    raw = read_yaml(config)
    block = raw.get(section) if isinstance(raw, dict) else None
    return block.get(key) if isinstance(block, dict) else None
