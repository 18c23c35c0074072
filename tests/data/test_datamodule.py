"""The data module end to end: CSV -> scans in memory -> batches shaped (B, K, 1, D, H, W)."""

import gzip
from pathlib import Path

import lightning.pytorch as pl
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from hydralab.data.datamodule import HydraDataModule
from hydralab.data.scans import SetDataset
from hydralab.data.table import DatasetError
from hydralab.training.callbacks import TrainSubjectsCSV
from hydralab.training.module import HydraModule
from hydralab.training.outputs import TRAIN_SUBJECTS
from tests.helpers.scans import make_tiny_dataset, write_scan


def _module(csv, **kwargs) -> HydraDataModule:
    dm = HydraDataModule(csv=str(csv), **kwargs)
    dm.setup("fit")
    return dm


def test_hydranet_batches_carry_sets_and_their_summed_labels(tiny_csv: Path):
    dm = _module(tiny_csv, method="hydranet", k=4, p=0.3, batch_size=8, seed=1)
    batches = list(dm.train_dataloader())
    assert len(batches) == 1  # 8 training scans, 8 images a step
    batch = batches[0]
    assert batch["images"].shape == (2, 4, 1, 10, 10, 10)
    assert torch.allclose(batch["set_label"], batch["labels"].sum(dim=1))
    zero = batch["zero"]
    assert (batch["labels"][zero] == 0).all()
    assert (batch["images"][zero] == 0).all()
    assert (batch["index"][zero] == -1).all()
    labels = {s.record.subject: s.record.label for s in dm.scans["train"]}
    names = [s.record.subject for s in dm.scans["train"]]
    for b, slot in zip(*torch.nonzero(~zero, as_tuple=True), strict=True):
        assert batch["labels"][b, slot] == labels[names[batch["index"][b, slot]]]


def test_baseline_batches_are_single_scans_and_epochs_see_every_scan(tiny_csv: Path):
    dm = _module(tiny_csv, batch_size=2, augment=False)
    batches = list(dm.train_dataloader())
    assert [b["images"].shape for b in batches] == [(2, 1, 1, 10, 10, 10)] * 4
    seen = sorted(int(i) for b in batches for i in b["index"].ravel())
    assert seen == list(range(8))
    assert not any(b["zero"].any() for b in batches)


