"""HydraDataModule: dataset CSV -> preprocessed scans in memory -> virtual-sample batches.

Every batch, for training and evaluation alike, carries ``images`` shaped (B, K, 1, D, H, W)
(K = 1 for the baseline and for evaluation, which is per scan), per-slot ``labels`` and ``zero``
flags, the ``set_label`` and the scan ``index`` per slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from hydralab.data.sampler import CombinationSampler, validate_k_p
from hydralab.data.scans import LoadedScan, SetDataset, discover_images, load_scan
from hydralab.data.table import (
    DatasetError,
    ScanRecord,
    assign_splits,
    read_table,
    select_training_subset,
)
from hydralab.data.transforms import (
    NORMALIZATIONS,
    CropCentre,
    Normalization,
    augmentation,
    preprocessing,
)

Method = Literal["baseline", "hydranet"]


class HydraDataModule(pl.LightningDataModule):
    """Feeds baseline or Hydranet training from a dataset CSV.

    Args:
        csv: dataset CSV (columns ``image``, ``label``, optional ``split`` and ``subject``).
        method: ``baseline`` (shuffled single scans) or ``hydranet`` (sets of ``k`` scans).
        k: scans per virtual sample (linked from the model's ``k`` by the CLI).
        p: probability that a slot holds the all-zero image instead of a scan.
        batch_size: images per step, a multiple of ``k`` (batch 4 with K = 4 is one set).
        n_train: how many training scans to use, picked evenly over the label range.
        replacement: draw sets with replacement instead of partitioning the scans each epoch.
        normalization: ``minmax`` (the paper), ``percentile`` or ``zscore``.
        percentiles: the clipping range of ``percentile`` normalisation. Keep the upper one
            below the share of lesion voxels, or the lesions still set the scale.
        spacing: resample to this voxel size (mm) first, if given.
        shape: crop/pad every scan to this shape, around ``crop_centre``.
        flip_axes, rotation, translation: augmentation (rotation in rad, translation in voxels).
        augment: apply the augmentation to training scans.
        val_fraction, test_fraction: split sizes when the CSV has no ``split`` column.
        seed: drives the split, the training subset and the sampler.
        predict_path: a dataset CSV or a folder of NIfTI files to predict.
        num_workers: DataLoader workers (0 loads in the main process; right on small CPUs).
    """

    def __init__(
        self,
        csv: str | None = None,
        method: Method = "baseline",
        k: int = 1,
        p: float = 0.0,
        batch_size: int = 4,
        n_train: int | None = None,
        replacement: bool = False,
        normalization: Normalization = "minmax",
        percentiles: tuple[float, float] = (0.5, 99.5),
        spacing: float | None = None,
        shape: Sequence[int] | None = None,
        crop_centre: CropCentre = "mass",
        flip_axes: Sequence[int] = (0, 1, 2),
        rotation: float = 0.2,
        translation: float = 2.0,
        augment: bool = True,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 0,
        predict_path: str | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if method not in ("baseline", "hydranet"):
            raise ValueError(f"method must be 'baseline' or 'hydranet', got {method!r}")
        if method == "baseline" and (k != 1 or p != 0):
            raise ValueError(f"the baseline uses k=1 and p=0, got k={k} and p={p}")
        validate_k_p(k, p)
        if batch_size < 1 or batch_size % k:
            raise ValueError(
                f"batch_size counts images and must be a positive multiple of k={k}, "
                f"got batch_size={batch_size}"
            )
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}"
            )
        if shape is not None and (len(shape) != 3 or min(shape) < 2):
            raise ValueError(f"shape must be three sizes >= 2, got {shape!r}")
        self.save_hyperparameters()
        self.csv = csv
        self.method = method
        self.k = k
        self.p = p
        self.batch_size = batch_size
        self.n_train = n_train
        self.seed = seed
        self.num_workers = num_workers
        self.predict_path = predict_path
        self._preprocess = preprocessing(normalization, spacing, shape, crop_centre, percentiles)
        self._augment_args = {
            "flip_axes": flip_axes,
            "rotation": rotation,
            "translation": translation,
        }
        self._use_augment = augment
        self.scans: dict[str, list[LoadedScan]] = {}

    # -- loading --------------------------------------------------------------------------------

    def records(self) -> dict[str, list[ScanRecord]]:
        """The scans of each split, after the seeded split and the training-set subset."""
        if self.csv is None:
            raise DatasetError("no dataset: set data.csv to a dataset CSV")
        records = assign_splits(
            read_table(self.csv),
            self.hparams.val_fraction,
            self.hparams.test_fraction,
            self.seed,
        )
        by_split: dict[str, list[ScanRecord]] = {s: [] for s in ("train", "val", "test")}
        for record in records:
            by_split[record.split].append(record)
        if not by_split["train"]:
            raise DatasetError(f"{self.csv}: no scans in the train split")
        by_split["train"] = select_training_subset(by_split["train"], self.n_train, self.seed)
        return by_split

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict":
            if "predict" not in self.scans:
                self.scans["predict"] = self._load(self._predict_records())
            return
        if "train" in self.scans:
            return
        # Validate the whole table first, so a bad row fails before any scan is read.
        for split, records in self.records().items():
            self.scans[split] = self._load(records)

    def _predict_records(self) -> list[ScanRecord]:
        path = Path(self.predict_path or self.csv or "")
        if not (self.predict_path or self.csv):
            raise DatasetError("nothing to predict: set data.predict_path to a CSV or a folder")
        if path.is_dir():
            return discover_images(path)
        return read_table(path, labels_required=False)

    def _load(self, records: Sequence[ScanRecord]) -> list[LoadedScan]:
        return [load_scan(record, self._preprocess) for record in records]

    # -- loaders --------------------------------------------------------------------------------

    def train_dataset(self) -> SetDataset:
        scans = self.scans["train"]
        augment = None
        if self._use_augment:
            augment = augmentation(spacing=scans[0].spacing, **self._augment_args)
        return SetDataset(scans, augment)

    def train_sampler(self) -> CombinationSampler:
        return CombinationSampler(
            len(self.scans["train"]),
            self.k,
            self.p,
            replacement=self.hparams.replacement,
            seed=self.seed,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset(), self.train_sampler(), self.batch_size // self.k)

    def _eval_loader(self, split: str) -> DataLoader:
        scans = self.scans.get(split) or []
        if not scans:
            return []  # Lightning skips an empty loader: a dataset may have no val or test split.
        # Evaluation is per scan (K = 1 slots); the model applies the method's inference rule.
        sampler = CombinationSampler(len(scans), 1, 0.0, shuffle=False)
        return self._loader(SetDataset(scans), sampler, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("predict")

    def _loader(self, dataset: SetDataset, sampler: CombinationSampler, sets: int) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=sets,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def subjects(self, split: str) -> list[ScanRecord]:
        """The records of a loaded split, in loader order (for prediction tables)."""
        return [scan.record for scan in self.scans[split]]
