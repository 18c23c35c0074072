"""hydralab: baseline and Hydranet regressors trained, swept and compared on 3D scans.

The package follows the data flow, each layer importing only those before it:
:mod:`~hydralab.datasets` (making datasets) and :mod:`~hydralab.data` (the training input chain)
→ :mod:`~hydralab.models` (the base regressor f and the set-sum g) → :mod:`~hydralab.training`
(the LightningModule, callbacks, checkpoints, the CLI) → :mod:`~hydralab.sweeps` (Optuna studies)
→ :mod:`~hydralab.reports` (tables, statistics, the verdict) → :mod:`hydralab.cli`.
"""
