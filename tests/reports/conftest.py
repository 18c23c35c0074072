"""A fake finished study: trials with user attributes and small test_predictions.csv files.

No model is trained: the report only reads the storage and the prediction files, so a study
built directly with Optuna is exactly what it sees after a real sweep.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from hydralab.training.metrics import agreement_metrics

SPACE = {"model.method": ["baseline", "hydranet"], "data.n_train": [8, 16], "seed": [0, 1]}
NOISE = {"baseline": 3.0, "hydranet": 1.0}  # Hydranet predicts better, clearly


def build_fake_study(root: Path, name: str = "fake") -> str:
    """A grid study on SQLite with one failed, one pruned and one missing run; its URL."""
    url = f"sqlite:///{root / 'study.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    study.set_user_attr("sweep", {"space": SPACE})
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
