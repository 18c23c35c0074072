"""The command line end to end: fit -> run folder -> W&B offline run -> predict, on tiny scans."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wandb
import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException

from hydralab import cli as cli_module
from hydralab.cli import main
from hydralab.training.metrics import agreement_metrics
from hydralab.training.runner import run_cli
from hydralab.training.tracking import local_run_dirs
from tests.helpers.wandb_log import read_offline_run

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _fit(csv: Path, root: Path, *extra: str, method: str = "hydranet"):
    return run_cli(
        [
            "fit",
            f"--config={CONFIGS / 'blobs' / f'{method}.yaml'}",
            f"--data.csv={csv}",
            "--data.n_train=null",
            "--trainer.max_epochs=3",
            "--trainer.check_val_every_n_epoch=1",
            "--trainer.val_check_interval=1.0",
            "--trainer.enable_progress_bar=false",
            f"--tracking.root={root}",
            *extra,
        ]
    )


def test_help_is_light():
    """`hydralab --help` must not import torch, Lightning or W&B (it answers in well under 2 s)."""
    code = (
        "import sys, contextlib, io\n"
        "from hydralab import cli\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    cli.main(['--help'])\n"
        "assert 'make-data' in out.getvalue() and 'fit' in out.getvalue()\n"
        "heavy = [m for m in ('torch', 'lightning', 'wandb', 'torchio') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_fit_writes_a_complete_run_and_tests_the_best_checkpoint(tiny_csv: Path, tmp_path: Path):
    cli = _fit(tiny_csv, tmp_path / "runs", "--model.label_scale=mean")
    run = cli.run_dir
    assert run.parent == tmp_path / "runs" / "blobs-hydranet"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["k"] == 4
    assert cli.datamodule.k == 4 and cli.datamodule.method == "hydranet"  # linked from the model
    assert (run / "metrics.csv").is_file()
    checkpoints = {p.name for p in (run / "checkpoints").iterdir()}
    assert "last.ckpt" in checkpoints
    best = cli.trainer.checkpoint_callback.best_model_path
    assert Path(best).name in checkpoints and Path(best).name.startswith("best-")

    predictions = pd.read_csv(run / "test_predictions.csv")
    assert list(predictions.columns) == ["subject", "image", "label", "prediction"]
    assert sorted(predictions["subject"]) == ["s12", "s13", "s14", "s15"]
    trained = pd.read_csv(run / "train_subjects.csv")  # every run says which scans it learnt
    assert sorted(trained["subject"]) == [f"s{i:02d}" for i in range(8)]
    expected = agreement_metrics(predictions["prediction"], predictions["label"])
    assert cli.test_metrics["test/icc_c1"] == pytest.approx(expected["icc_c1"], abs=1e-5)
    assert cli.test_metrics["test/mse"] == pytest.approx(expected["mse"], rel=1e-5)

    # The offline W&B run holds the same test ICC, and the best validation ICC as its summary.
    (wandb_run,) = local_run_dirs(run)
    record = read_offline_run(wandb_run)
    assert record["summary"]["test/icc_c1"] == pytest.approx(
        cli.test_metrics["test/icc_c1"], abs=1e-6
    )
    assert record["run"]["job_type"] == "hydranet"
    assert record["config"]["model"]["k"] == 4
    val_icc = pd.read_csv(run / "metrics.csv")["val/icc_c1"].dropna()
    assert record["summary"]["val/icc_c1"]["max"] == pytest.approx(val_icc.max(), abs=1e-6)


@pytest.mark.slow
def test_same_config_and_seed_give_identical_metrics(tiny_csv: Path, tmp_path: Path):
    first = _fit(tiny_csv, tmp_path / "a", "--tracking.wandb_mode=disabled")
    second = _fit(tiny_csv, tmp_path / "b", "--tracking.wandb_mode=disabled")
    a = pd.read_csv(first.run_dir / "test_predictions.csv")
    b = pd.read_csv(second.run_dir / "test_predictions.csv")
    pd.testing.assert_frame_equal(a, b)
    assert first.test_metrics == second.test_metrics
    other = _fit(tiny_csv, tmp_path / "c", "--tracking.wandb_mode=disabled", "--seed_everything=1")
    c = pd.read_csv(other.run_dir / "test_predictions.csv")
    assert not np.allclose(a["prediction"], c["prediction"])


@pytest.mark.slow
def test_predict_a_folder_from_a_checkpoint(tiny_csv: Path, tmp_path: Path):
    fit = _fit(tiny_csv, tmp_path / "runs", "--tracking.wandb_mode=disabled", method="baseline")
    checkpoint = fit.trainer.checkpoint_callback.best_model_path
    out = tmp_path / "pred.csv"
    main(
        [
            "predict",
            f"--config={fit.run_dir / 'config.yaml'}",
            f"--ckpt_path={checkpoint}",
            f"--data.predict_path={tiny_csv.parent / 'images'}",
            f"--predictions.output={out}",
            f"--tracking.root={tmp_path / 'predict-runs'}",
        ]
    )
    table = pd.read_csv(out)
    assert list(table.columns) == ["subject", "image", "prediction"]
    assert len(table) == 16
    # The same checkpoint predicted the test scans during fit: the values agree.
    tested = pd.read_csv(fit.run_dir / "test_predictions.csv").set_index("subject")
    merged = table.set_index("subject").join(tested, rsuffix="_fit", how="inner")
    np.testing.assert_allclose(merged["prediction"], merged["prediction_fit"], rtol=1e-5)


def test_make_data_command(tmp_path: Path, capsys):
    assert (
        main(
            [
                "make-data",
                "lesions",
                str(tmp_path),
                "--n-train",
                "3",
                "--n-val",
                "2",
                "--n-test",
                "2",
                "--size",
                "12",
            ]
        )
        == 0
    )
    table = pd.read_csv(tmp_path / "dataset.csv")
    assert len(table) == 7 and (tmp_path / table["image"][0]).is_file()


def test_bad_dataset_is_reported_without_a_traceback(tmp_path: Path, capsys):
    csv = tmp_path / "bad.csv"
    csv.write_text("image,score\na.nii,1\n")
    code = main(
        [
            "fit",
            f"--config={CONFIGS / 'blobs' / 'baseline.yaml'}",
            f"--data.csv={csv}",
            f"--tracking.root={tmp_path}",
            "--tracking.wandb_mode=disabled",
        ]
    )
    assert code == 2
    assert "missing column(s) ['label']" in capsys.readouterr().err


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model:\n  lrr: 1.0\n", ": Subcommand 'fit' does not accept option 'model.lrr'"),
        ("model:\n  lr: fast\n", ": Parser key \"model.lr\": Expected a <class 'float'>"),
        ("model:\n  lr: [1\n", ": not valid YAML: expected ',' or ']'"),
        ("model:\n  lr: -1\n", ": model.lr must be a finite number > 0, got -1"),
    ],
    ids=["unknown-key", "wrong-type", "yaml-syntax", "negative-lr"],
)
def test_a_bad_config_is_one_line_naming_the_file_without_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
):
    config = _write(tmp_path / "my config.yaml", text)
    base = f"--config={CONFIGS / 'blobs' / 'baseline.yaml'}"
    assert main(["fit", base, "--config", str(config), f"--tracking.root={tmp_path}"]) == 2
    captured = capsys.readouterr()
    error_lines = [line for line in captured.err.splitlines() if line.startswith("hydralab")]
    assert len(error_lines) == 1, captured.err
    assert error_lines[0].startswith(f"hydralab: error: {config}{expected}")
    assert "usage:" not in captured.err + captured.out and "Traceback" not in captured.err
    assert not (tmp_path / "blobs-baseline").exists()  # refused before a run folder is made


def test_a_config_error_in_a_section_file_names_that_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """`data: data.yaml` puts a section in another file: the error names that file."""
    _write(tmp_path / "data.yaml", "csv: x.csv\nbatch_sise: 4\n")
    config = _write(tmp_path / "run.yaml", "data: data.yaml\nmodel:\n  lr: 0.1\n")
    assert main(["fit", f"--config={config}"]) == 2
    err = capsys.readouterr().err
    assert f"hydralab: error: {tmp_path / 'data.yaml'}: " in err and "data.batch_sise" in err


def test_a_missing_config_file_and_a_bad_override_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    missing = tmp_path / "nope.yaml"
    assert main(["fit", f"--config={missing}"]) == 2
    assert capsys.readouterr().err == f"hydralab: error: --config {missing}: no such file\n"
    # Set on the command line, which wins over the file: no file is blamed.
    base = f"--config={CONFIGS / 'blobs' / 'baseline.yaml'}"
    assert main(["fit", base, "--model.lr=-1", f"--tracking.root={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.endswith("hydralab: error: model.lr must be a finite number > 0, got -1.0\n")
    assert err.count("hydralab: error:") == 1


def test_lightning_help_still_works(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--help"])
    assert exit_.value.code == 0 and "--model.lr" in capsys.readouterr().out


def _raising(error: BaseException):
    def run(argv: list[str], from_command_line: bool) -> int:
        raise error

    return run


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (yaml.YAMLError("mapping values are not allowed here"), "not valid YAML: mapping values"),
        (FloatingPointError("training loss became nan at step 3"), "training loss became nan"),
        (wandb.errors.CommError("Network error (ConnectTimeout)"), "W&B: Network"),
        (OSError(28, "No space left on device", "/r/x.ckpt"), "No space left on device: /r/x.ckpt"),
        (
            MisconfigurationException("GPUAccelerator can not run on your system"),
            "Lightning: GPUAccelerator can not run",
        ),
    ],
    ids=["yaml", "nan-loss", "wandb", "oserror", "lightning"],
)
def test_expected_errors_are_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], error, expected
):
    monkeypatch.setattr(cli_module, "_run", _raising(error))
    assert main(["fit"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hydralab: error: {expected}") and err.count("\n") == 1


def test_an_unexpected_error_shows_its_traceback_and_a_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    """A bug must not hide behind a one-liner: its traceback, then what to do, exit 1."""
    monkeypatch.setattr(cli_module, "_run", _raising(TypeError("unsupported operand")))
    assert main(["fit"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "TypeError: unsupported operand" in err
    assert err.splitlines()[-1].startswith("hydralab: unexpected TypeError (traceback above)")


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_lets_the_traceback_through(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], how: str
):
    monkeypatch.setattr(cli_module, "_run", _raising(ValueError("bad input")))
    argv = ["fit"]
    if how == "flag":
        argv.insert(0, "--debug")
    else:
        monkeypatch.setenv("HYDRALAB_DEBUG", "1")
    with pytest.raises(ValueError, match="bad input"):
        main(argv)
    assert capsys.readouterr().err == ""


def test_ctrl_c_exits_130_and_the_key_is_never_printed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setattr(cli_module, "_run", _raising(KeyboardInterrupt()))
    assert main(["fit"]) == 130
    assert capsys.readouterr().err == "hydralab: interrupted\n"
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setattr(cli_module, "_run", _raising(ValueError(f"bad key {'k' * 40}")))
    assert main(["fit"]) == 2
    assert capsys.readouterr().err == "hydralab: error: bad key ***\n"
