"""A sweep's Optuna artifacts: a report's figures go to the study once per content, only into
the store the study recorded; a trial without test predictions uploads nothing."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.artifacts import get_all_artifact_meta

from hydralab.sweeps.artifacts import (
    ARTIFACTS_DIR,
    artifact_store,
    record_store,
    study_store_dir,
    upload_report_figures,
    upload_study_files,
    upload_trial_outputs,
)
from hydralab.sweeps.storage import default_storage_url
from hydralab.sweeps.trials import ARTIFACTS


def _study(sweep_dir: Path) -> optuna.Study:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    return optuna.create_study(study_name="s", storage=default_storage_url(sweep_dir))


def test_a_rerun_report_uploads_only_what_changed(tmp_path: Path):
    study = _study(tmp_path / "s")
    store = artifact_store(tmp_path / "store")
    figure, table = tmp_path / "curves.png", tmp_path / "runs.csv"
    figure.write_bytes(b"\x89PNG first")
    table.write_text("a\n1\n")
    assert upload_study_files(study, [figure, table], store) == [figure, table]
    assert upload_study_files(study, [figure, table], store) == []  # unchanged: kept once
    figure.write_bytes(b"\x89PNG second")
    assert upload_study_files(study, [figure, table], store) == [figure]
    metas = get_all_artifact_meta(study)
    assert sorted(m.filename for m in metas) == ["curves.png", "curves.png", "runs.csv"]
    assert {m.mimetype for m in metas} == {"image/png", "text/csv"}


def test_the_first_recorded_store_stays_and_report_figures_go_there(tmp_path: Path):
    sweep_dir = tmp_path / "s"
    study = _study(sweep_dir)
    url = default_storage_url(sweep_dir)
    figure = tmp_path / "learning_curves.png"
    figure.write_bytes(b"\x89PNG")
    assert study_store_dir(study) is None
    assert upload_report_figures(url, "s", [figure]) == 0  # no store recorded: nothing
    folder = record_store(study, sweep_dir)
    assert folder == sweep_dir.resolve() / ARTIFACTS_DIR
    assert record_store(study, tmp_path / "another-machine") != folder
    assert study.user_attrs[ARTIFACTS] == str(folder)  # the first one stays recorded
    folder.mkdir()
    assert study_store_dir(study) == folder
    assert upload_report_figures(url, "s", [figure, tmp_path / "runs.csv"]) == 1  # PNGs only
    assert [m.filename for m in get_all_artifact_meta(study)] == ["learning_curves.png"]


def test_a_trial_without_test_predictions_uploads_nothing(tmp_path: Path):
    study = _study(tmp_path / "s")
    trial = study.ask()
    assert upload_trial_outputs(trial, tmp_path, artifact_store(tmp_path / "store")) == []
