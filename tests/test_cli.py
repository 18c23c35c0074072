"""The command line end to end: fit -> run folder -> W&B offline run -> predict, on tiny scans."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

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
