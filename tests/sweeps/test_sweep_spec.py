"""The sweep file: validation that names the bad key, per-trial rules, the shipped sweeps."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hydralab.sweeps.spec import SweepSpecError, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
BASE = str(ROOT / "configs" / "blobs" / "hydranet.yaml")


def _spec(tmp_path: Path, **changes):
    raw = {"base_config": BASE, "study": "s", "space": {"model.method": ["baseline", "hydranet"]}}
    raw.update(changes)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_spec(path)


def test_shipped_sweeps_load_with_the_papers_sizes():
    curve = load_spec(ROOT / "sweeps" / "learning_curve.yaml")
    # 2 methods x N in {12, 20, 30} x 3 seeds, one stopping rule and one cap for every point.
    assert curve.sampler == "grid" and curve.target_trials() == 18
    assert curve.base_config == ROOT / "configs" / "blobs" / "hydranet.yaml"
    assert curve.overrides["trainer.max_steps"] == 20000
    (rule,) = curve.overrides["trainer.callbacks"]
    assert rule["class_path"] == "hydralab.training.stopping.PlateauStopping"
    lesions = load_spec(ROOT / "sweeps" / "learning_curve_lesions.yaml")
    assert lesions.space == curve.space and "lesions" in str(lesions.base_config)
    table = load_spec(ROOT / "sweeps" / "loss_table.yaml")
    assert table.target_trials() == 12 and "lesions" in str(table.base_config)
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


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"space": {"model.lr": {"low": 1, "hihg": 2}}}, "space.model.lr.hihg: unknown key"),
        ({"space": {"modle.k": [1, 2]}}, "space.modle.k: not a config key"),
        ({"space": {"tracking.name": ["a"]}}, "space.tracking.name: is set by the sweep"),
        ({"space": {"data.k": [2]}}, "space.data.k: is set by the sweep: set model.k"),
        ({"space": {"model.lr": {"low": 2.0, "high": 1.0}}}, "space.model.lr: low (2.0) must be"),
        ({"space": {"model.lr": {"low": 0.0, "high": 1.0, "log": True}}}, "space.model.lr.low"),
        ({"space": {"model.lr": {"low": 0.1, "high": 1.0}}}, "space.model.lr: a grid needs"),
        ({"space": {"model.k": [2, 4]}}, "space.model.k: set data.batch_size"),
        ({"space": {"seed": [0.5]}}, "space.seed.choices: seeds must be integers"),
        ({"space": {"model.loss": []}}, "space.model.loss.choices: must be a non-empty list"),
        ({"space": {"model.method": ["baseline", "svm"]}}, "space.model.method: choices must"),
        ({"sampler": "random"}, "sampler.name: must be one of grid, tpe"),
        ({"sampler": "tpe"}, "n_trials: is required with sampler tpe"),
        ({"objective": {"metric": "test/icc_c1"}}, "objective.metric: must be a validation"),
        ({"objective": {"metric": "val/r2"}}, "objective.direction: cannot tell"),
        ({"pruning": {"enable": True}}, "pruning.enable: unknown key"),
        ({"heartbeat": {"interval": 0}}, "heartbeat.interval: must be an integer >= 1"),
        ({"overrides": {"checkpoint.monitor": "val/mse"}}, "overrides.checkpoint.monitor"),
        ({"overrides": {"tracking.tags": ["x"]}}, "overrides.tracking.tags: is set by the sweep"),
        ({"overrides": {"seed": "zero"}}, "overrides.seed: must be an integer"),
        ({"space": {"data.seed": [0, 1]}}, "space.data.seed: is set by the sweep: use `seed`"),
        (
            {"space": {"data.subset_seed": [0, -1]}},
            "space.data.subset_seed.choices: seeds must be integers >= 0",
        ),
        ({"space": {"data.split_seed": [0.5]}}, "space.data.split_seed.choices: seeds must be"),
        (
            {"overrides": {"data.split_seed": "zero"}},
            "overrides.data.split_seed: must be an integer >= 0",
        ),
        ({"base_config": "nowhere.yaml"}, "base_config: "),
        ({"study": "a/b"}, "study: 'a/b' must be a plain name"),
        ({"trials": 3}, "trials: unknown key"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path: Path, changes: dict, message: str):
    with pytest.raises(SweepSpecError, match="sweep.yaml: ") as error:
        _spec(tmp_path, **changes)
    assert message in str(error.value)


def test_a_fixed_baseline_cannot_sweep_k(tmp_path: Path):
    baseline = str(ROOT / "configs" / "blobs" / "baseline.yaml")
    with pytest.raises(SweepSpecError, match=r"space\.model\.p: the baseline trains with k=1"):
        _spec(tmp_path, base_config=baseline, space={"model.p": [0.1, 0.2]})


def test_ranges_infer_their_type_and_read_yaml_exponents(tmp_path: Path):
    path = tmp_path / "sweep.yaml"
    path.write_text(
        f"base_config: {BASE}\nstudy: s\nsampler: tpe\nn_trials: 2\n"
        "space:\n  model.lr: {low: 1e-4, high: 1e-1, log: true}\n"
        "  data.n_train: {low: 4, high: 8, step: 2}\n"
    )
    spec = load_spec(path)
    assert spec.space["model.lr"].low == pytest.approx(1e-4) and not spec.space["model.lr"].integer
    assert spec.space["data.n_train"].integer


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
