"""Picture, label distributions and timing of the anatomy-like tasks (docs/builtin-data.md).

    .venv/bin/python benchmarks/builtin_anatomy.py [--size 24] [--n 500] [--out docs/images]

Draws ``--n`` scans per task with the generators ``make_dataset`` uses (seed 0, indices 0..n-1),
prints the label quantiles and the seconds per hundred scans (generation only, then a
100-scan ``make_dataset`` with its NIfTI writes), and saves ``builtin-anatomy.png``: the middle
axial slice through each of a few scans' lesions, and the label histograms.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from hydralab.datasets import anatomy
from hydralab.datasets.anatomy import ANATOMY_TASKS, FIELD_OF_VIEW, make_anatomy_scan
from hydralab.datasets.synthetic import SyntheticSpec, make_dataset, subject_rng

UNITS = {"pvs": "lesion count", "wmh": "lesion volume (mm$^3$)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=24)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args()
    scans = {}
    for task in ANATOMY_TASKS:
        make_anatomy_scan(subject_rng(0, task, 0), task, args.size)  # template prepared once
        start = time.perf_counter()
        scans[task] = [
            make_anatomy_scan(subject_rng(0, task, i), task, args.size) for i in range(args.n)
        ]
        per_100 = (time.perf_counter() - start) / args.n * 100
        anatomy._template.cache_clear()  # so the timing includes preparing the template
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            spec = SyntheticSpec(task, n_train=80, n_val=10, n_test=10, size=args.size)
            make_dataset(spec, folder)
            written = time.perf_counter() - start
        labels = np.array([scan.label for scan in scans[task]])
        quantiles = np.percentile(labels, [0, 10, 25, 50, 75, 90, 100])
        print(
            f"{task}: spacing {FIELD_OF_VIEW[task] / args.size:.2f} mm; "
            f"{per_100:.2f} s / 100 scans generated, {written:.2f} s for make_dataset of 100 "
            f"(template preparation and NIfTI writes included); label mean {labels.mean():.1f}, "
            f"sd {labels.std():.1f}, zeros {np.mean(labels == 0):.1%}; "
            f"quantiles 0/10/25/50/75/90/100 {np.round(quantiles, 1).tolist()}"
        )
    figure(scans, args.out / "builtin-anatomy.png")


def figure(scans: dict, path: Path, shown: int = 5) -> None:
    """A row of axial slices per task (lesion outline in red) and the label histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, shown + 1, figsize=(2.3 * (shown + 1), 5.0), layout="constrained")
    for row, task in enumerate(ANATOMY_TASKS):
        chosen = sorted(scans[task][:40], key=lambda scan: scan.label)
        chosen = [chosen[round(i)] for i in np.linspace(0, len(chosen) - 1, shown)]
        for column, scan in enumerate(chosen):
            ax = axes[row, column]
            weight = scan.lesions.sum(axis=(0, 1))
            z = int(np.argmax(weight)) if weight.any() else scan.image.shape[2] // 2
            ax.imshow(scan.image[:, :, z].T, origin="lower", cmap="gray")
            if scan.lesions[:, :, z].any():
                ax.contour(scan.lesions[:, :, z].T, levels=[0.5], colors="red", linewidths=0.8)
            ax.contour(scan.region[:, :, z].T, levels=[0.5], colors="cyan", linewidths=0.4)
            ax.set_title(f"{task} label {scan.label:.0f}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        labels = [scan.label for scan in scans[task]]
        ax = axes[row, shown]
        ax.hist(labels, bins=21 if task == "pvs" else 30, color="0.4")
        ax.set_xlabel(UNITS[task], fontsize=8)
        ax.set_ylabel("scans", fontsize=8)
        ax.tick_params(labelsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
