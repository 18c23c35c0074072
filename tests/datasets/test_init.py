"""The preparation package stands apart from the training input chain (its __init__ says why)."""

from __future__ import annotations

import subprocess
import sys


def test_preparing_a_dataset_loads_neither_the_input_chain_nor_torch() -> None:
    code = (
        "import sys\n"
        "import hydralab.datasets.layouts, hydralab.datasets.mask_labels\n"
        "import hydralab.datasets.synthetic\n"
        "chain = ('table', 'transforms', 'scans', 'sampler', 'datamodule', 'device_augment')\n"
        "loaded = [m for m in chain if 'hydralab.data.' + m in sys.modules]\n"
        "loaded += [m for m in ('torch', 'torchio', 'lightning') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
