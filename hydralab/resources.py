"""The configs and sweep files that ship with hydralab, found by name from any folder.

The checkout keeps them at its top, ``configs/`` and ``sweeps/``; a wheel installs them inside
the package as ``hydralab/configs`` and ``hydralab/sweep_files`` (pyproject.toml maps the
folders). Both layouts keep sweep files one folder away from the configs, so a sweep's
``base_config: ../configs/pvs/hydranet.yaml`` resolves in either. An editable install
(``make install``) imports hydralab from the checkout, so its configs are the checkout's.

A name is a path inside that folder, with or without ``.yaml``: ``pvs/hydranet``,
``plateau.yaml``, ``learning_curve``. An existing file of that name in the working directory
wins over the packaged one: a user's own ``pvs/hydranet.yaml`` is never shadowed.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Literal

Kind = Literal["configs", "sweeps"]

FOLDERS: dict[Kind, tuple[str, str]] = {
    "configs": ("configs", "configs"),
    "sweeps": ("sweep_files", "sweeps"),
}
"""Each kind's folder: (inside the installed package, at the top of the checkout)."""

SUFFIX = ".yaml"


def packaged_folder(kind: Kind) -> Path:
    """The folder that holds the shipped ``kind`` files, installed or in the checkout.

    Raises:
        FileNotFoundError: neither layout holds it (a broken install).
    """
    package = Path(str(files("hydralab")))
    installed, checkout = FOLDERS[kind]
    for folder in (package / installed, package.parent / checkout):
        if folder.is_dir():
            return folder
    raise FileNotFoundError(f"hydralab's {kind} are not installed (looked in {package})")


def packaged(kind: Kind, name: str | Path) -> Path | None:
    """The shipped file ``name`` (``.yaml`` optional) of ``kind``, or None if there is none."""
    text = str(name)
    if not text or Path(text).is_absolute():
        return None
    folder = packaged_folder(kind)
    for candidate in (text, text + SUFFIX):
        path = folder / candidate
        if path.suffix == SUFFIX and path.is_file():
            return path
    return None


def find_file(kind: Kind, name: str | Path) -> Path:
    """``name`` as a path if that file exists, else the shipped file of that name, else
    ``name`` unchanged (so that the caller's "does not exist" names what the user gave)."""
    if Path(name).is_file():
        return Path(name)
    return packaged(kind, name) or Path(name)


def is_packaged(path: str | Path) -> bool:
    """Whether ``path`` is one of the shipped configs (or in one of their folders)."""
    resolved = Path(path).resolve()
    return resolved.is_relative_to(packaged_folder("configs").resolve())


def available(kind: Kind) -> list[str]:
    """The names of the shipped ``kind`` files (``pvs/hydranet``, ``plateau``, ...), sorted."""
    folder = packaged_folder(kind)
    names = (path.relative_to(folder).with_suffix("") for path in folder.rglob("*" + SUFFIX))
    return sorted(name.as_posix() for name in names)
