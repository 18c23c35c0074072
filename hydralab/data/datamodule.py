"""HydraDataModule: dataset CSV -> preprocessed scans in memory -> virtual-sample batches.

Every batch, for training and evaluation alike, carries ``images`` shaped (B, K, 1, D, H, W)
(K = 1 for the baseline and for evaluation, which is per scan), per-slot ``labels`` and ``zero``
flags, the ``set_label`` and the scan ``index`` per slot.

The shape of the training scans is saved in each checkpoint (``state_dict``), so that ``predict``
can bring new scans of another size to it even when ``data.shape`` is not set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import lightning.pytorch as pl
import torch
import torchio as tio
from torch.utils.data import DataLoader

from hydralab.data.device_augment import BatchAugmentation
from hydralab.data.nifti import SPLITS, DatasetError
from hydralab.data.sampler import CombinationSampler
from hydralab.data.scans import LoadedScan, SetDataset, discover_images, load_scan
from hydralab.data.sets import Method, SetSpec
from hydralab.data.table import ScanRecord, assign_splits, read_table, select_training_subset
from hydralab.data.transforms import CropCentre, Normalization, augmentation, preprocessing

AugmentOn = Literal["cpu", "device"]
AUGMENT_ON: tuple[str, ...] = get_args(AugmentOn)


class HydraDataModule(pl.LightningDataModule):
    """Feeds baseline or Hydranet training from a dataset CSV.

    Args:
        csv: dataset CSV (columns ``image``, ``label``, optional ``split``, ``subject`` and
            ``roi``, the region mask that ``crop_centre: region`` needs).
        method: ``baseline`` (shuffled single scans) or ``hydranet`` (sets of ``k`` scans).
        k: scans per virtual sample (linked from the model's ``k`` by the CLI).
        p: probability that a slot holds the all-zero image instead of a scan.
        batch_size: images per step, a multiple of ``k`` (batch 4 with K = 4 is one set).
        n_train: how many training scans to use: the first ``n_train`` of a seeded ordering
            whose every prefix covers the label range evenly, so smaller subsets are nested in
            larger ones (:func:`~hydralab.data.table.training_order`).
        replacement: draw sets with replacement instead of partitioning the scans each epoch.
        full_batches: make every training batch full: an epoch is then the fewest whole passes
            over the training scans that fill its batches (without it, N = 20 scans in batches of
            4 sets of 4 alternate a batch of 4 sets with a batch of one set).
        normalization: ``minmax`` (the paper), ``percentile`` or ``zscore``.
        percentiles: the clipping range of ``percentile`` normalisation. Keep the upper one
            below the share of lesion voxels, or the lesions still set the scale.
        spacing: resample to this voxel size (mm) first, if given.
        shape: crop/pad every scan to this shape, around ``crop_centre``.
        crop_centre: ``mass``, the intensity-weighted centre of mass (WMH recipe); ``image``, the
            image centre; ``region`` (PVS recipe, needs ``shape`` and the CSV's ``roi``
            column): multiply by the region mask smoothed with ``roi_sigma``, crop to the
            region's bounding box plus ``roi_margin``, then centre crop/pad to ``shape``.
        roi_sigma: Gaussian sigma (voxels) of the region mask before it multiplies the scan;
            0 for a hard mask, None not to mask (crop only).
        roi_margin: voxels kept around the region's bounding box (one number or three).
        flip_axes: axes that training scans are flipped along, each with probability 0.5.
        rotation: largest training rotation about each axis, in radians (paper: 0.2).
        translation: largest training shift along each axis, in voxels (paper: 2).
        augment: apply the augmentation to training scans.
        augment_on: ``cpu``, per scan with TorchIO in the DataLoader, or ``device``, per batch
            with ``BatchAugmentation`` on the device the batch is moved to (the GPU), after the
            transfer: the same distributions, without the CPU resampling that leaves a GPU idle.
        val_fraction: share of scans drawn for validation when the CSV has no ``split`` column.
        test_fraction: share of scans drawn for testing when the CSV has no ``split`` column.
        seed: the training randomness: the sampler's draws (augmentation follows
            ``seed_everything``). It never changes which scans are trained or tested on.
        split_seed: draws the val/test split when the CSV has no ``split`` column; fixed apart
            from ``seed`` so that every training seed and every ``n_train`` is tested on the
            same scans.
        subset_seed: draws which ``n_train`` training scans are used; fixed apart from ``seed``
            so that a sweep can vary the subset and the training seed separately.
        predict_path: a dataset CSV or a folder of NIfTI files to predict. Scans are
            preprocessed as in training; without ``shape``, those whose size differs from the
            training scans' (saved in the checkpoint) are cropped/padded to it.
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
        full_batches: bool = False,
        normalization: Normalization = "minmax",
        percentiles: tuple[float, float] = (0.5, 99.5),
        spacing: float | None = None,
        shape: Sequence[int] | None = None,
        crop_centre: CropCentre = "mass",
        roi_sigma: float | None = 2.0,
        roi_margin: int | Sequence[int] = 4,
        flip_axes: Sequence[int] = (0, 1, 2),
        rotation: float = 0.2,
        translation: float = 2.0,
        augment: bool = True,
        augment_on: AugmentOn = "cpu",
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 0,
        split_seed: int = 0,
        subset_seed: int = 0,
        predict_path: str | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        SetSpec(method, k, p)
        for key, value, minimum in (
            ("batch_size", batch_size, 1),
            ("seed", seed, 0),
            ("split_seed", split_seed, 0),
            ("subset_seed", subset_seed, 0),
            ("n_train", 1 if n_train is None else n_train, 1),
            ("num_workers", num_workers, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"data.{key} must be an integer >= {minimum}, got {value!r}")
        if batch_size % k:
            raise ValueError(
                f"data.batch_size must be a multiple of k={k}, got batch_size={batch_size}"
            )
        if augment_on not in AUGMENT_ON:
            raise ValueError(
                f"data.augment_on must be 'cpu' (TorchIO, per scan, in the DataLoader) or "
                f"'device' (batched, on the training device), got {augment_on!r}"
            )
        if shape is not None and (len(shape) != 3 or min(shape) < 2):
            raise ValueError(f"data.shape must be three sizes >= 2, got {shape!r}")
        _check_ranges(rotation=(rotation, 0, math.inf), translation=(translation, 0, math.inf))
        _check_ranges(val_fraction=(val_fraction, 0, 1))
        _check_ranges(test_fraction=(test_fraction, 0, 1 - val_fraction))
        self.save_hyperparameters()
        self.csv = csv
        self.method = method
        self.k = k
        self.p = p
        self.batch_size = batch_size
        self.n_train = n_train
        self.seed = seed
        self.split_seed = split_seed
        self.subset_seed = subset_seed
        self.num_workers = num_workers
        self.predict_path = predict_path
        self._preprocess_args = {
            "normalization": normalization,
            "spacing": spacing,
            "shape": shape,
            "crop_centre": crop_centre,
            "percentiles": percentiles,
            "roi_sigma": roi_sigma,
            "roi_margin": roi_margin,
        }
        # Validates normalization, crop_centre, roi_sigma and roi_margin: a bad one fails here.
        self._preprocess = preprocessing(**self._preprocess_args)
        self._use_roi = crop_centre == "region"
        self._predict_records: list[ScanRecord] | None = None
        self.train_shape: tuple[int, int, int] | None = None  # restored from a checkpoint
        self._augment_args = {
            "flip_axes": flip_axes,
            "rotation": rotation,
            "translation": translation,
        }
        self._use_augment = augment
        self.augment_on = augment_on
        # Built here to validate the settings; setup gives it the training scans' affine.
        self.batch_augment: BatchAugmentation | None = (
            BatchAugmentation(**self._augment_args) if augment and augment_on == "device" else None
        )
        self.scans: dict[str, list[LoadedScan]] = {}

    # -- loading --------------------------------------------------------------------------------

    def records(self) -> dict[str, list[ScanRecord]]:
        """The scans of each split: ``split_seed`` draws the split, ``subset_seed`` the subset.

        Neither depends on ``seed``, so runs that differ only in their training seed (or in
        ``n_train``) share their validation and test scans.
        """
        if self.csv is None:
            raise DatasetError("no dataset: set data.csv to a dataset CSV")
        records = assign_splits(
            read_table(self.csv),
            self.hparams.val_fraction,
            self.hparams.test_fraction,
            self.split_seed,
        )
        by_split: dict[str, list[ScanRecord]] = {split: [] for split in SPLITS}
        for record in records:
            by_split[record.split].append(record)
        if not by_split["train"]:
            raise DatasetError(f"{self.csv}: no scans in the train split")
        self._check_regions(records, self.csv)
        by_split["train"] = select_training_subset(
            by_split["train"], self.n_train, self.subset_seed
        )
        return by_split

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict":
            # The scans are read in predict_dataloader: Lightning restores this module's state
            # (the training shape) from the checkpoint after setup, before asking for loaders.
            if self._predict_records is None:
                self._predict_records = self.predict_records()
            return
        if "train" in self.scans:
            return
        # Validate the whole table first, so a bad row fails before any scan is read.
        for split, records in self.records().items():
            self.scans[split] = self._load(records)
        self.train_shape = tuple(self.scans["train"][0].data.shape[1:])
        if self.batch_augment is not None:
            # Rotations are physical, so anisotropic voxels need the voxel-to-world affine; the
            # first training scan's serves the batch, as its spacing serves the CPU path.
            affine = self.scans["train"][0].affine
            self.batch_augment = BatchAugmentation(**self._augment_args, affine=affine)

    def predict_records(self) -> list[ScanRecord]:
        """The scans of ``predict_path`` (a CSV, or every NIfTI of a folder), checked."""
        if not (self.predict_path or self.csv):
            raise DatasetError("nothing to predict: set data.predict_path to a CSV or a folder")
        path = Path(self.predict_path or self.csv)
        if path.is_dir():
            if self._use_roi:
                raise DatasetError(
                    f"data.predict_path {path} is a folder, but data.crop_centre='region' needs "
                    "a region mask per scan: give a CSV with 'image' and 'roi' columns instead"
                )
            return discover_images(path)
        records = read_table(path, labels_required=False)
        self._check_regions(records, path)
        return records

    def _check_regions(self, records: Sequence[ScanRecord], source: str | Path) -> None:
        """The region recipe needs a mask for every scan; say so before any scan is read."""
        if not self._use_roi:
            return
        for record in records:
            if record.roi is None:
                raise DatasetError(
                    f"{source}: subject {record.subject!r} has no region mask; "
                    "data.crop_centre='region' needs an 'roi' column (a NIfTI path relative "
                    "to the CSV) filled on every row"
                )

    def _load(
        self, records: Sequence[ScanRecord], preprocess: tio.Transform | None = None
    ) -> list[LoadedScan]:
        preprocess = preprocess or self._preprocess
        return [load_scan(record, preprocess, roi=self._use_roi) for record in records]

    def _load_predict(self) -> list[LoadedScan]:
        if "predict" not in self.scans:
            if self._predict_records is None:
                self._predict_records = self.predict_records()
            preprocess = self._preprocess
            if self._preprocess_args["shape"] is None and self.train_shape is not None:
                preprocess = preprocessing(**self._preprocess_args, match_shape=self.train_shape)
            self.scans["predict"] = self._load(self._predict_records, preprocess)
        return self.scans["predict"]

    # -- checkpoint state -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints: the training scans' shape, which new scans must match."""
        return {} if self.train_shape is None else {"train_shape": list(self.train_shape)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        shape = state_dict.get("train_shape")
        if shape is not None and self.train_shape is None:
            self.train_shape = tuple(int(s) for s in shape)

    # -- loaders --------------------------------------------------------------------------------

    def train_dataset(self) -> SetDataset:
        scans = self.scans["train"]
        augment = None
        if self._use_augment and self.augment_on == "cpu":
            augment = augmentation(spacing=scans[0].spacing, **self._augment_args)
        return SetDataset(scans, augment)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment training batches on their device when ``augment_on`` is ``device``.

        Lightning calls this after moving each batch to the device; evaluation, prediction and
        the sanity check are left alone (``trainer.training`` is False there).
        """
        trainer = self.trainer
        if self.batch_augment is None or trainer is None or not trainer.training:
            return batch
        return {**batch, "images": self.batch_augment(batch["images"], batch["zero"])}

    def train_sampler(self) -> CombinationSampler:
        return CombinationSampler(
            len(self.scans["train"]),
            self.k,
            self.p,
            replacement=self.hparams.replacement,
            seed=self.seed,
            sets_per_batch=self.batch_size // self.k if self.hparams.full_batches else 1,
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
        self._load_predict()
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
        scans = self._load_predict() if split == "predict" else self.scans[split]
        return [scan.record for scan in scans]


def _check_ranges(**settings: tuple[float, float, float]) -> None:
    """Each ``data.KEY=(value, low, high)`` must be a finite number in [low, high)."""
    for key, (value, low, high) in settings.items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and low <= value < high):
            bounds = f">= {low:g}" if high == math.inf else f"in [{low:g}, {high:g})"
            raise ValueError(f"data.{key} must be a finite number {bounds}, got {value!r}")
