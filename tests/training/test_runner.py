"""The runner's own contract with Python callers: rejected configs, run folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydralab.training.runner import ConfigRejected, run_cli

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model.k=abc"], "Parser key \"model.k\": Expected a <class 'int'>. Got value: abc"),
        (["--model.nope=1"], "unrecognized arguments: --model.nope=1"),
        (["--model.method=foo"], 'Parser key "model.method": Expected a typing.Literal'),
    ],
)
def test_a_rejected_config_raises_its_one_line_error(
    tmp_path: Path, capsys, extra: list[str], message: str
):
    args = [
        "fit",
        f"--config={CONFIGS / 'blobs' / 'baseline.yaml'}",
        f"--tracking.root={tmp_path}",
        *extra,
    ]
    with pytest.raises(ConfigRejected) as caught:
        run_cli(args, exit_on_error=False)
    text = str(caught.value)
    assert text.startswith(message) and "\n" not in text
    assert isinstance(caught.value, ValueError)
    assert "usage:" not in capsys.readouterr().err  # nothing printed for the caller to scrape
    assert not any(tmp_path.iterdir())  # rejected before any run folder was claimed

    with pytest.raises(SystemExit) as exited:  # the command line's convention is unchanged
        run_cli(args)
    assert exited.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_a_missing_config_file_is_rejected(tmp_path: Path):
    with pytest.raises(ConfigRejected, match="File does not exist"):
        run_cli(["fit", f"--config={tmp_path / 'missing.yaml'}"], exit_on_error=False)
