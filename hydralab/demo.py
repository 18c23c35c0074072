"""``make demo``: baseline and Hydranet trained on the same built-in scans, printed side by side."""

from __future__ import annotations

import time
from pathlib import Path

from hydralab.data.sets import METHODS
from hydralab.datasets.synthetic import SyntheticSpec, make_dataset
from hydralab.training.runner import quiet_environment, run_cli

COLUMNS = (("icc_c1", "ICC(3,1)"), ("icc_a1", "ICC(2,1)"), ("mse", "MSE"), ("mae", "MAE"))


def run_demo(data: str, configs: str, root: str = "runs") -> list[dict[str, object]]:
    """Make the data if absent, fit both methods, test their best checkpoints, print a table."""
    quiet_environment()
    csv = Path(data) / "dataset.csv"
    if not csv.is_file():
        print(f"writing the built-in blob-count dataset to {data}")
        make_dataset(SyntheticSpec(task="blobs"), data)
    rows = []
    for method in METHODS:
        started = time.perf_counter()
        cli = run_cli(
            [
                "fit",
                f"--config={Path(configs) / f'{method}.yaml'}",
                f"--data.csv={csv}",
                f"--tracking.root={root}",
                f"--tracking.name=demo-{method}",
            ]
        )
        rows.append(
            {
                "method": method,
                "n_train": len(cli.datamodule.scans["train"]),
                "metrics": {k: cli.test_metrics.get(f"test/{k}", float("nan")) for k, _ in COLUMNS},
                "seconds": time.perf_counter() - started,
                "run_dir": cli.run_dir,
            }
        )
    print(format_table(rows))
    return rows


def format_table(rows: list[dict[str, object]]) -> str:
    header = "| method | n_train | " + " | ".join(t for _, t in COLUMNS) + " | time | run folder |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 4)]
    for row in rows:
        values = " | ".join(f"{row['metrics'][k]:.3f}" for k, _ in COLUMNS)
        lines.append(
            f"| {row['method']} | {row['n_train']} | {values} | {row['seconds']:.0f} s "
            f"| {row['run_dir']} |"
        )
    lines.append(
        "\nEach run folder holds config.yaml, metrics.csv, checkpoints/, test_predictions.csv and "
        "wandb/ (an offline W&B run: `wandb sync <folder>/wandb/offline-run-*` uploads it)."
    )
    return "\n".join(lines)
