"""The training input chain: table -> transforms -> scans -> sampler -> datamodule.

``nifti`` holds what this chain shares with the dataset writers in :mod:`hydralab.datasets`
(``DatasetError``, split names, NIfTI naming and reading, the mask-on-grid check); ``sets``
holds the set rules every layer asks.
"""
