"""Region-of-interest preprocessing: the PVS recipe (smoothed region mask, crop to the region's
box, crop/pad) and the WMH recipe (centre of mass), chosen in the data config, with clear errors."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import torchio as tio
import yaml

from hydralab.data.datamodule import HydraDataModule
from hydralab.data.table import DatasetError, read_table
from hydralab.data.transforms import CropToRegion, MatchShape, RegionMask, preprocessing
from tests.helpers.scans import write_scan

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
BOX = (slice(6, 10), slice(5, 11), slice(4, 12))  # the region: 4 x 6 x 8 voxels


def _subject(image: np.ndarray, mask: np.ndarray) -> tio.Subject:
    return tio.Subject(
        image=tio.ScalarImage(tensor=torch.as_tensor(image, dtype=torch.float32)[None]),
        roi=tio.LabelMap(tensor=torch.as_tensor(mask, dtype=torch.int16)[None]),
    )


def _box_mask(shape=(16, 16, 16)) -> np.ndarray:
    mask = np.zeros(shape, np.int16)
    mask[BOX] = 1
    return mask


def test_region_mask_multiplies_by_the_smoothed_mask():
    mask = np.zeros((30, 30, 30), np.int16)
    mask[5:25, 5:25, 5:25] = 1
    out = RegionMask(sigma=2.0)(_subject(np.full((30, 30, 30), 10.0), mask))
    image = out["image"].data[0]
    assert image[15, 15, 15] == pytest.approx(10.0, abs=1e-3)  # 5 sigma inside: unchanged
    assert image[0, 15, 15] < 0.15  # 2.25 sigma outside: about 1 % is left
    # On the edge the smoothed weight is about one half; just outside it fades but is not 0.
    assert 4.0 < image[15, 15, 5] < 6.5
    assert 0.0 < image[15, 15, 4] < image[15, 15, 5]
    assert torch.equal(out["roi"].data[0], torch.as_tensor(mask))  # the mask itself is kept


def test_region_mask_with_sigma_zero_is_a_hard_mask():
    mask = _box_mask()
    out = RegionMask(sigma=0)(_subject(np.full((16, 16, 16), 3.0), mask))
    np.testing.assert_allclose(out["image"].data[0].numpy(), 3.0 * mask)


def test_crop_to_region_keeps_the_box_plus_margin_clipped_at_the_border():
    mask = _box_mask()
    image = np.arange(16**3, dtype=np.float32).reshape(16, 16, 16)
    out = CropToRegion(margin=2)(_subject(image, mask))
    assert out["image"].shape[1:] == (8, 10, 12)
    assert out["roi"].shape == out["image"].shape
    np.testing.assert_array_equal(out["image"].data[0].numpy(), image[4:12, 3:13, 2:14])
    # A margin larger than the room left stops at the scan's border.
    assert CropToRegion(margin=(10, 0, 1))(_subject(image, mask))["image"].shape[1:] == (16, 6, 10)


def test_region_transforms_name_a_missing_or_empty_mask():
    subject = tio.Subject(image=tio.ScalarImage(tensor=torch.ones(1, 4, 4, 4)))
    with pytest.raises(ValueError, match="no region mask 'roi'"):
        CropToRegion()(subject)
    with pytest.raises(ValueError, match="is empty"):
        RegionMask()(_subject(np.ones((4, 4, 4)), np.zeros((4, 4, 4))))


def test_match_shape_only_touches_scans_of_another_size():
    image = torch.rand(1, 12, 12, 12)
    same = MatchShape((12, 12, 12), "mass")(tio.ScalarImage(tensor=image))
    assert torch.equal(same.data, image)
    padded = torch.nn.functional.pad(image, (2, 2, 0, 0, 1, 1))  # 14 x 12 x 16
    back = MatchShape((12, 12, 12), "image")(tio.ScalarImage(tensor=padded))
    assert torch.equal(back.data, image)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"crop_centre": "region"}, "crop_centre='region' needs data.shape"),
        ({"crop_centre": "bbox", "shape": (8, 8, 8)}, "crop_centre must be one of"),
        ({"crop_centre": "region", "shape": (8, 8, 8), "roi_sigma": -1.0}, "roi_sigma must be"),
        ({"crop_centre": "region", "shape": (8, 8, 8), "roi_margin": (1, 2)}, "roi_margin must"),
        ({"crop_centre": "region", "shape": (8, 8, 8), "roi_margin": -3}, "roi_margin must"),
    ],
)
def test_bad_region_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HydraDataModule(csv="unused.csv", **kwargs)
    with pytest.raises(ValueError, match=message):
        preprocessing(**kwargs)


# -- the PVS recipe end to end, from a CSV with an 'roi' column ----------------------------------


def _region_dataset(root: Path, n: int = 4, shape=(16, 16, 16)) -> Path:
    """Scans of bright noise whose region mask is a box that moves from scan to scan."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        image = rng.normal(100.0, 5.0, size=shape)
        mask = np.zeros(shape, np.int16)
        mask[2 + i : 6 + i, 3:9, 4 + i : 10 + i] = 1
        write_scan(root / "images" / f"s{i}.nii.gz", image)
        write_scan(root / "roi" / f"s{i}.nii.gz", mask)
        split = "train" if i < n // 2 else "val"
        rows.append(
            {"image": f"images/s{i}.nii.gz", "roi": f"roi/s{i}.nii.gz", "label": i, "split": split}
        )
    csv = root / "dataset.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def _region_module(csv: Path, **kwargs) -> HydraDataModule:
    settings = {"shape": (8, 10, 10), "crop_centre": "region", "normalization": "none"}
    dm = HydraDataModule(csv=str(csv), augment=False, batch_size=2, **{**settings, **kwargs})
    dm.setup("fit")
    return dm


