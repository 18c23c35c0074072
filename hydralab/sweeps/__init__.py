"""Sweeps: Optuna studies over a config's keys, one Lightning run per trial.

``hydralab sweep sweeps/NAME.yaml [--storage URL] [--study NAME] [--n-trials N] [--workers N]
[--out DIR] [--set KEY=VALUE ...]`` runs a study to completion, or resumes it: trials already
finished are never run again. The pieces, in the order a trial meets them:

- :mod:`~hydralab.sweeps.spec`: the sweep file (base config, space, sampler, objective, pruning,
  heartbeat) and the per-trial rules (baseline k=1/p=0, batch size a multiple of k), checked by
  the pydantic schema in :mod:`~hydralab.sweeps.schema` (errors worded by
  :mod:`~hydralab.sweeps.validation`);
- :mod:`~hydralab.sweeps.preflight`: every trial's config checked by the Lightning CLI before
  anything is created (a refusal names the sweep file and the point);
- :mod:`~hydralab.sweeps.study`: study creation (a grid's points queued once) and resume,
  workers, progress lines; :mod:`~hydralab.sweeps.storage` the storage URLs and heartbeat
  checks, :mod:`~hydralab.sweeps.trials` the trials' attributes, counts, retries and surplus;
- :mod:`~hydralab.sweeps.objective`: one trial as one ``hydralab fit`` in its own folder with its
  own W&B run, its outputs stored as the trial's user attributes.

Outputs go to ``<out>/<study>/`` (``runs/sweeps/<study>/`` by default): ``study.db`` (the embedded
storage) and ``trials/trial-<number>/version_0/`` per trial. ``optuna-dashboard <storage URL>``
shows the study; in W&B the trials of a study share a group, split by job type (the method).
A sweep whose every trial failed raises :class:`~hydralab.sweeps.study.SweepFailed` (exit 2); a
storage that cannot be opened, :class:`~hydralab.sweeps.storage.StorageError` (one line).
"""

from hydralab.sweeps.spec import SweepSpec, SweepSpecError, load_spec

__all__ = ["SweepSpec", "SweepSpecError", "load_spec"]
