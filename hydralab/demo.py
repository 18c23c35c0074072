"""``hydralab demo``: baseline and Hydranet on the built-in PVS-count scans, then the report.

The project's main job on its default data: make the ``pvs`` dataset (MNI152 anatomy, 30
training, 50 validation and 500 test scans) if it is absent, train both methods on the same
scans with the same stopping rule (to the validation plateau, ``configs/plateau.yaml``, with a
wall-clock cap per run so the demo fits a CPU budget), and print the report that a sweep gets:
test ICC and MSE, ΔICC with its interval, the power line and the figures' paths.

Each run shows its own step bar (steps toward the cap, ETA, latest validation ICC); a line
before it says which run of how many it is.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd

from hydralab.data.sets import METHODS
from hydralab.datasets.synthetic import SyntheticSpec, make_dataset
from hydralab.reports.render import write_report
from hydralab.reports.run_table import TEST_ICC, TEST_MSE
from hydralab.resources import packaged_folder
from hydralab.sweeps.objective import stopping_attrs
from hydralab.sweeps.trials import STEPS, TEST_PREDICTIONS
from hydralab.training.outputs import TEST_PREDICTIONS as PREDICTIONS_CSV
from hydralab.training.runner import quiet_environment, run_cli

DEMO_TASK = "pvs"
STUDY = "demo"
MAX_TIME = "00:00:04:00"
"""Per run: Hydranet leaves its plateau near step 3,500 here, which 2 CPU cores reach in about
2 minutes; a run stopped by this cap says so (``stop_reason: max_time``)."""


def run_demo(
    data: str | Path = "data/pvs",
    configs: str | Path = "pvs",
    root: str | Path = "runs/demo",
    seeds: int = 1,
    max_steps: int | None = None,
    max_time: str = MAX_TIME,
    plateau: str | Path | None = "plateau.yaml",
) -> pd.DataFrame:
    """Make the data if absent, fit both methods for each seed, write and print the report.

    ``configs`` is a folder, else the name of a packaged one (``pvs``: the shipped
    ``configs/pvs``), so the demo runs from any folder; ``data`` and ``root`` are relative to
    the working directory. ``plateau`` is the stopping rule's config, relative to the parent of
    ``configs``. ``max_steps`` trains each run for exactly that many steps, without the rule
    (a quick look, or a test). Returns the runs table the report was made from.
    """
    quiet_environment()
    configs = Path(configs)
    if not configs.is_dir() and (packaged_folder("configs") / configs).is_dir():
        configs = packaged_folder("configs") / configs
    csv = Path(data) / "dataset.csv"
    if not csv.is_file():
        print(f"writing the built-in {DEMO_TASK} dataset to {data} (about 10 s)", flush=True)
        make_dataset(SyntheticSpec(task=DEMO_TASK, size=24), data)
    plan = [(seed, method) for seed in range(seeds) for method in METHODS]
    rows, seconds = [], 0.0
    for index, (seed, method) in enumerate(plan, start=1):
        print(f"\n[run {index}/{len(plan)}] {method}, seed {seed}", flush=True)
        started = time.perf_counter()
        args = ["fit", f"--config={configs / f'{method}.yaml'}"]
        if plateau is not None and max_steps is None:
            args.append(f"--config={configs.parent / plateau}")
        args += [
            f"--data.csv={csv}",
            f"--seed_everything={seed}",
            f"--data.seed={seed}",
            f"--trainer.max_time={max_time}",
            f"--tracking.root={root}",
            f"--tracking.name={method}-s{seed}",
        ]
        if max_steps is not None:
            args.append(f"--trainer.max_steps={max_steps}")
        cli = run_cli(args, summary=True)
        rows.append(_run_row(cli, method, seed))
        seconds += time.perf_counter() - started
    runs = pd.DataFrame(rows)
    out = Path(root) / "report"
    out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out / "runs.csv", index=False)
    text, files = write_report(None, STUDY, out=out, runs_csv=out / "runs.csv")
    print("\n" + text)
    print("wrote " + ", ".join(str(path) for path in files))
    print(
        f"\n{len(plan)} runs in {seconds / 60:.1f} min; each run folder ({root}/*) holds its "
        "config, metrics, checkpoints, predictions and an offline W&B run."
    )
    return runs


def _run_row(cli: Any, method: str, seed: int) -> dict[str, Any]:
    """One run as a row of the report's runs table: the columns a sweep's trial would give
    (:func:`~hydralab.reports.run_table.runs_from_csv` reads every other column as a key)."""
    metrics = cli.test_metrics
    return {
        "number": None,
        "state": "complete",
        "method": method,
        "seed": seed,
        "data.n_train": len(cli.datamodule.scans["train"]),
        TEST_ICC: float(metrics.get("test/icc_c1", float("nan"))),
        TEST_MSE: float(metrics.get("test/mse", float("nan"))),
        STEPS: int(cli.trainer.global_step),
        **stopping_attrs(cli),
        TEST_PREDICTIONS: str(Path(cli.run_dir).resolve() / PREDICTIONS_CSV),
    }