def test_read_table_carries_the_roi_column_relative_to_the_csv(tmp_path: Path):
    csv = _region_dataset(tmp_path)
    records = read_table(csv)
    assert [r.roi for r in records] == [tmp_path / "roi" / f"s{i}.nii.gz" for i in range(4)]
    assert all(r.roi is None for r in read_table(_without_roi(csv)))


def _without_roi(csv: Path) -> Path:
    path = csv.with_name("no_roi.csv")
    pd.read_csv(csv).drop(columns="roi").to_csv(path, index=False)
    return path


def test_pvs_recipe_masks_crops_around_the_region_and_pads_to_the_shape(tmp_path: Path):
    csv = _region_dataset(tmp_path)
    dm = _region_module(csv, roi_sigma=0.0, roi_margin=1)
    for split in ("train", "val"):
        for scan in dm.scans[split]:
            assert scan.data.shape == (1, 8, 10, 10)
    # Scan 0: box [2:6, 3:9, 4:10] + margin 1 = 6 x 8 x 8 voxels, padded with zeros to 8 x 10 x 10,
    # so the hard-masked region (4 x 6 x 6 = 144 voxels of ~100) sits in the middle.
    data = dm.scans["train"][0].data[0]
    assert int((data > 50).sum()) == 144
    assert data[2:6, 2:8, 2:8].min() > 50  # centred: one margin + one pad voxel on each side
    # Smoothing (sigma 2) lets the fringe through, fading with the distance to the region.
    smooth = _region_module(csv, roi_sigma=2.0, roi_margin=1).scans["train"][0].data[0]
    assert int((smooth > 1).sum()) > 144


def test_example_pvs_config_is_a_valid_data_config(tmp_path: Path):
    settings = yaml.safe_load((CONFIGS / "pvs_roi_example.yaml").read_text())
    settings.update(csv=str(_region_dataset(tmp_path, shape=(20, 20, 20))), batch_size=2)
    dm = HydraDataModule(**settings)
    dm.setup("fit")
    assert {tuple(s.data.shape) for s in dm.scans["train"]} == {(1, *settings["shape"])}
    assert settings["crop_centre"] == "region" and settings["roi_sigma"] == 2.0


def test_example_wmh_config_crops_around_the_centre_of_mass(tmp_path: Path):
    settings = yaml.safe_load((CONFIGS / "wmh_crop_example.yaml").read_text())
    assert settings["crop_centre"] == "mass"
    csv = _without_roi(_region_dataset(tmp_path, shape=(20, 20, 20)))
    dm = HydraDataModule(**{**settings, "csv": str(csv), "batch_size": 2})
    dm.setup("fit")
    assert {tuple(s.data.shape) for s in dm.scans["train"]} == {(1, *settings["shape"])}


def _rewrite_roi(csv: Path, index: int, writer) -> Path:
    path = csv.parent / pd.read_csv(csv).loc[index, "roi"]
    writer(path)
    return path


@pytest.mark.parametrize(
    ("writer", "message"),
    [
        (lambda p: p.unlink(), "region mask of subject 's1' not found: .*roi/s1.nii.gz"),
        (
            lambda p: write_scan(p, np.ones((16, 16, 12))),
            r"region mask .*roi/s1.nii.gz has shape \(16, 16, 12\) but scan .*images/s1.nii.gz "
            r"has \(16, 16, 16\)",
        ),
        (
            lambda p: write_scan(p, np.ones((16, 16, 16)), spacing=2.0),
            "region mask .*roi/s1.nii.gz and scan .*images/s1.nii.gz have different affines",
        ),
        (lambda p: write_scan(p, np.zeros((16, 16, 16))), r"region mask .*roi/s1.nii.gz .* empty"),
        (lambda p: p.write_bytes(b"\x1f\x8bnot a nifti"), "cannot read region mask .*s1.nii.gz"),
        (
            lambda p: nib.save(nib.Nifti1Image(np.ones((16, 16, 16, 2), np.float32), np.eye(4)), p),
            "region mask .* has 2 volumes",
        ),
    ],
)
def test_bad_region_masks_name_the_files(tmp_path: Path, writer, message):
    csv = _region_dataset(tmp_path)
    _rewrite_roi(csv, 1, writer)
    with pytest.raises(DatasetError, match=message):
        _region_module(csv)


def test_region_recipe_needs_the_roi_column(tmp_path: Path):
    csv = _without_roi(_region_dataset(tmp_path))
    with pytest.raises(DatasetError, match=r"no_roi.csv: subject 's0' has no region mask"):
        _region_module(csv)
    # Without the region recipe, the column is optional and ignored.
    assert len(_region_module(csv, crop_centre="mass").scans["train"]) == 2


def test_region_recipe_predicts_from_a_csv_but_not_a_bare_folder(tmp_path: Path):
    csv = _region_dataset(tmp_path)
    dm = HydraDataModule(
        csv=str(csv), predict_path=str(tmp_path / "images"), shape=(8, 8, 8), crop_centre="region"
    )
    with pytest.raises(DatasetError, match="is a folder, but data.crop_centre='region'"):
        dm.setup("predict")
    dm = HydraDataModule(predict_path=str(csv), shape=(8, 8, 8), crop_centre="region")
    dm.setup("predict")
    batches = list(dm.predict_dataloader())
    assert sum(len(b["index"]) for b in batches) == 4
    assert batches[0]["images"].shape[-3:] == (8, 8, 8)
