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
    slurm:                                        # each worker's job, for --launcher slurm
      partition: gpu                              # default: the cluster's default partition
      time: "12:00:00"                            # per job (minutes, or [D-]HH:MM[:SS]); 240
      gpus: 1                                     # GPUs per worker (0)
      cpus: 8                                     # CPUs per worker (1)
      mem: 32G                                    # per worker (an integer is GB); partition's
      account: my-lab                             # optional, like the two below
      setup: [module load cuda/12.4]              # shell lines run before the worker starts
      options: {qos: normal}                      # any other sbatch option

Pruning is Optuna's median pruner fed by :class:`~hydralab.sweeps.trial_report.ReportToTrial`,
which reports the objective metric at every validation (pruning or not, so the dashboard's
curves are live) with the optimiser step as its step: ``n_warmup_steps`` counts steps.
``heartbeat`` applies to database storages (see :mod:`hydralab.sweeps.study`). ``slurm`` is
read only by the SLURM launcher (:mod:`hydralab.sweeps.slurm`) and is not part of the study's
definition: a study started on one machine can be resumed on a cluster.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hydralab.data.sets import SetSpec
from hydralab.sweeps.schema import Choices, Range, Slurm, SweepFile
from hydralab.sweeps.validation import SweepSpecError, read_yaml, validate

__all__ = ["Dimension", "SweepSpec", "SweepSpecError", "load_spec", "parse_spec"]

Scalar = str | int | float | bool | None
SWEEP_DEFAULTS: dict[str, Any] = {"trainer.enable_progress_bar": False}
"""Overrides every trial gets unless the sweep file says otherwise (a sweep's log is its own)."""


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

    @classmethod
    def of(cls, key: str, dim: Choices | Range) -> Dimension:
        """The checked form of a sweep file's entry (:mod:`.schema`)."""
        if isinstance(dim, Choices):
            return cls(key, choices=tuple(dim.choices))
        return cls(key, low=dim.low, high=dim.high, log=dim.log, step=dim.step, integer=dim.integer)

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
    slurm: Slurm = field(default_factory=Slurm)
    """Each SLURM job's resources (the file's ``slurm`` block, else the defaults)."""
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
            if key not in SetSpec.fixed_for(self.method_of(params)):
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
        values.update(SetSpec.fixed_for(self.method_of(params)))  # the baseline's k=1, p=0
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
        slurm: Mapping[str, Any] | None = None,
    ) -> SweepSpec:
        """The same sweep with command-line changes, validated like the file's own values
        (``slurm``: keys of the ``slurm`` block, e.g. ``{"partition": "gpu"}``)."""
        raw = copy.deepcopy(self.raw)
        if slurm:
            raw["slurm"] = {**(raw.get("slurm") or {}), **slurm}
        if study is not None:
            raw["study"] = study
        if n_trials is not None:
            raw["n_trials"] = n_trials
        if overrides:
            raw["overrides"] = {**(raw.get("overrides") or {}), **overrides}
        return parse_spec(raw, self.path)


# ------------------------------------------------------------------------------------------------
# Loading


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file.

    Raises:
        SweepSpecError: the file is missing or not YAML (or has a tag that would build a
            Python object), or a key is unknown, missing or has a value of the wrong kind; the
            message names the file and the key.
    """
    path = Path(path)
    if not path.is_file():
        raise SweepSpecError(f"sweep file {path} does not exist")
    return parse_spec(read_yaml(path), path)


def parse_spec(raw: Any, path: Path) -> SweepSpec:
    """Validate the parsed YAML of a sweep file (see :func:`load_spec` and :mod:`.schema`)."""
    file = validate(SweepFile, raw, path)
    return SweepSpec(
        path=path,
        base_config=file.base_path(path),
        study=file.study,
        space={key: Dimension.of(key, dim) for key, dim in file.space.items()},
        overrides=dict(file.overrides),
        sampler=file.sampler.name,
        sampler_seed=file.sampler.seed,
        n_trials=file.n_trials,
        metric=file.objective.metric,
        direction=file.objective.direction or "maximize",
        pruning=file.pruning.enabled,
        pruning_startup_trials=file.pruning.n_startup_trials,
        pruning_warmup_steps=file.pruning.n_warmup_steps,
        heartbeat_interval=file.heartbeat.interval,
        grace_period=file.heartbeat.grace_period,
        max_retry=file.heartbeat.max_retry,
        tags=tuple(file.tags),
        base_method=file.base_method,
        slurm=file.slurm or Slurm(),
        raw=raw,
    )


def _plain(value: Any) -> Any:
    """YAML-loaded values as JSON-storable data (tuples become lists)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
