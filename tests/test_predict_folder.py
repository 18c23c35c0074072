"""`hydralab predict` on a folder of new scans of other shapes than the training ones.

New scans are preprocessed as the training ones were, from the run's saved config; without
``data.shape``, the training scans' shape travels in the checkpoint and new scans are cropped or
padded to it.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from hydralab.cli import main
from hydralab.data.datamodule import HydraDataModule
from hydralab.data.table import DatasetError
from hydralab.training.runner import run_cli
from tests.helpers.scans import make_tiny_dataset, write_scan

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _reshaped_folder(images: list[Path], folder: Path) -> dict[str, str]:
    """Copy the scans as they are, edge-padded to 14 x 12 x 16 and cut to 10 x 12 x 12.

    Returns each padded scan's name mapped to its original's: a centre crop gives it back.
    """
    folder.mkdir()
    pairs = {}
    for path in images:
        image = nib.load(path)
        data = image.get_fdata(dtype=np.float32)
        name = path.name.removesuffix(".nii.gz")
        nib.save(image, folder / path.name)
        padded = np.pad(data, ((1, 1), (0, 0), (2, 2)), mode="edge")
        nib.save(nib.Nifti1Image(padded, image.affine), folder / f"{name}_big.nii.gz")
        nib.save(nib.Nifti1Image(data[1:11], image.affine), folder / f"{name}_small.nii.gz")
        pairs[f"{name}_big"] = name
    return pairs


@pytest.mark.slow
def test_predict_a_folder_of_scans_of_other_shapes(tmp_path: Path):
    data = tmp_path / "blobs"
    sizes = ["--size", "12", "--n-train", "4", "--n-val", "3", "--n-test", "3"]
    assert main(["make-data", "blobs", str(data), *sizes]) == 0
    fit = run_cli(
        [
            "fit",
            f"--config={CONFIGS / 'blobs' / 'baseline.yaml'}",
            f"--data.csv={data / 'dataset.csv'}",
            "--data.n_train=null",
            "--data.batch_size=2",
            "--data.crop_centre=image",
            "--trainer.max_steps=2",
            "--trainer.enable_progress_bar=false",
            "--tracking.wandb_mode=disabled",
            f"--tracking.root={tmp_path / 'runs'}",
        ]
    )
    checkpoint = fit.run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=True)["HydraDataModule"] == {
        "train_shape": [12, 12, 12]
    }
    folder = tmp_path / "new"
    pairs = _reshaped_folder(sorted((data / "images").glob("*.nii.gz"))[:3], folder)

    def predict(out: Path, *extra: str) -> pd.DataFrame:
        code = main(
            [
                "predict",
                f"--config={fit.run_dir / 'config.yaml'}",
                f"--ckpt_path={checkpoint}",
                f"--data.predict_path={folder}",
                f"--predictions.output={out}",
                f"--tracking.root={tmp_path / 'predict-runs'}",
                *extra,
            ]
        )
        assert code == 0
        return pd.read_csv(out).set_index("subject")

    table = predict(tmp_path / "pred.csv")
    assert sorted(table.index) == sorted(p.name.removesuffix(".nii.gz") for p in folder.iterdir())
    assert len(table) == 9 and np.isfinite(table["prediction"]).all()
    # Cropped back around the image centre, as in training, a padded scan is its original.
    for big, original in pairs.items():
        assert table.loc[big, "prediction"] == pytest.approx(
            table.loc[original, "prediction"], rel=1e-5
        )
    # The centre of mass (WMH recipe) picked at prediction time works on the same folder.
    mass = predict(tmp_path / "pred_mass.csv", "--data.crop_centre=mass")
    assert len(mass) == 9 and np.isfinite(mass["prediction"]).all()


def test_training_shape_travels_through_the_checkpoint_state(tmp_path: Path):
    csv = make_tiny_dataset(tmp_path / "tiny", n=8, size=10)
    trained = HydraDataModule(csv=str(csv), batch_size=2, crop_centre="image")
    trained.setup("fit")
    state = trained.state_dict()
    assert state == {"train_shape": [10, 10, 10]}
    folder = tmp_path / "new"
    rng = np.random.default_rng(0)
    for name, shape in {"a": (14, 12, 16), "b": (10, 10, 10), "c": (6, 10, 9)}.items():
        write_scan(folder / f"{name}.nii.gz", rng.normal(100.0, 5.0, size=shape))

    predictor = HydraDataModule(predict_path=str(folder), batch_size=2, crop_centre="image")
    predictor.setup("predict")  # Lightning restores the state after setup, before the loader
    predictor.load_state_dict(state)
    batches = list(predictor.predict_dataloader())
    assert [tuple(b["images"].shape) for b in batches] == [
        (2, 1, 1, 10, 10, 10),
        (1, 1, 1, 10, 10, 10),
    ]
    assert [r.subject for r in predictor.subjects("predict")] == ["a", "b", "c"]


def test_a_fixed_training_shape_applies_to_new_scans(tmp_path: Path):
    folder = tmp_path / "new"
    rng = np.random.default_rng(0)
    for name, shape in {"a": (14, 12, 16), "b": (7, 9, 8)}.items():
        write_scan(folder / f"{name}.nii.gz", rng.normal(100.0, 5.0, size=shape))
    dm = HydraDataModule(predict_path=str(folder), batch_size=2, shape=(8, 8, 8))
    dm.setup("predict")
    (batch,) = dm.predict_dataloader()
    assert tuple(batch["images"].shape) == (2, 1, 1, 8, 8, 8)


def test_new_scans_of_mixed_shapes_without_a_known_training_shape_are_named(tmp_path: Path):
    folder = tmp_path / "new"
    rng = np.random.default_rng(0)
    write_scan(folder / "a.nii.gz", rng.normal(100.0, 5.0, size=(10, 10, 10)))
    write_scan(folder / "b.nii.gz", rng.normal(100.0, 5.0, size=(12, 10, 10)))
    dm = HydraDataModule(predict_path=str(folder), batch_size=2)
    dm.setup("predict")
    with pytest.raises(DatasetError, match=r"b.nii.gz has shape \(12, 10, 10\)"):
        dm.predict_dataloader()
