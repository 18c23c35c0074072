"""From a folder of scans and lesion masks, in a common layout, to a dataset CSV.

Three layouts are understood (``hydralab make-table --layout ...``):

* ``wmh-challenge``: the MICCAI 2017 WMH segmentation challenge's training data,
  ``<site>/<id>/pre/FLAIR.nii.gz`` with the mask ``<site>/<id>/wmh.nii.gz``. Deeper trees
  (``Amsterdam/GE3T/100/...``) work too; the subject is the folders joined by ``_``
  (``Utrecht_0``, ``Amsterdam_GE3T_100``).
* ``bids``: ``sub-*/[ses-*/]anat/<entities><image_suffix>.nii[.gz]``, masks in the same
  sub/ses/anat folders under ``derivatives/<pipeline>/``, named by ``mask_pattern`` (a glob in
  which ``{entities}`` is the image's name up to its suffix, e.g. ``sub-01_ses-1``).
* ``flat``: ``<images_dir>/<name>`` with the mask ``<masks_dir>/<name>`` (the same file name);
  this is also how ``hydralab make-data lesions`` writes its scans.

Every image must have exactly one mask and every subject name must be unique; anything else is
an error naming the path, because a silently skipped scan changes the dataset the user thinks
they trained on. The CSV has ``subject,image,label,mask`` with paths relative to the CSV's
folder, which is what :func:`hydralab.data.table.read_table` reads.
"""

from __future__ import annotations

import csv
import glob
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hydralab.data.nifti import (
    AFFINE_TOLERANCE_MM,
    NIFTI_SUFFIXES,
    DatasetError,
    first_duplicate,
    is_nifti,
    nifti_stem,
)
from hydralab.datasets.mask_labels import LabelSpec, label_from_array, read_mask

LAYOUTS = ("wmh-challenge", "bids", "flat")
CSV_COLUMNS = ("subject", "image", "label", "mask")

WMH_IMAGE = Path("pre") / "FLAIR.nii.gz"
WMH_MASK = "wmh.nii.gz"
BIDS_DEFAULTS = {"image_suffix": "_FLAIR", "mask_pattern": "{entities}_label-WMH_mask.nii.gz"}
FLAT_DEFAULTS = {"images_dir": "images", "masks_dir": "masks"}


class LayoutError(DatasetError):
    """A folder that does not hold the layout asked for; the message names the path."""


@dataclass(frozen=True)
class ScanPair:
    """One scan and its lesion mask, as found on disk."""

    subject: str
    image: Path
    mask: Path


def find_pairs(
    layout: str, root: str | Path, options: Mapping[str, str] | None = None
) -> list[ScanPair]:
    """All (image, mask) pairs of ``root`` in ``layout``, sorted by subject.

    ``options`` are the layout's naming options (``BIDS_DEFAULTS``, ``FLAT_DEFAULTS`` and
    ``pipeline`` for bids); one that the layout does not use is an error, not ignored.
    """
    if layout not in LAYOUTS:
        raise LayoutError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"dataset folder not found: {root}")
    options = dict(options or {})
    finders: dict[str, tuple[Callable[..., list[ScanPair]], set[str]]] = {
        "wmh-challenge": (find_wmh_challenge, set()),
        "bids": (find_bids, {*BIDS_DEFAULTS, "pipeline"}),
        "flat": (find_flat, set(FLAT_DEFAULTS)),
    }
    finder, accepted = finders[layout]
    unused = sorted(set(options) - accepted)
    if unused:
        names = ", ".join("--" + name.replace("_", "-") for name in unused)
        raise LayoutError(f"{names} does not apply to --layout {layout}")
    pairs = finder(root, **options)  # each finder raises, naming the path, when it finds none
    _check_unique_subjects(pairs)
    return sorted(pairs, key=lambda pair: pair.subject)


