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
    make.add_argument("--size", type=int, default=16, help="cube side in voxels")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--difficulty", type=float, default=2.0, help="nuisance scale")

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
    table.add_argument("--layout", required=True, choices=("wmh-challenge", "bids", "flat"))
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

    demo = commands.add_parser("demo", help="train baseline and Hydranet, print both")
    demo.add_argument("--data", default="data/blobs", help="dataset folder (made if absent)")
    demo.add_argument("--configs", default="configs/blobs", help="folder with the two configs")
    demo.add_argument("--root", default="runs", help="where the runs go")

    sweep = commands.add_parser(
        "sweep",
        help="run or resume an Optuna study from a sweep file",
        description="Run a sweep to completion, or resume it: finished trials are not rerun, "
        "interrupted ones are. Start the same command on several machines with one --storage "
        "to share the work.",
    )
    sweep.add_argument("file", help="sweep file, e.g. sweeps/learning_curve.yaml")
    sweep.add_argument(
        "--storage",
        help="SQLAlchemy URL (sqlite:///x.db, postgresql://user@host/db) or journal file "
        "(journal:///abs/x.log or x.log); default $HYDRALAB_STORAGE, else OUT/STUDY/study.db",
    )
    sweep.add_argument("--study", help="study name (default: the file's `study`)")
    sweep.add_argument("--n-trials", type=int, help="trials in total (default: the file's)")
    sweep.add_argument("--workers", type=int, default=1, help="local worker processes")
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
    report.add_argument("--format", choices=("md", "csv", "latex"), default="md")
    report.add_argument("--out", default="reports", help="output folder (default reports)")
    report.add_argument("--n-resamples", type=int, default=2000, help="bootstrap resamples")
    report.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    return parser


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
            run_cli(None if from_command_line else argv, exit_on_error=False)
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

        run_demo(args.data, args.configs, args.root)
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

    from hydralab.sweeps.spec import load_spec

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        try:
            overrides[key] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            problem = getattr(error, "problem", None) or type(error).__name__
            raise ValueError(f"--set {item!r}: not valid YAML ({problem})") from None
    spec = load_spec(args.file).with_changes(args.study, args.n_trials, overrides)

    from hydralab.sweeps.study import run_sweep

    run_sweep(spec, out=args.out, storage_url=args.storage, workers=args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
