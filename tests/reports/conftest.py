"""A fake finished study: trials with user attributes and small test_predictions.csv files.

No model is trained: the report only reads the storage and the prediction files, so a study
built directly with Optuna is exactly what it sees after a real sweep.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from hydralab.sweeps.trials import GRID, SWEEP
from hydralab.training.metrics import agreement_metrics

SPACE = {"model.method": ["baseline", "hydranet"], "data.n_train": [8, 16], "seed": [0, 1]}
NOISE = {"baseline": 3.0, "hydranet": 1.0}  # Hydranet predicts better, clearly


def grid(space: dict[str, list]) -> list[dict]:
    """Every point of a grid space, as a grid study stores them."""
    return [dict(zip(space, values, strict=True)) for values in itertools.product(*space.values())]


def build_fake_study(root: Path, name: str = "fake", with_grid: bool = True) -> str:
    """A grid study on SQLite with one failed, one pruned and one missing run; its URL.

    Like a study a sweep makes, it stores its sweep definition and (unless ``with_grid`` is
    False, as in a study made before sweeps stored them) its grid points.
    """
    url = f"sqlite:///{root / 'study.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    study.set_user_attr(SWEEP, {"space": SPACE})
    if with_grid:
        study.set_user_attr(GRID, grid(SPACE))
    rng = np.random.default_rng(0)
    labels = rng.normal(10.0, 3.0, size=24)
    subjects = [f"s{i:02d}" for i in range(len(labels))]
    distributions = {key: CategoricalDistribution(values) for key, values in SPACE.items()}
    for method in SPACE["model.method"]:
        for n_train in SPACE["data.n_train"]:
            for seed in SPACE["seed"]:
                if (method, n_train, seed) == ("hydranet", 16, 1):
                    continue  # missing: never started
                params = {"model.method": method, "data.n_train": n_train, "seed": seed}
                attrs = {"seed": seed, "config": {"model.method": method}}
                state = TrialState.COMPLETE
                if (method, n_train, seed) == ("baseline", 16, 1):
                    state, attrs["error"] = TrialState.FAIL, "ValueError: NaN loss"
                elif (method, n_train, seed) == ("baseline", 8, 1):
                    state = TrialState.PRUNED
                else:
                    noise = NOISE[method] * (12 / n_train)
                    predictions = labels + rng.normal(0.0, noise, size=len(labels))
                    run = root / f"{method}-{n_train}-{seed}"
                    run.mkdir()
                    csv = run / "test_predictions.csv"
                    pd.DataFrame(
                        {
                            "subject": subjects,
                            "image": [f"images/{s}.nii.gz" for s in subjects],
                            "label": labels,
                            "prediction": predictions,
                        }
                    ).to_csv(csv, index=False)
                    metrics = agreement_metrics(predictions, labels)
                    attrs.update(
                        run_dir=str(run),
                        best_val_icc_c1=metrics["icc_c1"],
                        test_icc_c1=metrics["icc_c1"],
                        test_mse=metrics["mse"],
                        test_predictions=str(csv),
                    )
                study.add_trial(
                    optuna.trial.create_trial(
                        params=params,
                        distributions=distributions,
                        value=attrs.get("best_val_icc_c1")
                        if state == TrialState.COMPLETE
                        else None,
                        state=state,
                        user_attrs=attrs,
                    )
                )
    return url


@pytest.fixture
def fake_study(tmp_path: Path) -> str:
    """The storage URL of a fake study named ``fake``."""
    return build_fake_study(tmp_path)


def build_seed_study(root: Path, name: str = "seeds") -> str:
    """A complete grid of 2 methods x N in {8, 16} x 3 seeds on 30 shared test scans, whose
    trials record how they stopped; one Hydranet run hit its step cap. Its storage URL."""
    space = {"model.method": ["baseline", "hydranet"], "data.n_train": [8, 16], "seed": [0, 1, 2]}
    url = f"sqlite:///{root / 'seeds.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    study.set_user_attr(SWEEP, {"space": space})
    study.set_user_attr(GRID, grid(space))
    rng = np.random.default_rng(1)
    labels = rng.normal(10.0, 3.0, size=30)
    subjects = [f"s{i:02d}" for i in range(len(labels))]
    distributions = {key: CategoricalDistribution(values) for key, values in space.items()}
    for method in space["model.method"]:
        for n_train in space["data.n_train"]:
            for seed in space["seed"]:
                noise = NOISE[method] * (12 / n_train) * (1 + 0.2 * seed)
                predictions = labels + rng.normal(0.0, noise, size=len(labels))
                csv = root / f"{method}-{n_train}-{seed}.csv"
                pd.DataFrame(
                    {"subject": subjects, "label": labels, "prediction": predictions}
                ).to_csv(csv, index=False)
                metrics = agreement_metrics(predictions, labels)
                capped = (method, n_train, seed) == ("hydranet", 8, 2)
                attrs = {
                    "seed": seed,
                    "test_icc_c1": metrics["icc_c1"],
                    "test_mse": metrics["mse"],
                    "test_predictions": str(csv),
                    "steps": 5000 if capped else 3000,
                    "last_step": 5000 if capped else 3000,
                    "best_step": 4950 if capped else 1500,
                    "stop_reason": "max_steps" if capped else "plateau",
                }
                study.add_trial(
                    optuna.trial.create_trial(
                        params={"model.method": method, "data.n_train": n_train, "seed": seed},
                        distributions=distributions,
                        value=metrics["icc_c1"],
                        user_attrs=attrs,
                    )
                )
    return url


@pytest.fixture
def seed_study(tmp_path: Path) -> str:
    """The storage URL of a complete three-seed study named ``seeds``."""
    return build_seed_study(tmp_path)
