"""Dataset preparation: writing a dataset CSV and its NIfTI files, before any training.

``synthetic`` writes the built-in datasets (``hydralab make-data``); ``layouts`` and
``mask_labels`` turn a folder of scans and lesion masks into a CSV (``hydralab make-table``).

Why a package of its own, beside :mod:`hydralab.data` rather than inside it: ``hydralab.data``
is the training input chain (table -> transforms -> scans -> sampler -> data module), which
reads datasets and pulls in torch, TorchIO and Lightning; this package writes them and needs
none of those. The two share only the dataset files' contract, kept in
:mod:`hydralab.data.nifti` (``DatasetError``, the split names, NIfTI naming and reading, the
mask-on-grid check), which imports neither side. So preparing a dataset never loads the training
stack, and nothing in the input chain imports from here.
"""
