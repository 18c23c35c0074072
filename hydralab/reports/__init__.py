"""Reports: a finished study's learning-curve table, plots and baseline-vs-Hydranet statistics.

``hydralab report --storage URL --study NAME`` reads everything from the Optuna storage (trial
attributes plus each trial's ``test_predictions.csv``); nothing is retrained. The pieces:

- :mod:`~hydralab.reports.tables`: trials -> one row per run -> the summary table;
- :mod:`~hydralab.reports.stats`: Williams' test and a paired bootstrap of the ICC difference;
- :mod:`~hydralab.reports.plots`: the learning curves and predictions-vs-labels PNGs;
- :mod:`~hydralab.reports.render`: the table as markdown, CSV or LaTeX.

Nothing here imports torch or Lightning.
"""
