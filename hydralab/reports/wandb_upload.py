"""A study's report in W&B: one run in the study's group holding its tables and figures.

The trials of a sweep are W&B runs grouped by study; ``hydralab report --wandb`` adds a run of
job type ``report`` to that group, so the learning curves and the baseline-vs-Hydranet table sit
next to the runs they summarise. Each CSV becomes a Table, each PNG an Image, and every file of
the report (the markdown or LaTeX table too) goes into one ``report`` artifact. Offline by
default, as every hydralab run: ``wandb sync`` uploads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from hydralab.training.tracking import Mode, finish_wandb, make_wandb_logger

JOB_TYPE = "report"


def log_report_to_wandb(
    study: str,
    files: Sequence[str | Path],
    save_dir: str | Path,
    *,
    project: str = "hydralab",
    mode: Mode = "offline",
) -> Path | None:
    """Log a report's ``files`` (as :func:`~hydralab.reports.render.write_report` returns them)
    to a new W&B run named ``report-<study>`` in group ``study``, written under
    ``save_dir/wandb``; return the run's local folder (None when ``mode`` is ``disabled``).

    Keys: ``report/<file stem>`` for each table (CSV) and figure (PNG).
    """
    if mode == "disabled":
        return None
    import wandb

    logger = make_wandb_logger(
        Path(save_dir),
        project=project,
        name=f"{JOB_TYPE}-{study}",
        group=study,
        job_type=JOB_TYPE,
        tags=[f"study:{study}"],
        mode=mode,
    )
    run = logger.experiment
    try:
        paths = [Path(file) for file in files]
        media: dict[str, object] = {}
        for path in paths:
            if path.suffix == ".csv":
                media[f"{JOB_TYPE}/{path.stem}"] = wandb.Table(dataframe=pd.read_csv(path))
            elif path.suffix == ".png":
                media[f"{JOB_TYPE}/{path.stem}"] = wandb.Image(str(path))
        run.log(media)
        artifact = wandb.Artifact(f"{JOB_TYPE}-{study}", type=JOB_TYPE)
        for path in paths:
            artifact.add_file(str(path), name=path.name)
        run.log_artifact(artifact)
        folder = Path(run.dir).parent
    except BaseException:
        finish_wandb(1)
        raise
    finish_wandb(0)
    return folder