def find_wmh_challenge(root: Path) -> list[ScanPair]:
    """``<site>/<id>/pre/FLAIR.nii.gz`` + ``<site>/<id>/wmh.nii.gz`` at any depth under root."""
    images = sorted(p for p in root.rglob(WMH_IMAGE.name) if p.parent.name == WMH_IMAGE.parent.name)
    pairs = []
    for image in images:
        folder = image.parent.parent
        mask = folder / WMH_MASK
        if not mask.is_file():
            raise LayoutError(f"image {image} has no mask: expected {mask}")
        parts = folder.relative_to(root).parts
        subject = "_".join(parts) if parts else root.name
        pairs.append(ScanPair(subject, image, mask))
    with_image = {pair.mask for pair in pairs}
    for mask in sorted(root.rglob(WMH_MASK)):
        if mask not in with_image:
            raise LayoutError(f"mask {mask} has no image: expected {mask.parent / WMH_IMAGE}")
    if not pairs:
        raise LayoutError(
            f"no {WMH_IMAGE.as_posix()} found under {root}; the WMH challenge layout is "
            f"<site>/<id>/{WMH_IMAGE.as_posix()} with the mask <site>/<id>/{WMH_MASK}"
        )
    return pairs


def find_bids(
    root: Path,
    image_suffix: str = BIDS_DEFAULTS["image_suffix"],
    mask_pattern: str = BIDS_DEFAULTS["mask_pattern"],
    pipeline: str | None = None,
) -> list[ScanPair]:
    """``sub-*/[ses-*/]anat/*<image_suffix>.nii[.gz]``, masks under ``derivatives/<pipeline>``.

    The mask is the one file in the image's mirrored folder matching ``mask_pattern`` with
    ``{entities}`` replaced by the image's name up to ``image_suffix``. Without ``pipeline``,
    the only folder under ``derivatives/`` is used.
    """
    if "{entities}" not in mask_pattern:
        raise LayoutError(
            f"mask pattern {mask_pattern!r} must contain {{entities}}, the image's name up to "
            f"{image_suffix!r}, e.g. '{{entities}}_label-WMH_mask.nii.gz'"
        )
    suffixes = tuple(image_suffix + ext for ext in NIFTI_SUFFIXES)
    anat_dirs = [*root.glob("sub-*/anat"), *root.glob("sub-*/ses-*/anat")]
    images = sorted(p for d in anat_dirs for p in d.iterdir() if p.name.endswith(suffixes))
    if not images:
        raise LayoutError(
            f"no sub-*/[ses-*/]anat/*{image_suffix}.nii[.gz] found under {root} "
            "(set --image-suffix for another contrast)"
        )
    derivatives = root / "derivatives" / pipeline if pipeline else _only_pipeline(root)
    if not derivatives.is_dir():
        raise LayoutError(f"mask folder not found: {derivatives}")
    pairs = []
    for image in images:
        entities = nifti_stem(image.name, suffixes)
        mask_dir = derivatives / image.parent.relative_to(root)
        pattern = mask_pattern.replace("{entities}", glob.escape(entities))
        masks = sorted(mask_dir.glob(pattern)) if mask_dir.is_dir() else []
        if not masks:
            raise LayoutError(f"image {image} has no mask: expected {mask_dir / pattern}")
        if len(masks) > 1:
            names = ", ".join(m.name for m in masks)
            raise LayoutError(
                f"image {image} matches {len(masks)} masks in {mask_dir} ({names}); "
                "make --mask-pattern select one"
            )
        pairs.append(ScanPair(entities, image, masks[0]))
    return pairs


def _only_pipeline(root: Path) -> Path:
    derivatives = root / "derivatives"
    pipelines = (
        sorted(p for p in derivatives.iterdir() if p.is_dir()) if derivatives.is_dir() else []
    )
    if len(pipelines) == 1:
        return pipelines[0]
    if not pipelines:
        raise LayoutError(f"no mask folder: expected derivatives/<pipeline>/ in {root}")
    names = ", ".join(p.name for p in pipelines)
    raise LayoutError(
        f"{derivatives} holds several pipelines ({names}); choose one with --pipeline"
    )


