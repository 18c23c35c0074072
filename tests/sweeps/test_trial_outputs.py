"""What one real tiny sweep leaves where researchers look: the metric's name on the study, every
validation as an intermediate value, each trial's prediction plot and CSV as Optuna artifacts,
readable W&B run names, and optuna-dashboard serving all of it over HTTP."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState

from hydralab.sweeps.artifacts import ARTIFACTS_DIR
from hydralab.sweeps.dashboard import dashboard_server
from hydralab.sweeps.objective import run_name
from hydralab.sweeps.spec import load_spec
from hydralab.sweeps.storage import default_storage_url
from hydralab.sweeps.study import run_sweep
from hydralab.sweeps.trials import ARTIFACTS, RUN_DIR
from hydralab.training.outputs import TEST_PREDICTIONS
from hydralab.training.tracking import local_run_dirs
from tests.helpers.scans import make_tiny_dataset
from tests.helpers.sweeps import small_spec, write_sweep
from tests.helpers.wandb_log import read_offline_run

METRIC = "val/icc_c1"
STEPS = [2, 4]  # max_steps 4, a validation every 2 steps


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[optuna.Study, Path]]:
    """Baseline and Hydranet, 4 steps each, W&B offline; the study and its sweep folder."""
    root = tmp_path_factory.mktemp("trial-outputs")
    with pytest.MonkeyPatch.context() as env:  # the autouse fixture is per test, not per module
        for variable in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            env.setenv(variable, str(root / variable.lower()))
        env.setenv("WANDB_SILENT", "true")
        env.delenv("WANDB_API_KEY", raising=False)
        csv = make_tiny_dataset(root / "tiny")
        overrides = {
            "tracking.wandb_mode": "offline",
            "trainer.check_val_every_n_epoch": None,
            "trainer.val_check_interval": 2,
        }
        space = {"model.method": ["baseline", "hydranet"]}
        spec = load_spec(write_sweep(root / "sweep.yaml", csv, space, overrides=overrides))
        counts = run_sweep(spec, out=root / "sweeps")
        assert counts.complete == 2
        sweep_dir = root / "sweeps" / spec.study
        yield (
            optuna.load_study(study_name=spec.study, storage=default_storage_url(sweep_dir)),
            sweep_dir,
        )


def test_the_study_names_its_metric_and_every_validation_is_reported(sweep):
    study, _ = sweep
    assert study.metric_names == [METRIC]
    for trial in study.trials:  # pruning is off in this sweep: reported all the same
        assert sorted(trial.intermediate_values) == STEPS
        # The values the best checkpoint was chosen from: its score is their maximum.
        assert max(trial.intermediate_values.values()) == pytest.approx(trial.value)


def test_each_trial_uploads_its_prediction_plot_and_csv(sweep):
    study, sweep_dir = sweep
    store = sweep_dir / ARTIFACTS_DIR
    assert study.user_attrs[ARTIFACTS] == str(store.resolve())
    for trial in study.trials:
        storage = optuna.storages.get_storage(default_storage_url(sweep_dir))
        metas = {m.filename: m for m in get_all_artifact_meta(trial, storage=storage)}
        assert set(metas) == {"test_predictions.png", "test_predictions.csv"}
        assert metas["test_predictions.png"].mimetype == "image/png"
        csv = Path(trial.user_attrs[RUN_DIR]) / TEST_PREDICTIONS
        stored = store / metas["test_predictions.csv"].artifact_id
        assert stored.read_bytes() == csv.read_bytes()
        assert (store / metas["test_predictions.png"].artifact_id).read_bytes()[:4] == b"\x89PNG"


def test_each_trial_runs_under_a_readable_wandb_name(sweep):
    study, _ = sweep
    for trial in study.trials:  # no seed swept or fixed: each trial's seed is its number
        (wandb_run,) = local_run_dirs(Path(trial.user_attrs[RUN_DIR]))
        method, n = trial.params["model.method"], trial.number
        assert read_offline_run(wandb_run)["run"]["name"] == f"{method}-Nall-s{n}-t{n}"


def test_the_dashboard_serves_the_metric_curves_and_artifacts(sweep):
    study, sweep_dir = sweep
    with dashboard_server(default_storage_url(sweep_dir), study.study_name, port=0) as (
        server,
        address,
    ):
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            base, _, page = address.partition("/dashboard")
            study_id = page.rsplit("/", 1)[-1]
            with urllib.request.urlopen(f"{base}/api/studies/{study_id}", timeout=30) as answer:
                detail = json.load(answer)
            assert detail["objective_names"] == [METRIC]
            for trial in detail["trials"]:
                assert [v["step"] for v in trial["intermediate_values"]] == STEPS
                plot = next(a for a in trial["artifacts"] if a["filename"].endswith(".png"))
                url = f"{base}/artifacts/{study_id}/{trial['trial_id']}/{plot['artifact_id']}"
                with urllib.request.urlopen(url, timeout=30) as answer:
                    assert answer.headers["Content-Type"] == "image/png"
                    assert answer.read()[:4] == b"\x89PNG"
        finally:
            server.shutdown()


@pytest.mark.parametrize(
    ("space", "params", "name"),
    [
        (
            {"model.method": ["baseline", "hydranet"], "model.k": [2, 4]},
            {"model.method": "hydranet", "model.k": 4},
            "hydranet-K4-s3-t7",
        ),
        (
            {"model.method": ["baseline", "hydranet"], "model.k": [2, 4]},
            {"model.method": "baseline"},
            "baseline-s3-t7",  # the baseline's k is 1 whatever is swept: no K in its name
        ),
        (
            {"model.method": ["baseline", "hydranet"], "data.n_train": [12, None]},
            {"model.method": "hydranet", "data.n_train": 12},
            "hydranet-N12-s3-t7",
        ),
        (
            {"data.n_train": [12, None], "seed": [0, 3]},
            {"data.n_train": None},
            "hydranet-Nall-s3-t7",  # the base config's method
        ),
    ],
)
def test_run_names_say_method_k_n_and_seed(tmp_path: Path, space, params, name):
    spec = small_spec(tmp_path, space=space, overrides={"data.batch_size": 4})
    assert run_name(spec, spec.trial_overrides(params, seed=3), 7) == name


def test_a_pruned_trial_says_at_which_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from hydralab.sweeps.study import ProgressLine

    spec = small_spec(tmp_path)
    study = optuna.create_study()
    trial = study.ask()
    trial.report(0.5, step=150)
    study.tell(trial, state=TrialState.PRUNED)
    ProgressLine(spec)(study, study.trials[0])
    assert "PRUNED: pruned at step 150" in capsys.readouterr().out
