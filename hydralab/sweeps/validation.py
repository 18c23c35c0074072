"""pydantic's errors as a sweep file's author reads them: the file, the dotted key, and what is
wrong there (``sweep.yaml: heartbeat.interval: must be an integer >= 1, got 0``).

A field says what it must be (:func:`says`); a validator raises :class:`Problem` for a rule a
type cannot express, naming the key below the value it checks.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

M = TypeVar("M", bound=BaseModel)


class SweepSpecError(ValueError):
    """A sweep file that cannot run; the message names the file and the key."""


class Problem(ValueError):
    """A rule a validator checks; ``key`` is where, below the value being validated."""

    def __init__(self, message: str, key: Any = "") -> None:
        super().__init__(message)
        self.key = str(key)


def says(text: str, default: Any = ..., **constraints: Any) -> Any:
    """A field whose type errors read ``must be <text>, got <value>``."""
    return Field(default, description=text, **constraints)


class Section(BaseModel):
    """A mapping of known keys; ``key: null`` means the key's default."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


def validate(model: type[M], raw: Any, path: Path) -> M:
    """``raw`` checked against ``model``; raises :class:`SweepSpecError` naming file and key."""
    try:
        return model.model_validate(raw, context={"path": Path(path)})
    except ValidationError as error:
        for problem in error.errors():  # another file's error (the base config's YAML)
            if isinstance((problem.get("ctx") or {}).get("error"), SweepSpecError):
                raise problem["ctx"]["error"] from None
        where, message = explain(model, error)
        where = f"{where}: " if where else ""
        raise SweepSpecError(f"{path}: {where}{message}") from None


def explain(model: type[BaseModel], error: ValidationError) -> tuple[str, str]:
    """The dotted key of the first error and what is wrong there, in the file's terms."""
    errors = error.errors()
    # a misspelt key explains the key it was meant to be, reported missing
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    names: list[str] = []
    current: type[BaseModel] | None = model
    field: FieldInfo | None = None
    for part in first["loc"]:
        if current is None or part not in current.model_fields:
            break  # a dict key or list index below a field, or a key the section lacks
        field = current.model_fields[part]
        names.append(str(part))
        current = _model_of(field)
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, Problem):
        return ".".join(filter(None, [*names, cause.key])), str(cause)
    if first["type"] == "extra_forbidden":
        allowed = ", ".join(current.model_fields) if current else ""
        names.append(str(first["loc"][-1]))
        return ".".join(names), f"unknown key; expected one of {allowed}"
    if first["type"] == "missing":
        return ".".join(names), "is required"
    if field is None:
        return "", f"expected a mapping with keys {', '.join(model.model_fields)}"
    return ".".join(names), f"must be {field.description}, got {first['input']!r}"


def _model_of(field: FieldInfo) -> type[BaseModel] | None:
    """The section a field holds, also when it is optional (``Slurm | None``)."""
    for kind in (field.annotation, *get_args(field.annotation)):
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return kind
    return None


BASE_60 = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")
"""What YAML 1.1 reads as a base-60 number: ``4:00:00`` would be 14400."""


class SweepLoader(yaml.SafeLoader):
    """The safe loader, reading ``4:00:00`` as the text it means (a SLURM time limit), not as
    YAML 1.1's base-60 number 14400, which YAML 1.2 dropped."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0] and BASE_60.match(value):
            return "tag:yaml.org,2002:str"
        return super().resolve(kind, value, implicit)


def read_yaml(path: Path) -> Any:
    """A YAML file's data, read with the safe loader: a tag that would build a Python object
    (``!!python/object/apply:...``) is refused, naming the file."""
    try:
        loader = SweepLoader(Path(path).read_text())  # what yaml.load does, with our resolver
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as error:
        raise SweepSpecError(f"{path}: not valid YAML: {error}") from error