def find_flat(
    root: Path,
    images_dir: str = FLAT_DEFAULTS["images_dir"],
    masks_dir: str = FLAT_DEFAULTS["masks_dir"],
) -> list[ScanPair]:
    """``<images_dir>/<name>`` + ``<masks_dir>/<name>``: the same file name in both folders."""
    image_folder, mask_folder = root / images_dir, root / masks_dir
    for folder, option in ((image_folder, "--images-dir"), (mask_folder, "--masks-dir")):
        if not folder.is_dir():
            raise LayoutError(f"folder not found: {folder} (set {option})")
    images = _niftis(image_folder)
    if not images:
        raise LayoutError(f"no NIfTI files (*.nii, *.nii.gz) in {image_folder}")
    masks = {p.name for p in _niftis(mask_folder)}
    pairs = []
    for image in images:
        mask = mask_folder / image.name
        if image.name not in masks:
            raise LayoutError(f"image {image} has no mask: expected {mask}")
        pairs.append(ScanPair(nifti_stem(image.name), image, mask))
    orphans = sorted(masks - {p.name for p in images})
    if orphans:
        # Usually a naming mismatch (.nii vs .nii.gz, a prefix), which would drop scans silently.
        raise LayoutError(
            f"mask {mask_folder / orphans[0]} has no image: expected {image_folder / orphans[0]}"
        )
    return pairs


def _niftis(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_nifti(p.name))


def _check_unique_subjects(pairs: Sequence[ScanPair]) -> None:
    duplicate = first_duplicate(pair.subject for pair in pairs)
    if duplicate is not None:
        first, second = (pairs[i] for i in duplicate)
        raise LayoutError(
            f"subject {second.subject!r} appears twice: {first.image} and {second.image}; "
            "remove one (a .nii beside a .nii.gz?) or rename a folder"
        )


def make_table(
    layout: str,
    root: str | Path,
    out: str | Path,
    spec: LabelSpec | None = None,
    options: Mapping[str, str] | None = None,
    affine_tolerance: float = AFFINE_TOLERANCE_MM,
) -> tuple[Path, int]:
    """Find the pairs, label each scan from its mask, write the CSV; return it and its rows.

    Nothing is written unless every mask gives a label. If no mask holds any of the chosen
    values the labels would all be 0, which trains nothing: that is an error naming the values
    the masks do hold (a mask saved as 0/255 needs ``--mask-values 255``).
    """
    spec = spec or LabelSpec()
    pairs = find_pairs(layout, root, options)
    out = Path(out)
    labels, found = [], set()
    for pair in pairs:
        mask, voxel_volume = read_mask(pair.mask, pair.image, affine_tolerance)
        found.update(int(v) for v in np.unique(mask) if v != 0)
        labels.append(label_from_array(mask, spec, voxel_volume))
    if not found & spec.values:
        chosen = ",".join(str(v) for v in sorted(spec.values))
        held = ",".join(str(v) for v in sorted(found)) or "none (every mask is empty)"
        raise LayoutError(
            f"no mask under {root} has a voxel of value(s) {chosen}, so every label would be 0; "
            f"non-zero values found: {held} (set --mask-values)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for pair, label in zip(pairs, labels, strict=True):
            writer.writerow(
                (pair.subject, _relative(pair.image, out), repr(label), _relative(pair.mask, out))
            )
    return out, len(pairs)


def _relative(path: Path, csv_path: Path) -> str:
    """``path`` relative to the CSV's folder, with ``/`` so the CSV works on any system."""
    base = csv_path.resolve().parent
    try:
        return Path(os.path.relpath(path.resolve(), base)).as_posix()
    except ValueError:  # another drive on Windows: no relative path exists
        return path.resolve().as_posix()
