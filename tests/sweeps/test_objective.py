"""One trial, the sweep's objective: the learning-curve and loss-table sweeps carry the plateau
rule, every trial records where and why its training ended (best_step, last_step, stop_reason),
and a config the Lightning CLI rejects fails the trial with the CLI's own message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from hydralab.sweeps.objective import SweepObjective, cli_args
from hydralab.sweeps.spec import load_spec, parse_spec
from hydralab.sweeps.trials import ERROR, STOPPING_ATTRS
from hydralab.training.stopping import PlateauStopping

ROOT = Path(__file__).resolve().parents[2]
PLATEAU_SWEEPS = (
    "learning_curve.yaml",
    "learning_curve_wmh.yaml",
    "learning_curve_quick.yaml",
    "learning_curve_gpu.yaml",
    "loss_table.yaml",
)
RULE = "hydralab.training.stopping.PlateauStopping"


@pytest.mark.parametrize("name", PLATEAU_SWEEPS)
def test_the_sweep_trains_every_trial_to_the_plateau_of_configs_plateau(name: str):
    spec = load_spec(ROOT / "sweeps" / name)
    (rule,) = spec.overrides["trainer.callbacks"]
    assert rule["class_path"] == RULE
    plateau = yaml.safe_load((ROOT / "configs" / "plateau.yaml").read_text())
    assert rule["init_args"] == plateau["trainer"]["callbacks"][0]["init_args"]  # one rule
    built = PlateauStopping(**rule["init_args"])
    assert built.monitor == spec.metric
    # a cap that leaves the rule room to act: a run whose best comes at min_steps can still
    # stop on its plateau before the cap
    assert spec.overrides["trainer.max_steps"] > built.min_steps + built.patience_steps


def test_the_rule_reaches_the_cli_as_one_json_argument(tmp_path: Path):
    spec = load_spec(ROOT / "sweeps" / "learning_curve.yaml")
    args = cli_args(spec, spec.trial_overrides({"seed": 0}, 0), tmp_path, 0)
    (callbacks,) = [arg for arg in args if arg.startswith("--trainer.callbacks=")]
    value = json.loads(callbacks.removeprefix("--trainer.callbacks="))
    assert value == spec.overrides["trainer.callbacks"]


def _trial(tmp_path: Path, csv: Path, **overrides: Any) -> dict[str, Any]:
    """One trial of a tiny sweep (8 training scans, validation every 10 steps); its attributes."""
    raw = {
        "base_config": str(ROOT / "configs" / "blobs" / "hydranet.yaml"),
        "study": "stop",
        "overrides": {
            "data.csv": str(csv),
            "data.n_train": None,
            "data.batch_size": 4,
            "trainer.val_check_interval": 10,
            "trainer.max_steps": 20,
            "tracking.wandb_mode": "disabled",
            **overrides,
        },
        "space": {"seed": [0]},
    }
    spec = parse_spec(raw, tmp_path / "sweep.yaml")
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    value = SweepObjective(spec, tmp_path / "sweeps" / "stop")(trial)
    study.tell(trial, value)
    return study.trials[0].user_attrs


@pytest.mark.slow
def test_a_trial_records_why_its_training_ended(tmp_path: Path, tiny_csv: Path):
    """With the rule (no validation can rise by 2 ICC units): plateau at min_steps 20, best at
    the first validation. Without it: the cap, and the best checkpoint's step."""
    rule = {
        "class_path": RULE,
        "init_args": {"min_steps": 20, "patience_steps": 10, "min_delta": 2.0},
    }
    overrides = {"trainer.max_steps": 100, "trainer.callbacks": [rule]}
    attrs = _trial(tmp_path / "rule", tiny_csv, **overrides)
    assert set(STOPPING_ATTRS) <= set(attrs)
    assert {key: attrs[key] for key in STOPPING_ATTRS} == {
        "best_step": 10,
        "last_step": 20,
        "stop_reason": "plateau",
    }
    assert attrs["steps"] == 20
    written = json.loads((Path(attrs["run_dir"]) / "stopping.json").read_text())
    assert written["stop_reason"] == "plateau"

    attrs = _trial(tmp_path / "cap", tiny_csv)
    assert (attrs["stop_reason"], attrs["last_step"], attrs["steps"]) == ("max_steps", 20, 20)
    assert attrs["best_step"] in (10, 20)  # read from the best checkpoint's name
    assert f"step={attrs['best_step']}" in attrs["best_checkpoint"]


def test_a_config_the_cli_rejects_fails_the_trial_with_the_clis_message(
    tmp_path: Path, tiny_csv: Path
):
    """The Lightning CLI exits on a config it rejects; a sweep records why and goes on."""
    raw = {
        "base_config": str(ROOT / "configs" / "blobs" / "hydranet.yaml"),
        "study": "rejected",
        "overrides": {"data.csv": str(tiny_csv), "model.no_such_key": 1},
        "space": {"seed": [0]},
    }
    spec = parse_spec(raw, tmp_path / "sweep.yaml")
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    with pytest.raises(
        ValueError, match="the Lightning CLI rejected the trial's config: "
    ) as error:
        SweepObjective(spec, tmp_path / "sweeps" / "rejected")(trial)
    assert "no_such_key" in str(error.value) and "\n" not in str(error.value)  # its one line
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert str(error.value) in study.trials[0].user_attrs[ERROR]
