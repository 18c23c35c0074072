"""`hydralab fit --help` fits on a few screens, documents every hydralab option, and offers one
way to set the optimiser, whose defaults are the configs'."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import yaml

from hydralab.cli import _parser, main
from hydralab.training.runner import ConfigRejected, run_cli

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
HYDRALAB_SECTIONS = ("model", "data", "tracking", "predictions")


def _help(monkeypatch: pytest.MonkeyPatch, capsys, command: str = "fit") -> str:
    monkeypatch.setenv("COLUMNS", "80")  # argparse wraps to the terminal's width
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def _option_help(text: str) -> dict[str, str]:
    """Each ``--option``'s help, without the ``(type: ..., default: ...)`` jsonargparse adds."""
    options: dict[str, str] = {}
    name = None
    for line in text.splitlines():
        found = re.match(r"^  (--[\w.]+)(?: \S+)?(?:, --[\w.+]+(?: \S+)?)?(?:\s{2,}(.*))?$", line)
        if found:
            name = found.group(1)
            options[name] = found.group(2) or ""
        elif name and line.startswith(" " * 24):
            options[name] += " " + line.strip()
        else:
            name = None
    return {key: value.split("(type:")[0].strip() for key, value in options.items()}


def test_fit_help_is_short_and_lists_no_torch_nn_classes(monkeypatch, capsys):
    text = _help(monkeypatch, capsys)
    assert len(text.splitlines()) < 250
    assert "torch.nn" not in text  # --model.regressor lists BaseRegressor's subclasses only
    assert re.search(r"known subclasses:\s+hydralab\.models\.regressor\.BaseRegressor\)", text)
    assert text.startswith("usage: hydralab fit [--config FILE ...]")
    options = _option_help(text)
    assert "--optimizer" not in options and "--lr_scheduler" not in options  # one way only
    assert "--trainer.max_steps" in options and "--ckpt_path" in options


@pytest.mark.parametrize("command", ["validate", "test", "predict"])
def test_every_subcommand_help_is_short(monkeypatch, capsys, command: str):
    assert len(_help(monkeypatch, capsys, command).splitlines()) < 250


@pytest.mark.parametrize(
    "section",
    [
        "model",
        "tracking",
        "predictions",
        "data",
    ],
)
def test_every_hydralab_option_has_help_text(monkeypatch, capsys, section: str):
    options = _option_help(_help(monkeypatch, capsys))
    mine = {key: text for key, text in options.items() if key.startswith(f"--{section}.")}
    assert mine, section
    assert not [key for key, text in mine.items() if not text]


def test_the_optimiser_help_shows_the_configs_defaults(monkeypatch, capsys):
    options = _help(monkeypatch, capsys)
    assert re.search(r"--model.optimizer OPTIMIZER\s.*?default: Adam\)", options, re.S)
    assert re.search(r"--model.lr LR\s.*?default: 0.001\)", options, re.S)
    config = yaml.safe_load((CONFIGS / "blobs" / "hydranet.yaml").read_text())["model"]
    assert (config["optimizer"], config["lr"]) == ("Adam", 0.001)


def test_lightning_s_second_optimiser_option_is_refused(tmp_path: Path):
    args = [
        "fit",
        f"--config={CONFIGS / 'blobs' / 'baseline.yaml'}",
        f"--tracking.root={tmp_path}",
        "--optimizer=SGD",
    ]
    with pytest.raises(ConfigRejected, match="unrecognized arguments: --optimizer=SGD"):
        run_cli(args, exit_on_error=False)


def test_the_base_regressor_s_options_still_work(capsys):
    with pytest.raises(SystemExit):
        run_cli(
            [
                "fit",
                f"--config={CONFIGS / 'blobs' / 'baseline.yaml'}",
                "--model.regressor.dropout=0.1",
                "--print_config",
            ]
        )
    regressor = yaml.safe_load(capsys.readouterr().out)["model"]["regressor"]
    assert regressor["class_path"] == "hydralab.models.regressor.BaseRegressor"
    assert regressor["init_args"]["dropout"] == 0.1


def test_every_argparse_option_has_help_text():
    """make-data, make-table, demo, sweep and report: every option says what it does."""

    def undocumented(parser: argparse.ArgumentParser, name: str) -> list[str]:
        missing = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for command, sub in action.choices.items():
                    missing += undocumented(sub, command)
            elif not action.help:
                missing.append(f"{name} {action.dest}")
        return missing

    assert undocumented(_parser(), "hydralab") == []
