"""`hydralab --version` prints the installed package's version."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from hydralab.cli import main


def test_version_is_the_package_metadata_s(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"hydralab {version('hydralab')}\n"
