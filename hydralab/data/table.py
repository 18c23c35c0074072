"""The dataset table: one row per scan (image path, global label, split), validated before training.

A dataset is a CSV with columns ``image`` (a NIfTI path, relative to the CSV) and ``label``
(float), optional ``split`` (train/val/test), ``subject`` and ``roi`` (a region-mask NIfTI,
relative to the CSV, for ``data.crop_centre: region``). Every problem is reported with the
file, the row and the column, before a single scan is loaded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from hydralab.data.nifti import SPLITS, DatasetError, first_duplicate, nifti_stem

REQUIRED_COLUMNS = ("image", "label")


@dataclass(frozen=True)
class ScanRecord:
    """One scan of the table: where it is, what it is called, what it measures."""

    subject: str
    image: Path
    label: float
    split: str | None
    roi: Path | None = None  # region mask (PVS recipe), from the optional 'roi' column


def read_table(csv_path: str | Path, *, labels_required: bool = True) -> list[ScanRecord]:
    """Read and validate a dataset CSV; paths are resolved against the CSV's folder.

    For prediction the labels may be absent (``labels_required=False``): they become NaN.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"dataset CSV not found: {csv_path}")
    try:
        # utf-8-sig strips the byte-order mark that spreadsheet programs put before the header.
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        # Excel's plain "CSV" is the system code page (latin-1 or UTF-16), not UTF-8.
        raise DatasetError(
            f"{csv_path}: not a readable CSV ({error}); it is not UTF-8 text: save it as UTF-8 "
            '("CSV UTF-8" in Excel)'
        ) from error
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DatasetError(f"{csv_path}: not a readable CSV ({error})") from error
    frame.columns = [str(column).strip() for column in frame.columns]
    required = REQUIRED_COLUMNS if labels_required else ("image",)
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise DatasetError(
            f"{csv_path}: missing column(s) {missing}; found {list(frame.columns)}. "
            "A dataset CSV needs 'image' (NIfTI path relative to the CSV) and 'label'."
        )
    if frame.empty:
        raise DatasetError(f"{csv_path}: no rows")
    if "label" not in frame.columns:
        frame["label"] = ""
    rows = list(_rows(frame))
    records = [_parse_row(csv_path, line, row, labels_required) for line, row in rows]
    _check_unique_subjects(csv_path, records)
    _check_unique_images(csv_path, records, [line for line, _ in rows])
    return records


def _rows(frame: pd.DataFrame):
    # Row numbers as a spreadsheet shows them: the header is line 1.
    for index, row in enumerate(frame.to_dict("records")):
        yield index + 2, row


def _parse_row(csv_path: Path, line: int, row: dict[str, str], labels_required: bool) -> ScanRecord:
    where = f"{csv_path}, line {line}"
    image_text = row["image"].strip()
    if not image_text:
        raise DatasetError(f"{where}: empty 'image'")
    image = Path(image_text)
    if not image.is_absolute():
        image = csv_path.parent / image
    if not labels_required and not row["label"].strip():
        row = {**row, "label": "nan"}
    try:
        label = float(row["label"])
    except ValueError:
        raise DatasetError(f"{where}: label {row['label']!r} is not a number") from None
    if labels_required and not math.isfinite(label):
        raise DatasetError(f"{where}: label is {label}; labels must be finite numbers")
    split = row.get("split", "").strip().lower() or None
    if split is not None and split not in SPLITS:
        raise DatasetError(f"{where}: split {row['split']!r} is not one of {SPLITS}")
    subject = row.get("subject", "").strip() or nifti_stem(image.name)
    roi_text = row.get("roi", "").strip()
    roi = None
    if roi_text:
        roi = Path(roi_text)
        if not roi.is_absolute():
            roi = csv_path.parent / roi
    return ScanRecord(subject=subject, image=image, label=label, split=split, roi=roi)


def _check_unique_subjects(csv_path: Path, records: Sequence[ScanRecord]) -> None:
    duplicate = first_duplicate(record.subject for record in records)
    if duplicate is not None:
        subject = records[duplicate[1]].subject
        raise DatasetError(f"{csv_path}: subject {subject!r} appears more than once")


def _check_unique_images(
    csv_path: Path, records: Sequence[ScanRecord], lines: Sequence[int]
) -> None:
    """One scan under two subject names could land in both train and test, leaking the label.

    Paths are compared resolved, so ``a.nii``, ``./a.nii`` and an absolute path to the same file
    (or a symlink to it) are one image.
    """
    keys = [record.image.resolve() for record in records]
    duplicate = first_duplicate(keys)
    if duplicate is not None:
        first, second = duplicate
        raise DatasetError(
            f"{csv_path}: line {lines[second]} (subject {records[second].subject!r}) and line "
            f"{lines[first]} (subject {records[first].subject!r}) list the same image "
            f"{keys[second]}; each scan may appear once"
        )


