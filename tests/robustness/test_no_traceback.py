"""Every bad input of docs/robustness.md, through the command line: one line, exit 2, no traceback.

Each case is its own process running ``hydralab.cli.main`` exactly as the ``hydralab`` console
script does (``sys.exit(main())``, arguments from ``sys.argv``, its own stdout and stderr files).
Importing torch and Lightning takes most of a CLI start, so one driver process imports them once
and forks a child per case: the whole table runs in well under a minute on two cores. One case
also runs through the console script itself, to check the real entry point.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tests.helpers.scans import make_tiny_dataset

REPO = Path(__file__).resolve().parents[2]
BASELINE = REPO / "configs" / "blobs" / "baseline.yaml"

DRIVER = r"""
import json, os, sys, traceback
from hydralab.cli import main
import hydralab.training.runner  # the heavy imports, once, before forking

cases = json.load(open(sys.argv[1]))
results = {}
for case in cases:
    out = os.path.join(case["dir"], "out.txt")
    err = os.path.join(case["dir"], "err.txt")
    pid = os.fork()
    if pid == 0:
        with open(out, "w") as o, open(err, "w") as e:
            os.dup2(o.fileno(), 1)
            os.dup2(e.fileno(), 2)
        os.environ.update(case["env"])
        os.chdir(case["dir"])
        sys.argv = ["hydralab", *case["argv"]]
        try:
            code = main()
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        except BaseException:
            traceback.print_exc()  # what Python itself would print
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    results[case["id"]] = os.waitstatus_to_exitcode(status)
json.dump(results, open(sys.argv[2], "w"))
"""


def _fit(csv: Path, root: Path, *extra: str) -> list[str]:
    return [
        "fit",
        f"--config={BASELINE}",
        f"--data.csv={csv}",
        f"--tracking.root={root / 'runs'}",
        "--tracking.wandb_mode=disabled",
        "--trainer.max_steps=1",
        "--data.n_train=null",
        *extra,
    ]


def _dataset(root: Path, bad_scan=None, rows=None) -> Path:
    """A tiny dataset; ``bad_scan`` rewrites scan s03, ``rows`` edits the CSV's rows."""
    csv = make_tiny_dataset(root / "data", n=8, size=8)
    if bad_scan is not None:
        bad_scan(root / "data" / "images" / "s03.nii.gz")
    if rows is not None:
        table = pd.read_csv(csv)
        rows(table)
        table.to_csv(csv, index=False)
    return csv


def _nifti(shape: tuple[int, ...], value: float | None = None):
    def write(path: Path) -> None:
        array = np.random.default_rng(0).normal(100, 5, size=shape).astype(np.float32)
        if value is not None:
            array[...] = value
        nib.save(nib.Nifti1Image(array, np.eye(4)), path)

    return write


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def _set(row: int, column: str, value: Any):
    def edit(table: pd.DataFrame) -> None:
        table[column] = table[column].astype(object)
        table.loc[row, column] = value

    return edit


