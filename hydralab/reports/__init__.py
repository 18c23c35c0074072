"""Reports: a finished study's learning-curve table, plots and baseline-vs-Hydranet statistics.

``hydralab report --storage URL --study NAME`` reads everything from the Optuna storage (trial
attributes plus each trial's ``test_predictions.csv``); nothing is retrained. The pieces:

- :mod:`~hydralab.reports.run_table`: trials (or a saved ``runs.csv``) -> one row per run,
  grid points no trial stands for included as ``missing``;
- :mod:`~hydralab.reports.tables`: runs -> pairs of runs -> the summary (one row per
  training-set size, then all pooled) and the per-pair table;
- :mod:`~hydralab.reports.stats`: per pair of trained models: Williams' test on Pearson r, the
  permutation test of the ICC difference, the scan bootstrap;
- :mod:`~hydralab.reports.verdict`: per method: the seed-aware interval, and the detectable
  difference;
- :mod:`~hydralab.reports.calibration`: the simulation that shows both hold their level
  (``benchmarks/calibration.py``);
- :mod:`~hydralab.reports.plots`: the learning curves and predictions-vs-labels PNGs;
- :mod:`~hydralab.reports.render`: the tables as markdown, CSV or LaTeX, with the power and
  convergence notes.

``hydralab report --runs runs.csv`` reads a saved report folder instead of a storage.

Nothing here imports torch or Lightning.
"""
