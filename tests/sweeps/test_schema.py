"""The sweep file's schema: every error names the file and the offending key, in the file's
terms, and the file's own rules (config keys a sweep owns, seeds, sets) hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydralab.sweeps.spec import SweepSpecError, load_spec, parse_spec
from tests.helpers.sweeps import BASE_CONFIG, ROOT
from tests.helpers.sweeps import small_spec as _spec

BASE = str(BASE_CONFIG)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"space": {"model.lr": {"low": 1, "hihg": 2}}},
            "space.model.lr.hihg: unknown key; expected one of low, high, log, step, type",
        ),
        ({"space": {"model.lr": {"low": "x", "high": 2}}}, "space.model.lr.low: must be a number"),
        ({"space": {"model.loss": ["a", "a"]}}, "space.model.loss.choices: has repeated values"),
        ({"sampler": 5}, "sampler: must be grid, tpe or {name: tpe, seed: 0}, got 5"),
        ({"pruning": 3}, "pruning: must be a mapping, got 3"),
        ({"tags": "x"}, "tags: must be a list of strings, got 'x'"),
        ({"n_trials": 0}, "n_trials: must be a positive integer, got 0"),
        ({"study": None}, "study: is required"),
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


def test_a_file_that_is_not_a_mapping_or_not_there_is_named(tmp_path: Path):
    with pytest.raises(SweepSpecError, match=r"x\.yaml: expected a mapping with keys base_config"):
        parse_spec([1, 2], tmp_path / "x.yaml")
    with pytest.raises(SweepSpecError, match=r"sweep file .*nowhere\.yaml does not exist"):
        load_spec(tmp_path / "nowhere.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("study: [unclosed\n")
    with pytest.raises(SweepSpecError, match=r"broken\.yaml: not valid YAML"):
        load_spec(broken)


def test_a_null_key_takes_its_default(tmp_path: Path):
    spec = _spec(tmp_path, heartbeat={"max_retry": None}, overrides=None, n_trials=None)
    assert (spec.max_retry, spec.overrides, spec.n_trials) == (3, {}, None)