def _case_argv(case: str, d: Path) -> tuple[list[str], dict[str, str], str]:
    """The command line, extra environment and culprit (a string stderr must hold) of a case."""
    if case == "missing-scan":
        return _fit(_dataset(d, lambda p: p.unlink()), d), {}, "s03.nii.gz"
    if case == "corrupt-gzip":
        csv = _dataset(d, lambda p: p.write_bytes(b"\x1f\x8b" + b"garbage" * 20))
        return _fit(csv, d), {}, "cannot read scan"
    if case == "truncated-nifti":
        return _fit(_dataset(d, _truncate), d), {}, "s03.nii.gz"
    if case == "not-a-nifti":
        csv = _dataset(d, lambda p: p.write_bytes(gzip.compress(b"not a nifti" * 50)))
        return _fit(csv, d), {}, "s03.nii.gz"
    if case == "4d-scan":
        return _fit(_dataset(d, _nifti((8, 8, 8, 2))), d), {}, "2 volumes"
    if case == "2d-scan-with-data-shape":
        csv = _dataset(d, _nifti((8, 8)))
        return _fit(csv, d, "--data.shape=[8,8,8]"), {}, "s03.nii.gz (subject 's03') has shape"
    if case == "constant-scan":
        return _fit(_dataset(d, _nifti((8, 8, 8), 0.0)), d), {}, "s03.nii.gz"
    if case == "nan-voxels":
        return _fit(_dataset(d, _nifti((8, 8, 8), float("nan"))), d), {}, "NaN or infinite"
    if case == "different-shapes":
        return _fit(_dataset(d, _nifti((9, 8, 8))), d), {}, "data.shape"
    if case == "duplicate-subject":
        return _fit(_dataset(d, rows=_set(3, "subject", "s02")), d), {}, "'s02'"
    if case == "same-image-twice":
        csv = _dataset(d, rows=_set(3, "image", "images/s02.nii.gz"))
        return _fit(csv, d), {}, "s02.nii.gz"
    if case == "nan-label":
        csv = _dataset(d, rows=_set(3, "label", "nan"))  # a literal "nan", as pandas reads it
        return _fit(csv, d), {}, "line 5: label"
    if case == "csv-not-utf8":
        csv = d / "latin.csv"
        csv.write_text("image,label\nimágé.nii,1\n", encoding="latin-1")
        return _fit(csv, d), {}, "not UTF-8"
    if case == "missing-csv":
        return _fit(d / "nope.csv", d), {}, "nope.csv"
    if case == "unknown-config-key":
        config = d / "bad.yaml"
        config.write_text("model:\n  lrr: 1.0\n")
        return [*_fit(d / "x.csv", d), f"--config={config}"], {}, f"{config}: "
    if case == "config-wrong-type":
        config = d / "bad.yaml"
        config.write_text("model:\n  k: four\n")
        return [*_fit(d / "x.csv", d), f"--config={config}"], {}, f'{config}: Parser key "model.k"'
    if case == "config-bad-yaml":
        config = d / "bad.yaml"
        config.write_text("model:\n  lr: [1\n")
        return [*_fit(d / "x.csv", d), f"--config={config}"], {}, f"{config}: not valid YAML"
    if case == "missing-config":
        return [*_fit(d / "x.csv", d), f"--config={d / 'gone.yaml'}"], {}, "gone.yaml"
    if case == "unknown-override":
        return [*_fit(d / "x.csv", d), "--model.lrr=3"], {}, "--model.lrr=3"
    if case == "negative-lr":
        return [*_fit(d / "x.csv", d), "--model.lr=-1"], {}, "model.lr must be"
    if case == "output-not-writable":
        (d / "file").write_text("in the way")
        return ["make-data", "blobs", str(d / "file" / "blobs"), "--n-train", "2"], {}, "file"
    if case == "run-root-is-a-file":
        (d / "runs").write_text("in the way")
        return _fit(_dataset(d), d), {}, "--tracking.root"
    if case == "ckpt-last-without-a-run":
        argv = ["test", f"--config={BASELINE}", f"--data.csv={_dataset(d)}"]
        return [*argv, f"--tracking.root={d}", "--ckpt_path=last"], {}, "last.ckpt"
    if case == "garbage-checkpoint":
        ckpt = d / "garbage.ckpt"
        ckpt.write_bytes(b"not a checkpoint" * 10)
        argv = ["test", f"--config={BASELINE}", f"--data.csv={_dataset(d)}"]
        return [*argv, f"--tracking.root={d}", f"--ckpt_path={ckpt}"], {}, "garbage.ckpt"
    if case == "short-wandb-key":
        argv = _fit(_dataset(d), d)
        argv[argv.index("--tracking.wandb_mode=disabled")] = "--tracking.wandb_mode=online"
        env = {"WANDB_API_KEY": "tiny-key", "WANDB_BASE_URL": "http://127.0.0.1:9"}
        return argv, env, "WANDB_API_KEY"
    if case == "sweep-bad-set":
        return ["sweep", str(REPO / "sweeps" / "hpo.yaml"), "--set", "model.lr"], {}, "model.lr"
    if case == "sweep-unknown-set-key":
        argv = ["sweep", str(REPO / "sweeps" / "hpo.yaml"), "--set", "model.kk=3"]
        return [*argv, "--out", str(d)], {}, "--model.kk=3"
    if case == "sweep-unknown-space-key":
        sweep = d / "sweep.yaml"
        sweep.write_text(
            f"base_config: {BASELINE}\nstudy: s\nspace:\n  model.kk: [1, 2]\nn_trials: 2\n"
        )
        return ["sweep", str(sweep), "--out", str(d)], {}, "model.kk"
    if case == "sweep-data-not-made":
        # a fresh checkout: the built-in data (data/blobs, relative to the folder) is not there
        argv = ["sweep", str(REPO / "sweeps" / "learning_curve.yaml"), "--out", str(d)]
        return argv, {}, "dataset.csv"
    if case == "sweep-missing-file":
        return ["sweep", str(d / "nope.yaml")], {}, "nope.yaml"
    if case == "report-missing-storage":
        storage = f"sqlite:///{d / 'missing.db'}"
        return ["report", "--study", "s", "--storage", storage, "--out", str(d)], {}, "missing.db"
    raise AssertionError(case)


