"""``hydralab`` command line: a light dispatcher that imports the heavy libraries only when needed.

``fit | validate | test | predict`` go to the Lightning CLI (``hydralab fit --help``);
``make-data`` writes the built-in synthetic datasets; ``demo`` trains a baseline and a Hydranet
model on the same scans and prints both; ``sweep`` runs or resumes an Optuna study from a sweep
file (see :mod:`hydralab.sweeps`); ``report`` writes a study's learning-curve table, plots and
statistics (see :mod:`hydralab.reports`).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from hydralab.errors import mask_secrets, name_config_file, user_error

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
DEBUG_FLAG = "--debug"
DEBUG_ENV = "HYDRALAB_DEBUG"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hydralab",
        description="Hydranet experiments: baseline vs set-sum training of 3D scan regressors.",
        epilog="Lightning commands take --config FILE and --key.sub=value overrides; "
        "see `hydralab fit --help`.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.add_argument(
        DEBUG_FLAG,
        action="store_true",
        help=f"show the full traceback of an error (or set {DEBUG_ENV}=1); give it first",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, text in (
        ("fit", "train a model, then test its best checkpoint"),
        ("validate", "evaluate a checkpoint on the validation split"),
        ("test", "evaluate a checkpoint on the test split"),
        ("predict", "predict a CSV or a folder of NIfTI scans from a checkpoint"),
    ):
        commands.add_parser(name, help=text, add_help=False)

    make = commands.add_parser("make-data", help="write a built-in synthetic dataset")
    make.add_argument(
        "task",
        choices=("blobs", "lesions", "pvs", "wmh"),
        help="blobs (count), lesions (volume), or on the MNI152 template pvs (count), wmh (volume)",
    )
    make.add_argument("out", help="output folder (gets dataset.csv and images/)")
    make.add_argument("--n-train", type=int, default=30, help="training scans (default 30)")
    make.add_argument("--n-val", type=int, default=50, help="validation scans (default 50)")
    make.add_argument(
        "--n-test", type=int, default=500, help="test scans (default 500: a tight test ICC)"
    )
    make.add_argument(
        "--size", type=int, default=16, help="cube side in voxels (default 16, a CPU budget)"
    )
    make.add_argument(
        "--seed", type=int, default=0, help="the dataset's seed: same seed, same scans (default 0)"
    )
    make.add_argument(
        "--difficulty",
        type=float,
        default=2.0,
        help="scale of the nuisances: anatomy, texture, bias field, noise (default 2)",
    )

    table = commands.add_parser(
        "make-table",
        help="write a dataset CSV from your scans and lesion masks",
        description="Find every scan and its lesion mask in ROOT, label each scan with its "
        "lesion volume or count, and write OUT (subject,image,label,mask; paths relative to "
        "OUT). Layouts: wmh-challenge (<site>/<id>/pre/FLAIR.nii.gz + <site>/<id>/wmh.nii.gz), "
        "bids (sub-*/[ses-*/]anat/*_FLAIR.nii.gz + derivatives/<pipeline>/...), flat "
        "(images/NAME + masks/NAME).",
    )
    table.add_argument("root", help="the dataset's top folder")
    table.add_argument(
        "--layout",
        required=True,
        choices=("wmh-challenge", "bids", "flat"),
        help="how ROOT is organised (see above)",
    )
    table.add_argument("--out", required=True, help="the CSV to write, e.g. ROOT/dataset.csv")
    table.add_argument(
        "--label", choices=("volume", "count"), default="volume", help="default volume"
    )
    table.add_argument(
        "--units", choices=("voxels", "mm3"), default="voxels", help="volume units (default voxels)"
    )
    table.add_argument(
        "--mask-values",
        default="1",
        help="mask values that are lesion, comma-separated (default 1; the WMH challenge's 2, "
        "other pathology, is then ignored)",
    )
    table.add_argument(
        "--connectivity",
        type=int,
        choices=(6, 18, 26),
        default=26,
        help="voxel neighbourhood of a connected lesion (default 26, as the WMH challenge)",
    )
    table.add_argument(
        "--min-size",
        type=int,
        default=1,
        help="drop lesions of fewer voxels from the count and the volume (default 1: keep all)",
    )
    table.add_argument(
        "--affine-tolerance",
        type=float,
        default=None,  # hydralab.data.nifti.AFFINE_TOLERANCE_MM, read when make-table runs
        help="largest mask/image affine difference in mm (default 0.001)",
    )
    table.add_argument("--image-suffix", help="bids: image name ending before .nii (_FLAIR)")
    table.add_argument(
        "--mask-pattern",
        help="bids: mask file glob; {entities} is the image name up to --image-suffix "
        "(default {entities}_label-WMH_mask.nii.gz)",
    )
    table.add_argument("--pipeline", help="bids: folder under derivatives/ (default: the only one)")
    table.add_argument("--images-dir", help="flat: the images folder under ROOT (default images)")
    table.add_argument("--masks-dir", help="flat: the masks folder under ROOT (default masks)")

    demo = commands.add_parser(
        "demo",
        help="train baseline and Hydranet on the built-in PVS-count data, print the report",
        description="Works from any folder: it writes data/ and runs/ into the current one "
        "and uses the configs shipped with hydralab. Make the built-in pvs dataset if absent, "
        "train both methods to their "
        "validation plateau (a 4-minute cap per run), test them on 500 scans and print the "
        "report: ICC, MSE, the difference with its interval, and the power line.",
    )
    demo.add_argument("--data", default="data/pvs", help="dataset folder (made if absent)")
    demo.add_argument(
        "--configs",
        default="pvs",
        help="folder with baseline.yaml and hydranet.yaml, or a packaged one's name "
        "(default pvs: the shipped configs/pvs)",
    )
    demo.add_argument("--root", default="runs/demo", help="where the runs and report go")
    demo.add_argument("--seeds", type=int, default=1, help="training seeds per method (default 1)")
    demo.add_argument(
        "--max-steps",
        type=int,
        help="train each run for exactly this many optimiser steps instead of to its plateau "
        "(a small number gives a quick end-to-end look)",
    )
    demo.add_argument(
        "--max-time",
        default="00:00:04:00",
        help="wall-clock cap per run, DD:HH:MM:SS (default 00:00:04:00)",
    )

    sweep = commands.add_parser(
        "sweep",
        help="run or resume an Optuna study from a sweep file",
        description="Run a sweep to completion, or resume it: finished trials are not rerun, "
        "interrupted ones are. Start the same command on several machines with one --storage "
        "to share the work.",
    )
    sweep.add_argument(
        "file",
        help="sweep file, or the name of a packaged one (learning_curve, hpo, ...: hydralab's "
        "sweeps/ folder)",
    )
    sweep.add_argument(
        "--storage",
        help="SQLAlchemy URL (sqlite:///x.db, postgresql://user@host/db) or journal file "
        "(journal:///abs/x.log or x.log); default $HYDRALAB_STORAGE, else OUT/STUDY/study.db",
    )
    sweep.add_argument("--study", help="study name (default: the file's `study`)")
    sweep.add_argument("--n-trials", type=int, help="trials in total (default: the file's)")
    sweep.add_argument(
        "--workers", type=int, default=1, help="worker processes, or SLURM jobs (default 1)"
    )
    sweep.add_argument(
        "--launcher",
        choices=("local", "slurm"),
        default="local",
        help="local: the workers run here; slurm: each is a job of a SLURM array, shaped by "
        "the sweep file's slurm: block (docs/cluster.md)",
    )
    sweep.add_argument(
        "--gpus-per-worker",
        type=float,
        help="GPUs each worker gets: a whole number, a share (0.5: two workers per GPU) or 0 "
        "(CPU only); default 1 where there are GPUs",
    )
    sweep.add_argument(
        "--slurm",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a key of the sweep file's slurm: block, e.g. --slurm partition=gpu",
    )
    sweep.add_argument(
        "--status", action="store_true", help="show the study's SLURM jobs and trial counts"
    )
    sweep.add_argument("--out", default="runs/sweeps", help="sweeps folder (default runs/sweeps)")
    sweep.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="add a fixed override (value read as YAML), e.g. --set trainer.max_steps=50; "
        "part of the study's definition, so give it again to resume",
    )

    report = commands.add_parser(
        "report",
        help="learning-curve table, plots and baseline-vs-Hydranet statistics of a study",
        description="Read a study's trials and test predictions from its storage and write the "
        "table, runs.csv, learning_curves.png and predictions_vs_labels.png.",
    )
    report.add_argument(
        "--storage",
        help="the study's storage URL or journal; default $HYDRALAB_STORAGE, else "
        "runs/sweeps/STUDY/study.db (where `hydralab sweep` puts it)",
    )
    report.add_argument(
        "--runs",
        help="report a saved runs.csv (an earlier report's, with its predictions) instead of "
        "a storage; prediction paths are relative to it",
    )
    report.add_argument("--study", required=True, help="study name")
    report.add_argument(
        "--format",
        choices=("md", "csv", "latex"),
        default="md",
        help="the table's format (default md)",
    )
    report.add_argument("--out", default="reports", help="output folder (default reports)")
    report.add_argument("--n-resamples", type=int, default=2000, help="bootstrap resamples")
    report.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    report.add_argument(
        "--wandb",
        action="store_true",
        help="also log the tables and figures to a W&B run in the study's group",
    )
    report.add_argument(
        "--wandb-mode",
        choices=("offline", "online"),
        default="offline",
        help="offline (default; `wandb sync` uploads it later) or online (needs WANDB_API_KEY)",
    )
    report.add_argument("--project", default="hydralab", help="W&B project (default hydralab)")

    dashboard = commands.add_parser(
        "dashboard",
        help="serve optuna-dashboard on a sweep's storage, on 127.0.0.1",
        description="Show studies in optuna-dashboard: each trial's validation curve (live "
        "while it trains), its prediction plot and CSV, and a report's figures. Served on "
        "127.0.0.1 only; Ctrl-C stops it.",
    )
    dashboard.add_argument(
        "--study", help="the study to open (its storage: runs/sweeps/STUDY/study.db)"
    )
    dashboard.add_argument(
        "--storage",
        help="the storage URL or journal file; default $HYDRALAB_STORAGE, else "
        "runs/sweeps/STUDY/study.db, else the only runs/sweeps/*/study.db",
    )
    dashboard.add_argument(
        "--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080)"
    )
    dashboard.add_argument(
        "--artifacts",
        help="the artifact folder (default: the one the sweep recorded, <sweep>/artifacts)",
    )
    return parser


def package_version() -> str:
    """The installed hydralab's version, from its package metadata (pyproject.toml)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hydralab")
    except PackageNotFoundError:  # imported from a checkout that was never installed
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; an error is one line ``hydralab: error: ...`` and exit code 2.

    User errors and environment faults (``ValueError``, ``OSError``, YAML and W&B errors, a
    non-finite loss, running out of memory) print their message alone: it names the culprit,
    and a traceback would bury it. Ctrl-C exits with 130 and says how to resume. Any other
    exception is a bug in hydralab: its traceback is printed, with a line asking to report it.
    ``--debug`` (first) or ``HYDRALAB_DEBUG=1`` lets every exception through with its traceback.
    """
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes")
    if argv[:1] == [DEBUG_FLAG]:
        debug, argv = True, argv[1:]
        if from_command_line:  # LightningCLI reads sys.argv itself
            sys.argv = [sys.argv[0], *argv]
    try:
        return _run(argv, from_command_line)
    except KeyboardInterrupt as interrupt:
        if debug:
            raise
        hint = getattr(interrupt, "resume_hint", None)  # RunInterrupted knows its last.ckpt
        print(f"hydralab: {hint() if hint else 'interrupted'}", file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            raise
        message = user_error(error)
        if message is not None:
            print(f"hydralab: error: {mask_secrets(message)}", file=sys.stderr)
            return 2
        traceback.print_exc()
        print(
            f"hydralab: unexpected {type(error).__name__} (traceback above): if your input "
            "looks right, this is a bug in hydralab; please report it with the traceback",
            file=sys.stderr,
        )
        return 1


def _run(argv: list[str], from_command_line: bool) -> int:
    if argv and argv[0] in LIGHTNING_COMMANDS:
        from hydralab.training.runner import quiet_environment, run_cli

        quiet_environment()
        try:
            # LightningCLI reads sys.argv itself; passing it too would trigger its double-args
            # warning. A rejected config raises rather than print ~100 lines of usage.
            run_cli(None if from_command_line else argv, exit_on_error=False, summary=True)
        except ValueError as error:
            named = name_config_file(str(error), argv[1:])
            if named == str(error):
                raise
            raise ValueError(named) from error
        return 0
    args = _parser().parse_args(argv)
    if args.command == "make-data":
        from hydralab.datasets.synthetic import SyntheticSpec, make_dataset

        spec = SyntheticSpec(
            task=args.task,
            n_train=args.n_train,
            n_val=args.n_val,
            n_test=args.n_test,
            size=args.size,
            seed=args.seed,
            difficulty=args.difficulty,
        )
        print(make_dataset(spec, args.out))
        return 0
    if args.command == "make-table":
        return _make_table(args)
    if args.command == "demo":
        from hydralab.demo import run_demo

        run_demo(
            args.data,
            args.configs,
            args.root,
            seeds=args.seeds,
            max_steps=args.max_steps,
            max_time=args.max_time,
        )
        return 0
    if args.command == "sweep":
        return _sweep(args)
    if args.command == "report":
        from hydralab.reports.render import write_report

        storage = None if args.runs else _report_storage(args)
        text, files = write_report(
            storage, args.study, args.format, args.out, args.n_resamples, args.seed, args.runs
        )
        print(text)
        print("wrote " + ", ".join(str(path) for path in files))
        if storage is not None:
            from hydralab.sweeps.artifacts import upload_report_figures

            if uploaded := upload_report_figures(storage, args.study, files):
                print(f"uploaded {uploaded} figure(s) to the study's Optuna artifacts")
        if args.wandb:
            from hydralab.reports.wandb_upload import log_report_to_wandb

            run = log_report_to_wandb(
                args.study, files, args.out, project=args.project, mode=args.wandb_mode
            )
            sync = f"; upload it with `wandb sync {run}`" if args.wandb_mode == "offline" else ""
            print(f"logged the report to the W&B run in {run}{sync}")
        return 0
    if args.command == "dashboard":
        from hydralab.sweeps.dashboard import find_storage, serve_dashboard

        storage = find_storage(args.storage, args.study)
        serve_dashboard(storage, args.study, args.port, args.artifacts)
        return 0
    _parser().print_help()
    return 0


def _report_storage(args: argparse.Namespace) -> str:
    """The storage a report reads: the one given, the environment's, or the sweep's default."""
    from hydralab.sweeps.storage import (
        DEFAULT_ROOT,
        STORAGE_ENV,
        default_storage_url,
        resolve_storage_url,
    )

    sweep_dir = Path(DEFAULT_ROOT) / args.study
    url = resolve_storage_url(args.storage, sweep_dir)
    if url == default_storage_url(sweep_dir) and not (sweep_dir / "study.db").is_file():
        raise ValueError(
            f"no --storage, no ${STORAGE_ENV}, and no {sweep_dir / 'study.db'}: "
            "give the study's storage URL with --storage"
        )
    return url


def _make_table(args: argparse.Namespace) -> int:
    from hydralab.data.nifti import AFFINE_TOLERANCE_MM
    from hydralab.datasets.layouts import make_table
    from hydralab.datasets.mask_labels import LabelSpec, parse_mask_values

    spec = LabelSpec(
        kind=args.label,
        units=args.units,
        values=parse_mask_values(args.mask_values),
        connectivity=args.connectivity,
        min_size=args.min_size,
    )
    naming = ("image_suffix", "mask_pattern", "pipeline", "images_dir", "masks_dir")
    options = {name: getattr(args, name) for name in naming if getattr(args, name) is not None}
    tolerance = args.affine_tolerance
    tolerance = AFFINE_TOLERANCE_MM if tolerance is None else tolerance
    out, rows = make_table(args.layout, args.root, args.out, spec, options, tolerance)
    print(f"wrote {rows} scans to {out}; label = {spec.describe()}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    import yaml

    from hydralab.resources import find_file
    from hydralab.sweeps.spec import load_spec

    given: dict[str, dict[str, object]] = {"--set": {}, "--slurm": {}}
    for flag, items in (("--set", args.set), ("--slurm", args.slurm)):
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"{flag} {item!r}: expected KEY=VALUE")
            try:
                given[flag][key] = yaml.safe_load(value)
            except yaml.YAMLError as error:
                problem = getattr(error, "problem", None) or type(error).__name__
                raise ValueError(f"{flag} {item!r}: not valid YAML ({problem})") from None
    spec = load_spec(find_file("sweeps", args.file)).with_changes(
        args.study, args.n_trials, given["--set"], slurm=given["--slurm"]
    )
    if args.status:
        from hydralab.sweeps.slurm import status

        print(status(spec, args.out, args.storage))
        return 0
    if args.launcher == "slurm":
        from hydralab.sweeps.slurm import submit_sweep

        submit_sweep(spec, args.out, args.storage, args.workers, args.gpus_per_worker)
        return 0

    from hydralab.sweeps.study import run_sweep

    run_sweep(
        spec,
        out=args.out,
        storage_url=args.storage,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
