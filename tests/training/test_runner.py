"""The runner's own contract with Python callers: rejected configs, run folders."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from hydralab.data.nifti import DatasetError
from hydralab.training.runner import ConfigRejected, check_config, run_cli

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model.k=abc"], "Parser key \"model.k\": Expected a <class 'int'>. Got value: abc"),
        (["--model.nope=1"], "unrecognized arguments: --model.nope=1"),
        (["--model.method=foo"], 'Parser key "model.method": Expected a typing.Literal'),
    ],
)
def test_a_rejected_config_raises_its_one_line_error(
    tmp_path: Path, capsys, extra: list[str], message: str
):
    args = [
        "fit",
        f"--config={CONFIGS / 'blobs' / 'baseline.yaml'}",
        f"--tracking.root={tmp_path}",
        *extra,
    ]
    with pytest.raises(ConfigRejected) as caught:
        run_cli(args, exit_on_error=False)
    text = str(caught.value)
    assert text.startswith(message) and "\n" not in text
    assert isinstance(caught.value, ValueError)
    assert "usage:" not in capsys.readouterr().err  # nothing printed for the caller to scrape
    assert not any(tmp_path.iterdir())  # rejected before any run folder was claimed

    with pytest.raises(SystemExit) as exited:  # the command line's convention is unchanged
        run_cli(args)
    assert exited.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_a_missing_config_file_is_rejected(tmp_path: Path):
    with pytest.raises(ConfigRejected, match="missing.yaml: no such file"):
        run_cli(["fit", f"--config={tmp_path / 'missing.yaml'}"], exit_on_error=False)


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_evaluating_without_a_checkpoint_is_refused(tmp_path: Path, subcommand: str):
    """Without ``--ckpt_path`` these would report an untrained model's numbers as results."""
    args = [subcommand, f"--config={CONFIGS / 'blobs' / 'baseline.yaml'}"]
    with pytest.raises(ConfigRejected, match=f"^{subcommand} needs --ckpt_path"):
        run_cli([*args, f"--tracking.root={tmp_path}"], exit_on_error=False)
    assert not any(tmp_path.iterdir())


# -- check_config: a sweep's grid points checked before any trial ------------------------------


def _fit_args(csv: Path, root: Path, *extra: str) -> list[str]:
    return [
        "fit",
        f"--config={CONFIGS / 'blobs' / 'hydranet.yaml'}",
        f"--data.csv={csv}",
        "--data.n_train=null",
        f"--tracking.root={root}",
        *extra,
    ]


def test_check_config_passes_a_good_config_and_writes_nothing(tmp_path: Path, tiny_csv: Path):
    root = tmp_path / "runs"
    check_config(_fit_args(tiny_csv, root, "--model.k=2", "--model.p=0.2"))
    started = time.perf_counter()
    check_config(_fit_args(tiny_csv, root))
    assert time.perf_counter() - started < 2.0  # a sweep checks every grid point
    assert not root.exists()  # no run folder, no W&B run, no checkpoint
    assert not (tmp_path / "wandb").exists()


@pytest.mark.parametrize(
    ("extra", "error", "named"),
    [
        (["--model.kk=3"], ConfigRejected, "--model.kk=3"),
        (["--model.k=four"], ConfigRejected, 'Parser key "model.k"'),
        (["--data.batch_size=3"], ValueError, "batch_size=3"),  # not a multiple of k = 4
        (["--model.p=1.5"], ValueError, "p (probability of a zero slot)"),
    ],
)
def test_check_config_names_the_bad_key(
    tmp_path: Path, tiny_csv: Path, extra: list[str], error: type, named: str
):
    root = tmp_path / "runs"
    with pytest.raises(error) as caught:
        check_config(_fit_args(tiny_csv, root, *extra))
    assert named in str(caught.value) and "\n" not in str(caught.value)
    assert not root.exists()


def test_check_config_reads_the_dataset_table(tmp_path: Path, tiny_csv: Path):
    missing = tmp_path / "missing.csv"
    with pytest.raises(DatasetError, match=str(missing)):
        check_config(_fit_args(missing, tmp_path / "runs"))
    table = pd.read_csv(tiny_csv)
    table.loc[3, "label"] = float("nan")  # a bad row fails the check, before any scan is read
    table.to_csv(tiny_csv, index=False)
    with pytest.raises(DatasetError, match=str(tiny_csv)):
        check_config(_fit_args(tiny_csv, tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()
