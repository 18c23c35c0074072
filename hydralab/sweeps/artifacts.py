"""A sweep's Optuna artifacts: each trial's prediction plot and predictions CSV, a report's figures.

Optuna keeps artifact files outside its storage, in an artifact store, and does not record which
store a study uses. hydralab keeps them in ``<sweep>/artifacts`` (Optuna's
``FileSystemArtifactStore``) and records that folder in the study's user attribute
:data:`~.trials.ARTIFACTS` when a worker first opens the study, so that the dashboard and the
report find it from the storage alone. Machines sharing a database storage each upload into
their own sweep folder; the recorded one is the first machine's (put the sweep folder on a shared
file system, or give the dashboard ``artifacts``, to see every trial's files).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound

from hydralab.sweeps.trials import ARTIFACTS
from hydralab.training.outputs import TEST_PREDICTIONS
from hydralab.training.prediction_plot import write_prediction_plot

ARTIFACTS_DIR = "artifacts"
"""The artifact store's folder inside a sweep's folder."""
MIMETYPES = {".png": "image/png", ".csv": "text/csv", ".md": "text/markdown"}


def artifact_store(folder: str | Path) -> FileSystemArtifactStore:
    """The file-system artifact store in ``folder``, created if needed."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(base_path=Path(folder))


def record_store(study: optuna.Study, sweep_dir: Path) -> Path:
    """Record ``<sweep_dir>/artifacts`` as the study's store unless one is recorded; return the
    folder this worker uploads to."""
    folder = Path(sweep_dir).resolve() / ARTIFACTS_DIR
    if ARTIFACTS not in study.user_attrs:
        study.set_user_attr(ARTIFACTS, str(folder))
    return folder


def study_store_dir(study: optuna.Study) -> Path | None:
    """The artifact folder recorded for ``study``, if it exists on this machine."""
    recorded = study.user_attrs.get(ARTIFACTS)
    return Path(recorded) if recorded and Path(recorded).is_dir() else None


def upload_trial_outputs(
    trial: optuna.Trial, run_dir: Path, store: FileSystemArtifactStore
) -> list[Path]:
    """Plot the run's test predictions and upload the plot and the CSV to the trial; return the
    files uploaded (none when the run wrote no test predictions).

    A failure to plot or upload is a warning: the trial trained, and its value stands.
    """
    csv = Path(run_dir) / TEST_PREDICTIONS
    if not csv.is_file():
        return []
    try:
        files = [write_prediction_plot(csv), csv]
        for path in files:
            upload_artifact(
                artifact_store=store,
                file_path=str(path),
                study_or_trial=trial,
                mimetype=MIMETYPES.get(path.suffix),
            )
    except (OSError, ValueError) as error:
        warnings.warn(
            f"trial {trial.number}: its predictions were not uploaded as Optuna artifacts "
            f"({error})",
            RuntimeWarning,
            stacklevel=2,
        )
        return []
    return files


def upload_study_files(
    study: optuna.Study, paths: Iterable[str | Path], store: FileSystemArtifactStore
) -> list[Path]:
    """Upload files (a report's figures) to the study's own artifacts; return those uploaded.

    A file whose name and bytes match an artifact the study already holds is not uploaded
    again, so rerunning a report leaves one copy of each unchanged figure.
    """
    held = get_all_artifact_meta(study)
    uploaded = []
    for path in map(Path, paths):
        same = (_same(store, m.artifact_id, path) for m in held if m.filename == path.name)
        if any(same):
            continue
        upload_artifact(
            artifact_store=store,
            file_path=str(path),
            study_or_trial=study,
            mimetype=MIMETYPES.get(path.suffix),
        )
        uploaded.append(path)
    return uploaded


def _same(store: FileSystemArtifactStore, artifact_id: str, path: Path) -> bool:
    """Whether the stored artifact holds exactly the bytes of ``path``."""
    try:
        with store.open_reader(artifact_id) as reader:
            return reader.read() == path.read_bytes()
    except ArtifactNotFound:  # uploaded on another machine, into its own store
        return False


def upload_report_figures(storage_url: str, study_name: str, files: Iterable[str | Path]) -> int:
    """Upload a report's PNG figures to the study's artifacts (``hydralab report``); return how
    many were new. Nothing is uploaded when the study records no artifact folder that exists
    here (a study swept before artifacts existed, or on another machine)."""
    from hydralab.sweeps.storage import load_study

    study = load_study(storage_url, study_name)
    folder = study_store_dir(study)
    if folder is None:
        return 0
    figures = [Path(file) for file in files if Path(file).suffix == ".png"]
    return len(upload_study_files(study, figures, artifact_store(folder)))
