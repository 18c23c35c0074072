"""The sweep spec: per-trial rules (baseline, batch rounding, seeds), the grid, command-line
changes, and the shipped sweeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydralab.sweeps.spec import SweepSpecError, load_spec, parse_spec
from tests.helpers.sweeps import BASE_CONFIG, ROOT
from tests.helpers.sweeps import small_spec as _spec

BASE = str(BASE_CONFIG)


def test_shipped_sweeps_load_with_the_papers_sizes():
    curve = load_spec(ROOT / "sweeps" / "learning_curve.yaml")
    # 2 methods x N in {12, 20, 30} x 3 seeds, one stopping rule and one cap for every point.
    assert curve.sampler == "grid" and curve.target_trials() == 18
    assert curve.base_config == ROOT / "configs" / "pvs" / "hydranet.yaml"
    assert curve.overrides["trainer.max_steps"] == 20000
    (rule,) = curve.overrides["trainer.callbacks"]
    assert rule["class_path"] == "hydralab.training.stopping.PlateauStopping"
    wmh = load_spec(ROOT / "sweeps" / "learning_curve_wmh.yaml")
    assert (
        wmh.space == curve.space and wmh.base_config == ROOT / "configs" / "wmh" / "hydranet.yaml"
    )
    table = load_spec(ROOT / "sweeps" / "loss_table.yaml")
    assert table.target_trials() == 12 and "wmh" in str(table.base_config)
    hpo = load_spec(ROOT / "sweeps" / "hpo.yaml")
    assert hpo.sampler == "tpe" and hpo.pruning and hpo.target_trials() == hpo.n_trials
    assert hpo.space["model.k"].integer and (
        hpo.space["model.k"].low,
        hpo.space["model.k"].high,
    ) == (
        2,
        8,
    )
    assert not hpo.space["model.p"].integer and hpo.space["model.lr"].log


def test_a_grid_runs_one_baseline_per_distinct_rest(tmp_path: Path):
    spec = _spec(
        tmp_path,
        space={
            "model.method": ["baseline", "hydranet"],
            "model.k": [2, 4, 8],
            "model.p": [0.0, 0.1],
            "seed": [0, 1],
        },
        overrides={"data.batch_size": 8},
    )
    grid = spec.grid()
    baselines = [point for point in grid if point["model.method"] == "baseline"]
    assert len(baselines) == 2  # one per seed, not 3 x 2 per seed
    assert len(grid) == 2 + 3 * 2 * 2 == spec.target_trials()


def test_trial_overrides_coerce_the_baseline_and_round_the_batch(tmp_path: Path):
    spec = _spec(
        tmp_path,
        space={"model.method": ["baseline", "hydranet"], "model.k": [3]},
        overrides={"data.batch_size": 4, "trainer.max_steps": 7},
    )
    asked: list[str] = []

    def first_choice(dim):
        asked.append(dim.key)
        return dim.choices[0]

    params = spec.sample(first_choice)
    assert asked == ["model.method"] and params == {"model.method": "baseline"}
    base = spec.trial_overrides(params, seed=5)
    assert (base["model.k"], base["model.p"], base["data.batch_size"]) == (1, 0.0, 4)
    assert base["seed_everything"] == base["data.seed"] == 5
    assert base["checkpoint.monitor"] == "val/icc_c1" and base["checkpoint.mode"] == "max"
    hydra = spec.trial_overrides({"model.method": "hydranet", "model.k": 3}, seed=0)
    assert hydra["data.batch_size"] == 6 and "model.p" not in hydra  # p stays the base's
    keys = list(hydra)
    assert keys.index("trainer.max_steps") < keys.index("model.k")  # fixed before sampled


def test_command_line_changes_are_validated_and_change_the_fingerprint(tmp_path: Path):
    spec = _spec(tmp_path)
    changed = spec.with_changes(study="other", n_trials=1, overrides={"trainer.max_steps": 3})
    assert (changed.study, changed.target_trials()) == ("other", 1)
    assert changed.fingerprint() != spec.fingerprint()
    assert spec.with_changes().fingerprint() == spec.fingerprint()
    with pytest.raises(SweepSpecError, match="overrides.data.seed"):
        spec.with_changes(overrides={"data.seed": 1})


def test_minimised_metrics_get_their_direction(tmp_path: Path):
    raw = {"base_config": BASE, "study": "s", "space": {"seed": [0]}}
    spec = parse_spec({**raw, "objective": {"metric": "val/mse"}}, tmp_path / "x.yaml")
    assert spec.direction == "minimize"
    assert spec.trial_overrides({"seed": 0}, 0)["checkpoint.mode"] == "min"


def test_a_fixed_seed_in_overrides_is_every_trials_seed(tmp_path: Path):
    spec = _spec(tmp_path, overrides={"seed": 7})
    values = spec.trial_overrides({"model.method": "hydranet"}, seed=7)
    assert "seed" not in values and values["seed_everything"] == values["data.seed"] == 7


def test_a_sweep_crosses_training_seeds_with_subset_seeds(tmp_path: Path):
    """`seed` is the training randomness, data.subset_seed the training scans: a grid crosses
    them, and every trial keeps the split of the fixed data.split_seed."""
    spec = _spec(
        tmp_path,
        overrides={"data.split_seed": 3},
        space={"seed": [0, 1, 2], "data.subset_seed": [0, 1], "data.n_train": [12, 20]},
    )
    points = spec.grid()
    assert len(points) == 12 and spec.target_trials() == 12
    pairs = {(p["seed"], p["data.subset_seed"]) for p in points}
    assert pairs == {(seed, subset) for seed in (0, 1, 2) for subset in (0, 1)}
    point = {"seed": 1, "data.subset_seed": 1, "data.n_train": 12}
    values = spec.trial_overrides(spec.sample(lambda dim: point[dim.key]), seed=1)
    assert values["seed_everything"] == values["data.seed"] == 1
    assert (values["data.subset_seed"], values["data.split_seed"]) == (1, 3)
    ranged = _spec(tmp_path, space={"data.subset_seed": {"low": 0, "high": 3}})
    assert ranged.space["data.subset_seed"].grid_values() == [0, 1, 2, 3]