@pytest.mark.parametrize("method, k", [("hydranet", 4), ("baseline", 1)])
def test_full_batches_make_every_step_a_full_batch(tiny_csv: Path, method: str, k: int):
    """8 training scans in batches of 12 images: one pass ends in a short batch (2 sets of 4,
    8 scans); with full_batches an epoch is 3 passes, 2 full batches, each scan seen 3 times."""
    kwargs = {"method": method, "k": k, "batch_size": 12, "augment": False, "seed": 2}
    short = [b["images"].shape[:2] for b in _module(tiny_csv, **kwargs).train_dataloader()]
    assert short == [(8 // k, k)]
    batches = list(_module(tiny_csv, full_batches=True, **kwargs).train_dataloader())
    assert [b["images"].shape[:2] for b in batches] == [(12 // k, k)] * 2
    seen = sorted(int(i) for b in batches for i in b["index"].ravel())
    assert seen == sorted(list(range(8)) * 3)


def test_preprocessing_rescales_each_scan_to_unit_range(tiny_csv: Path):
    dm = _module(tiny_csv)
    for scans in dm.scans.values():
        for scan in scans:
            assert scan.data.min() == 0 and scan.data.max() == pytest.approx(1.0)


def test_scans_are_loaded_once_and_augmented_per_draw(tiny_csv: Path):
    dm = _module(tiny_csv, rotation=0.2, translation=2.0)
    dataset = dm.train_dataset()
    stored = dm.scans["train"][0].data.clone()
    draws = [dataset.image(0) for _ in range(4)]
    assert any(not torch.equal(d, stored) for d in draws)
    assert torch.equal(dm.scans["train"][0].data, stored)  # the cache is never modified


def test_evaluation_order_is_fixed_and_unaugmented(tiny_csv: Path):
    dm = _module(tiny_csv)
    first = torch.cat([b["images"] for b in dm.val_dataloader()])
    second = torch.cat([b["images"] for b in dm.val_dataloader()])
    assert torch.equal(first, second)
    assert torch.equal(first[0, 0], dm.scans["val"][0].data)


def _subjects(dm: HydraDataModule) -> dict[str, list[str]]:
    return {split: [r.subject for r in records] for split, records in dm.records().items()}


def test_n_train_picks_a_subset_and_keeps_val_test_fixed(tmp_path: Path):
    """Without a split column, val and test are the same scans for every training seed and every
    n_train: only data.split_seed draws them."""
    csv = make_tiny_dataset(tmp_path, n=40, size=6, splits=False)
    full = _module(csv, seed=0)
    small = _module(csv, n_train=5, seed=1)
    assert len(full.scans["train"]) == 24 and len(small.scans["train"]) == 5
    for split in ("val", "test"):
        assert [s.record for s in small.scans[split]] == [s.record for s in full.scans[split]]
    reference = _subjects(HydraDataModule(csv=str(csv)))
    for seed in (0, 1, 7):
        for n_train in (None, 12, 20):
            splits = _subjects(HydraDataModule(csv=str(csv), seed=seed, n_train=n_train))
            assert splits["val"] == reference["val"] and splits["test"] == reference["test"]
            assert set(splits["train"]) <= set(reference["train"])


def test_split_seed_draws_another_split(tmp_path: Path):
    csv = make_tiny_dataset(tmp_path, n=40, size=6, splits=False)
    first = _subjects(HydraDataModule(csv=str(csv), split_seed=0))
    other = _subjects(HydraDataModule(csv=str(csv), split_seed=1))
    assert first["test"] != other["test"]
    every = [sorted(s for split in splits.values() for s in split) for splits in (first, other)]
    assert every[0] == every[1]


def test_subset_seed_not_the_training_seed_picks_the_training_scans(tmp_path: Path):
    csv = make_tiny_dataset(tmp_path, n=60, size=6, splits=False)

    def train(**kwargs) -> set[str]:
        return set(_subjects(HydraDataModule(csv=str(csv), **kwargs))["train"])

    assert train(n_train=12, seed=0) == train(n_train=12, seed=1) == train(n_train=12, seed=7)
    for subset_seed in (0, 1):
        small, middle, large = (train(n_train=n, subset_seed=subset_seed) for n in (12, 20, 30))
        assert small < middle < large
    assert train(n_train=12, subset_seed=0) != train(n_train=12, subset_seed=1)


@pytest.mark.parametrize(
    ("key", "value"),
    [("split_seed", -1), ("subset_seed", 1.5), ("seed", True), ("subset_seed", None)],
)
def test_bad_seeds_are_named(tiny_csv: Path, key: str, value):
    with pytest.raises(ValueError, match=f"data.{key} must be an integer >= 0"):
        HydraDataModule(csv=str(tiny_csv), **{key: value})


def test_seeded_split_without_split_column(tmp_path: Path):
    csv = make_tiny_dataset(tmp_path, n=20, splits=False)
    dm = _module(csv, val_fraction=0.25, test_fraction=0.25)
    assert {k: len(v) for k, v in dm.scans.items()} == {"train": 10, "val": 5, "test": 5}


def test_every_run_writes_its_training_subjects(tmp_path: Path):
    csv = make_tiny_dataset(tmp_path / "data", n=24, size=6, splits=False)
    data = HydraDataModule(
        csv=str(csv), method="hydranet", k=2, batch_size=4, n_train=8, subset_seed=1, augment=False
    )
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=CSVLogger(tmp_path / "runs", name="run"),
        callbacks=[TrainSubjectsCSV()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        log_every_n_steps=1,
    )
    trainer.fit(HydraModule(method="hydranet", k=2), datamodule=data)
    table = pd.read_csv(Path(trainer.log_dir) / TRAIN_SUBJECTS)
    assert Path(trainer.log_dir) == tmp_path / "runs" / "run" / "version_0"
    assert list(table.columns) == ["subject", "image", "label"]
    expected = data.records()["train"]
    assert list(table["subject"]) == [r.subject for r in expected] and len(table) == 8
    assert list(table["image"]) == [str(r.image) for r in expected]
    assert list(table["label"]) == [r.label for r in expected]


def test_crop_or_pad_to_a_fixed_shape_around_the_centre_of_mass(tmp_path: Path):
    volume = np.zeros((20, 20, 20))
    volume[2:6, 3:7, 4:8] = 1.0  # all the mass in one corner
    path = write_scan(tmp_path / "corner.nii.gz", volume)
    pd.DataFrame({"image": [path.name] * 1, "label": [1.0], "split": ["train"]}).to_csv(
        tmp_path / "d.csv", index=False
    )
    dm = _module(tmp_path / "d.csv", shape=(8, 8, 8), crop_centre="mass")
    data = dm.scans["train"][0].data[0]
    assert data.shape == (8, 8, 8)
    assert data.sum() == pytest.approx(64)  # the whole block is inside the window
    image_centre = _module(tmp_path / "d.csv", shape=(8, 8, 8), crop_centre="image")
    assert image_centre.scans["train"][0].data.sum() < 64


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "hydranet", "k": 0}, "k .* must be an integer >= 1"),
        ({"method": "hydranet", "k": 2, "p": 1.0}, r"p .* must be in \[0, 1\)"),
        (
            {"method": "hydranet", "k": 4, "batch_size": 6},
            "data.batch_size must be a multiple of k=4, got batch_size=6",
        ),
        ({"batch_size": 0}, "data.batch_size must be an integer >= 1, got 0"),
        ({"shape": (8, 8)}, r"data.shape must be three sizes >= 2, got \(8, 8\)"),
        ({"rotation": -1.0}, "data.rotation must be a finite number >= 0, got -1.0"),
        ({"translation": float("nan")}, "data.translation must be a finite number >= 0"),
        ({"val_fraction": 1.0}, r"data.val_fraction must be a finite number in \[0, 1\)"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, r"data.test_fraction .* in \[0, 0.5\)"),
        ({"num_workers": -1}, "data.num_workers must be an integer >= 0"),
        ({"method": "baseline", "k": 2}, "baseline uses k=1"),
        ({"method": "hydra"}, "method must be"),
        ({"normalization": "max"}, "normalization must be"),
    ],
)
def test_bad_settings_are_named(tiny_csv: Path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        HydraDataModule(csv=str(tiny_csv), **kwargs)


def test_n_train_larger_than_train_split(tiny_csv: Path):
    with pytest.raises(DatasetError, match="n_train=9 is larger than the train split"):
        _module(tiny_csv, n_train=9)


def _replace_scan(csv: Path, index: int, writer) -> Path:
    table = pd.read_csv(csv)
    path = csv.parent / table.loc[index, "image"]
    writer(path)
    return path


@pytest.mark.parametrize(
    ("writer", "message"),
    [
        (lambda p: p.unlink(), "scan of subject 's03' not found"),
        (lambda p: p.write_bytes(b"\x1f\x8b" + b"garbage" * 20), "cannot read scan"),
        (lambda p: p.write_bytes(gzip.compress(b"not a nifti" * 50)), "cannot read scan"),
        (
            lambda p: nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 2), np.float32), np.eye(4)), p),
            "has 2 volumes \\(a 4D image, shape \\(4, 4, 4, 2\\)\\)",
        ),
        (
            lambda p: nib.save(
                nib.Nifti1Image(np.full((10, 10, 10), np.nan, np.float32), np.eye(4)), p
            ),
            "NaN or infinite voxels",
        ),
        (
            lambda p: write_scan(p, np.random.default_rng(0).normal(size=(12, 10, 10))),
            "has shape \\(12, 10, 10\\)",
        ),
    ],
)
def test_bad_scans_fail_before_training_naming_the_file(tiny_csv: Path, writer, message):
    path = _replace_scan(tiny_csv, 3, writer)
    with pytest.raises(DatasetError, match=message) as error:
        dm = _module(tiny_csv)
        dm.train_dataset()
    assert "s03" in str(error.value) or path.name in str(error.value)


def test_set_dataset_needs_scans():
    with pytest.raises(DatasetError):
        SetDataset([])


def test_replacement_reaches_the_sampler_and_draws_repeat_scans(tiny_csv: Path):
    """``data.replacement: true``: each set draws afresh, so one epoch (4 sets of 2 from 8 scans)
    can show a scan twice and leave another out; the default partitions, every scan once."""
    kwargs = {"method": "hydranet", "k": 2, "batch_size": 4, "augment": False, "seed": 0}
    drawn = _module(tiny_csv, replacement=True, **kwargs)
    assert drawn.train_sampler().replacement is True
    seen = [int(i) for b in drawn.train_dataloader() for i in b["index"].ravel()]
    assert len(seen) == 8
    assert len(set(seen)) < 8
    partitioned = _module(tiny_csv, **kwargs)
    assert partitioned.train_sampler().replacement is False
    seen = sorted(int(i) for b in partitioned.train_dataloader() for i in b["index"].ravel())
    assert seen == list(range(8))