def assign_splits(
    records: Sequence[ScanRecord], val_fraction: float, test_fraction: float, seed: int
) -> list[ScanRecord]:
    """Give every record a split: keep the CSV's own, or draw one with the split seed ``seed``.

    ``seed`` is ``data.split_seed``, never the training seed: a learning curve or a comparison
    across training seeds is only fair when every run is tested on the same scans. The draw is
    made over the subjects in name order, so reordering the CSV's rows does not move a scan to
    another split. A CSV either has a split for every row or for none; mixing would make the
    drawn split depend on which rows happen to be labelled.
    """
    with_split = [record.split is not None for record in records]
    if all(with_split):
        return list(records)
    if any(with_split):
        raise DatasetError("the 'split' column is filled for some rows but not all")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DatasetError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) "
            "and leave room for training scans"
        )
    _require_seed("data.split_seed", seed)
    by_name = sorted(range(len(records)), key=lambda i: _name_key(records[i]))
    order = np.asarray(by_name)[np.random.default_rng(seed).permutation(len(records))]
    n_val = round(val_fraction * len(records))
    n_test = round(test_fraction * len(records))
    splits = np.full(len(records), "train", dtype=object)
    splits[order[:n_val]] = "val"
    splits[order[n_val : n_val + n_test]] = "test"
    return [replace(r, split=str(s)) for r, s in zip(records, splits, strict=True)]


def select_training_subset(
    records: Sequence[ScanRecord], n_train: int | None, seed: int
) -> list[ScanRecord]:
    """The first ``n_train`` scans of :func:`training_order` (subset seed ``seed``), by subject.

    ``seed`` is ``data.subset_seed``, independent of the training seed, so a sweep can cross
    training seeds with subsets (or hold the subset fixed while the training seed varies).
    """
    if n_train is None or n_train == len(records):
        return list(records)
    if isinstance(n_train, bool) or not isinstance(n_train, int | np.integer) or n_train < 1:
        raise DatasetError(f"data.n_train must be an integer >= 1, got {n_train!r}")
    if n_train > len(records):
        raise DatasetError(
            f"data.n_train={n_train} is larger than the train split ({len(records)} scans)"
        )
    picked = training_order(records, seed, n_train)
    return sorted(picked, key=_name_key)


def training_order(
    records: Sequence[ScanRecord], seed: int, n: int | None = None
) -> list[ScanRecord]:
    """A seeded ordering of the training scans whose every prefix covers the label range evenly.

    The paper shrank its training set by hand, keeping the label range evenly covered, so that a
    learning curve compares like with like. Two properties make that reproducible:

    - nested: the N = 12 subset is the start of the N = 20 one, so a larger N only adds scans
      and the curve measures the effect of N, not of a different draw;
    - pseudo-uniform over [min, max] label, not following the label density: the targets are a
      van der Corput sequence (base 2) rotated by a random offset drawn from ``seed``, mapped
      onto [min label, max label]; each target takes the nearest scan not yet picked. A sparse
      tail of high labels thus gets its share of the label range even at small N, where one
      scan per label quantile would give it only its (small) share of the scans.

    Ties (equal distance) go to a seeded random priority assigned over the subjects in name
    order, so the CSV's row order never changes the result. Returns the first ``n`` scans (all
    by default) in the order they were picked.
    """
    _require_seed("data.subset_seed", seed)
    by_name = sorted(records, key=_name_key)
    count = len(by_name) if n is None else min(n, len(by_name))
    if not by_name or count < 1:
        return []
    labels = np.array([record.label for record in by_name], dtype=float)
    rng = np.random.default_rng(seed)
    rotation = rng.random()
    priority = rng.permutation(len(by_name))
    low, span = labels.min(), labels.max() - labels.min()
    free = np.ones(len(by_name), dtype=bool)
    picked: list[ScanRecord] = []
    for i in range(count):
        target = low + ((rotation + van_der_corput(i)) % 1.0) * span
        distance = np.where(free, np.abs(labels - target), np.inf)
        nearest = np.flatnonzero(distance == distance.min())
        choice = int(nearest[np.argmin(priority[nearest])])
        free[choice] = False
        picked.append(by_name[choice])
    return picked


def van_der_corput(index: int, base: int = 2) -> float:
    """The ``index``-th point of the van der Corput sequence in [0, 1) (0, 1/2, 1/4, 3/4, ...).

    Every prefix of the sequence is spread nearly evenly over [0, 1), which is what makes every
    prefix of :func:`training_order` cover the label range.
    """
    value, scale = 0.0, 1.0 / base
    while index:
        index, digit = divmod(index, base)
        value += digit * scale
        scale /= base
    return value


def _name_key(record: ScanRecord) -> tuple[str, str]:
    return record.subject, str(record.image)


def _require_seed(key: str, seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DatasetError(f"{key} must be an integer >= 0, got {seed!r}")
