"""How an error reaches the user of ``hydralab``: one line that names the culprit.

The command line (:func:`hydralab.cli.main`) prints expected errors (bad input, a fault of the
environment) as ``hydralab: error: MESSAGE`` and exits with 2; this module decides which errors
are expected (:func:`user_error`), words them on one line, masks secrets, and adds the config
file that a rejected Lightning config key came from (:func:`name_config_file`), which
jsonargparse does not say.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SECTIONS = ("model", "data", "trainer", "tracking", "checkpoint", "predictions")
"""The config sections of the Lightning commands, whose dotted keys errors start with."""
YAML_SUFFIXES = (".yaml", ".yml")


def user_error(error: Exception) -> str | None:
    """The one-line message of an expected error (bad input, environment), else None (a bug)."""
    if isinstance(error, ValueError | FloatingPointError | MemoryError):
        # DatasetError, ConfigRejected, RunFolderError name the culprit; a non-finite loss
        # says what to lower.
        return str(error)
    if isinstance(error, OSError):
        # A full disk (CheckpointWriteError), a folder that cannot be written: the message says
        # which file and what failed.
        return describe_os_error(error)
    for module, name, what in (
        ("yaml", "YAMLError", "not valid YAML"),
        ("wandb.errors", "Error", "W&B"),
        # e.g. trainer.accelerator=gpu on a machine without one: a setting, not a bug.
        ("lightning.fabric.utilities.exceptions", "MisconfigurationException", "Lightning"),
        (
            "torch",
            "OutOfMemoryError",
            "out of memory (lower data.batch_size or model.k, or set model.memory_chunk)",
        ),
    ):
        kind = getattr(sys.modules.get(module), name, None)
        if isinstance(kind, type) and isinstance(error, kind):
            return f"{what}: {' '.join(str(error).split())}"
    return None


def mask_secrets(message: str) -> str:
    """Never print the W&B key, whatever a library put in its message."""
    key = os.environ.get("WANDB_API_KEY", "")
    return message.replace(key, "***") if len(key) >= 4 else message


def describe_os_error(error: OSError) -> str:
    """``strerror: filename`` without Python's ``[Errno N]`` prefix, which tells a user nothing."""
    if not error.strerror:
        return str(error)
    files = [f for f in (error.filename, error.filename2) if f is not None]
    return ": ".join([error.strerror, *(str(f) for f in files)])


def name_config_file(message: str, args: Sequence[str]) -> str:
    """Prefix ``message`` with the ``--config`` file that holds its key, or that is bad YAML.

    jsonargparse names the key (``model.lrr``) but not the file, and calls every config
    ``<unicode string>`` in a syntax error. The key is looked for in each ``--config``, last
    first (the last one wins), following sections given as another file (``data: data.yaml``).
    """
    configs = [c for c in _config_arguments(args) if c.is_file()]
    if any(str(c) in message for c in configs):
        return message
    if "<unicode string>" in message or "Problems parsing config" in message:
        for config in configs:
            for path in _config_files(config):
                problem = _yaml_problem(path)
                if problem:
                    return f"{path}: not valid YAML: {problem}"
    found = re.search(r"""(?:option|[Kk]ey) ['"]([\w.]+)['"]""", message) or re.match(
        rf"((?:{'|'.join(SECTIONS)})\.[\w.]+) ", message
    )
    key = found.group(1) if found else None
    if key is None or any(arg.partition("=")[0] == f"--{key}" for arg in args):
        return message  # no key, or set on the command line, which wins over every file
    for config in reversed(configs):
        path = _find_key(config, key.split("."))
        if path is not None:
            return f"{path}: {message}"
    return message


def _config_files(config: Path) -> list[Path]:
    """A config file and the files its top-level sections name (``trainer: ../cpu.yaml``)."""
    import yaml

    try:
        data = yaml.safe_load(config.read_text())
    except (OSError, yaml.YAMLError):
        return [config]
    values = data.values() if isinstance(data, dict) else ()
    named = [config.parent / v for v in values if isinstance(v, str) and v.endswith(YAML_SUFFIXES)]
    return [config, *(path for path in named if path.is_file())]


def _yaml_problem(path: Path) -> str | None:
    import yaml

    try:
        yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        return f"{getattr(error, 'problem', None) or error}{where}"
    except OSError:
        return None
    return None


def _find_key(config: Path, parts: list[str]) -> Path | None:
    """The file (``config`` or one it names for a section) where the dotted key is set."""
    import yaml

    try:
        node: Any = yaml.safe_load(config.read_text())
    except (OSError, yaml.YAMLError):
        return None
    for position, part in enumerate(parts):
        if isinstance(node, str) and node.endswith(YAML_SUFFIXES):
            config = config.parent / node
            return _find_key(config, parts[position:]) if config.is_file() else None
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return config


def _config_arguments(args: Sequence[str]) -> list[Path]:
    """The ``--config`` (``-c``) files of a Lightning command line, in order."""
    configs, given = [], False
    for arg in args:
        name, sep, value = arg.partition("=")
        if given:
            configs.append(Path(arg))
        elif sep and name in ("--config", "-c"):
            configs.append(Path(value))
        given = not sep and arg in ("--config", "-c")
    return configs