CASES = [
    "missing-scan",
    "corrupt-gzip",
    "truncated-nifti",
    "not-a-nifti",
    "4d-scan",
    "2d-scan-with-data-shape",
    "constant-scan",
    "nan-voxels",
    "different-shapes",
    "duplicate-subject",
    "same-image-twice",
    "nan-label",
    "csv-not-utf8",
    "missing-csv",
    "unknown-config-key",
    "config-wrong-type",
    "config-bad-yaml",
    "missing-config",
    "unknown-override",
    "negative-lr",
    "output-not-writable",
    "run-root-is-a-file",
    "ckpt-last-without-a-run",
    "garbage-checkpoint",
    "short-wandb-key",
    "sweep-bad-set",
    "sweep-unknown-set-key",
    "sweep-unknown-space-key",
    "sweep-data-not-made",
    "sweep-missing-file",
    "report-missing-storage",
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, str]]:
    """Run every case once: (exit code, stderr, culprit) by case."""
    root = tmp_path_factory.mktemp("bad_inputs")
    cases, culprits = [], {}
    for case in CASES:
        folder = root / case
        folder.mkdir()
        argv, env, culprit = _case_argv(case, folder)
        culprits[case] = culprit
        env = {"WANDB_SILENT": "true", "WANDB_DIR": str(folder), **env}
        cases.append({"id": case, "argv": argv, "env": env, "dir": str(folder)})
    (root / "cases.json").write_text(json.dumps(cases))
    driver_env = {**os.environ, "PYTHONPATH": str(REPO)}
    for variable in ("HYDRALAB_DEBUG", "HYDRALAB_STORAGE"):
        driver_env.pop(variable, None)
    subprocess.run(
        [sys.executable, "-c", DRIVER, str(root / "cases.json"), str(root / "codes.json")],
        check=True,
        cwd=root,
        env=driver_env,
        timeout=300,
    )
    codes = json.loads((root / "codes.json").read_text())
    return {
        case: (codes[case], (root / case / "err.txt").read_text(), culprits[case]) for case in CASES
    }


@pytest.mark.parametrize("case", CASES)
def test_a_bad_input_is_one_line_naming_the_culprit_without_a_traceback(
    outcomes: dict[str, tuple[int, str, str]], case: str
):
    code, err, culprit = outcomes[case]
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("hydralab: error: ")]
    assert code == 2 and len(errors) == 1, err
    assert culprit in errors[0], err


def test_the_console_script_prints_one_line_too(tmp_path: Path):
    """The installed ``hydralab`` entry point, not a fork: the same one line and exit code 2."""
    config = tmp_path / "bad.yaml"
    config.write_text("model:\n  lrr: 1.0\n")
    script = Path(sys.executable).parent / "hydralab"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "hydralab.cli"]
    result = subprocess.run(
        [*command, "fit", f"--config={BASELINE}", f"--config={config}"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HYDRALAB_DEBUG": "0"},
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"hydralab: error: {config}: Subcommand 'fit' does not accept option 'model.lrr'\n"
    )
