"""A ``hydralab fit --help`` that fits on a few screens.

LightningCLI documents each of Lightning's ~60 trainer and checkpoint options with its full
docstring and, for class-typed ones, every known subclass: ~500 lines around hydralab's own
~50 options. Here hydralab's options keep their help; of Lightning's, the few a hydralab run sets
get one line each, and the others are listed by name (they all still parse, and
``--print_config`` shows every value).
"""

from __future__ import annotations

import argparse
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser

USAGE = "hydralab {command} [--config FILE ...] [--KEY=VALUE ...]"
"""The subcommands' usage line: argparse would list every option once more above the help."""

SHOWN: dict[str, dict[str, str]] = {
    "trainer": {
        "max_steps": "training length in optimiser steps, the same for both methods at every N "
        "(-1: train by max_epochs)",
        "val_check_interval": "validate every this many optimiser steps (an int), or a "
        "fraction of an epoch (a float)",
    },
    "checkpoint": {
        "monitor": "the validation metric that picks the best checkpoint (see mode)",
    },
    "ckpt_path": {
        "": "checkpoint to resume (fit) or evaluate; 'last': the newest last.ckpt of "
        "tracking.root/name, whose run folder fit continues",
    },
    "seed_everything": {
        "": "seed of initialisation and augmentation (true: a random one)",
    },
    "print_config": {"": "print the resolved config and exit"},
    "verbose": {"": "print the metrics"},
    "weights_only": {
        "": "load only tensors from the checkpoint (the default); false only for a checkpoint "
        "you trust",
    },
}
"""Lightning options described in ``--help``, with hydralab's one-line help."""

LEFT_OUT = ("trainer", "checkpoint", "predictions", "tracking", "return_predictions")
"""Options the help leaves out (they still work): ``--SECTION FILE`` of sections a config file
sets as ``trainer: file.yaml`` (``--model FILE`` and ``--data FILE`` stay), and ``predict``'s
``return_predictions`` (the CSV is written either way)."""

TITLES = {
    "trainer": "Lightning Trainer: training length, validation, devices",
    "checkpoint": "Checkpoints: the best by a validation metric, and last.ckpt",
}

HIDDEN = "Lightning's other options work as --{section}.NAME=VALUE too, e.g. {names}, ..."
EXAMPLES = 6
"""How many of the options left out ``--help`` names (``--print_config`` shows them all)."""


class HydraArgumentParser(LightningArgumentParser):
    """LightningCLI's parser with the compact help of :mod:`hydralab.training.cli_help`."""

    def format_help(self) -> str:
        compact_lightning_help(self)
        return super().format_help()


def compact_lightning_help(parser: Any) -> None:
    """Shorten the help of Lightning's options in ``parser`` as the module docstring says."""
    hidden: dict[str, list[str]] = {section: [] for section in TITLES}
    examples = {
        "trainer": ["accelerator", "devices", "precision", "callbacks", "max_time"],
        "checkpoint": ["mode", "save_top_k", "filename", "every_n_train_steps"],
    }
    for action in parser._actions:
        section, _, name = action.dest.partition(".")
        if action.dest.endswith(".help") or action.dest in LEFT_OUT:
            action.help = argparse.SUPPRESS  # still work; the option help names them
            continue
        if type(action).__name__ == "ActionLink":  # model.k --> data.k: model.* says so
            action.help = argparse.SUPPRESS
            continue
        texts = SHOWN.get(section)
        if texts is None:
            continue
        if name in texts:
            action.help = texts[name]
        elif section in TITLES and name:
            action.help = argparse.SUPPRESS
            hidden[section].append(name)
    for section, names in hidden.items():
        group = getattr(parser, "groups", {}).get(section)
        if group is not None and names:
            group.title = TITLES[section]
            names = [*examples.get(section, []), *names]
            shown = list(dict.fromkeys(names))[:EXAMPLES]
            group.description = HIDDEN.format(section=section, names=", ".join(shown))
