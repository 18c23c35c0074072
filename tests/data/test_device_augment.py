"""Batched on-device augmentation: TorchIO's distributions and TorchIO's resampling, per batch."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torchio as tio
from scipy.stats import ks_2samp

from hydralab.data.datamodule import HydraDataModule
from hydralab.data.device_augment import AugmentParams, BatchAugmentation
from hydralab.data.transforms import augmentation
from hydralab.training.module import HydraModule

# Even: the voxel centres are then half-integers from the image centre, so no rotation or
# translation used here puts a sample exactly on ITK's inside/outside edge, where float rounding
# (double in ITK, float here) would decide the padding.
SIDE = 16


def blobs(side: int = SIDE, offset: float = 0.1) -> torch.Tensor:
    """(1, D, H, W): two off-centre, anisotropic blobs on a floor, so every rotation shows."""
    g = torch.stack(torch.meshgrid(*[torch.arange(side, dtype=torch.float32)] * 3, indexing="ij"))
    a = torch.exp(-((g[0] - 4) ** 2 / 8 + (g[1] - 8) ** 2 / 20 + (g[2] - 6) ** 2 / 4))
    b = 0.5 * torch.exp(-((g[0] - 10) ** 2 + (g[1] - 4) ** 2 + (g[2] - 9) ** 2) / 6)
    return (a + b + offset)[None]


def params(
    degrees: tuple[float, ...], translation: tuple[float, ...], flips: tuple[int, ...] = ()
) -> AugmentParams:
    flip = torch.zeros(1, 3, dtype=torch.bool)
    flip[0, list(flips)] = True
    radians = torch.tensor([[math.radians(d) for d in degrees]])
    return AugmentParams(flip, radians, torch.tensor([translation], dtype=torch.float32))


# -- distributions ------------------------------------------------------------------------------


def test_sampled_rotations_and_translations_follow_torchio() -> None:
    torch.manual_seed(0)
    n, spacing = 2000, (2.0, 1.0, 0.5)
    cpu = augmentation(rotation=0.2, translation=2.0, spacing=spacing)
    affine = next(t for t in cpu.transforms if isinstance(t, tio.RandomAffine))
    draws = [
        affine.get_params(affine.scales, affine.degrees, affine.translation, False)
        for _ in range(n)
    ]
    tio_radians = torch.deg2rad(torch.stack([d[1] for d in draws])).float()
    tio_voxels = (torch.stack([d[2] for d in draws]) / torch.tensor(spacing)).float()
    device = BatchAugmentation(
        rotation=0.2, translation=2.0, affine=torch.diag(torch.tensor([*spacing, 1.0]))
    )
    ours = device.sample(n, generator=torch.Generator().manual_seed(1))
    for mine, theirs, limit in (
        (ours.radians, tio_radians, 0.2),
        (ours.translation, tio_voxels, 2.0),
    ):
        for axis in range(3):
            assert ks_2samp(mine[:, axis].numpy(), theirs[:, axis].numpy()).pvalue > 1e-3
            assert mine[:, axis].abs().max() <= limit
            assert mine[:, axis].abs().max() > 0.95 * limit  # the whole range, not a part of it
            assert mine[:, axis].std().item() == pytest.approx(limit / math.sqrt(3), rel=0.1)


def test_flips_follow_torchio_axis_by_axis() -> None:
    torch.manual_seed(0)
    n = 4000
    theirs = torch.tensor([tio.RandomFlip.get_params(0.5) for _ in range(n)], dtype=torch.float32)
    ours = BatchAugmentation(flip_axes=(0, 2)).sample(n, generator=torch.Generator().manual_seed(1))
    flips = ours.flips.float()
    assert not ours.flips[:, 1].any()  # an axis not in flip_axes never flips
    for axis in (0, 2):
        assert flips[:, axis].mean().item() == pytest.approx(
            theirs[:, axis].mean().item(), abs=0.05
        )
    # independent axes: both flip a quarter of the time, as in TorchIO
    both = (flips[:, 0] * flips[:, 2]).mean().item()
    assert both == pytest.approx((theirs[:, 0] * theirs[:, 2]).mean().item(), abs=0.05)


# -- resampling ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "affine",
    [np.eye(4), np.diag([2.0, 1.0, 0.5, 1.0]), np.diag([-1.2, 0.8, 1.5, 1.0])],
    ids=["identity", "anisotropic", "lps-flipped"],
)
@pytest.mark.parametrize(
    ("degrees", "translation", "flips"),
    [
        ((0, 0, 90), (0, 0, 0), ()),
        ((90, 0, 0), (0, 0, 0), ()),
        ((7, -5, 11), (1.3, -0.7, 0.4), ()),
        ((25, -30, 40), (3.0, -2.5, 1.7), (0, 2)),  # large: much of the volume is padding
    ],
)
def test_fixed_transform_matches_torchio_affine(affine, degrees, translation, flips) -> None:
    volume = blobs()
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    mm = tuple(t * s for t, s in zip(translation, spacing, strict=True))
    steps = [tio.Flip(axes=flips)] if flips else []
    steps.append(tio.Affine(scales=1, degrees=degrees, translation=mm, default_pad_value="minimum"))
    expected = tio.Compose(steps)(tio.ScalarImage(tensor=volume, affine=affine)).data
    device = BatchAugmentation(affine=torch.as_tensor(affine))
    out = device.apply(volume[None], params(degrees, translation, flips))[0]
    # the whole volume, padding included: ITK pads beyond half a voxel out, with the minimum
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(out, volume, atol=1e-3)


def test_padding_is_the_scans_minimum() -> None:
    volume = blobs(offset=0.3)
    out = BatchAugmentation().apply(volume[None], params((0, 0, 0), (3.0, 0, 0)))[0]
    assert (out[:, :3] == volume.min()).all()  # the three slices shifted in from outside
    torch.testing.assert_close(out[:, 3:], volume[:, :-3], atol=1e-5, rtol=0)


@pytest.mark.parametrize("resamples", [False, True])
def test_flips_match_torch_flip_image_by_image(resamples: bool) -> None:
    images = torch.stack([blobs(), blobs(offset=0.5), blobs(offset=0.2)])
    flips = torch.tensor([[True, False, True], [False, False, False], [False, True, False]])
    angle = 0.2 if resamples else 0.0
    device = BatchAugmentation(rotation=angle, translation=angle)
    out = device.apply(images, AugmentParams(flips, torch.zeros(3, 3), torch.zeros(3, 3)))
    expected = [images[0].flip(1, 3), images[1], images[2].flip(2)]
    for got, want in zip(out, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_zero_slots_stay_zero_and_real_slots_are_augmented() -> None:
    images = torch.stack([blobs(), blobs(offset=0.4)]).expand(2, 2, 1, SIDE, SIDE, SIDE).clone()
    zero = torch.tensor([[False, True], [True, False]])
    images[zero] = 0
    before = images.clone()
    out = BatchAugmentation()(images, zero, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    assert torch.equal(images, before)  # the input is left alone
    assert (out[zero] == 0).all()
    for b, k in (~zero).nonzero():
        assert not torch.allclose(out[b, k], images[b, k], atol=1e-3)
        assert out[b, k].min() >= images[b, k].min() - 1e-6  # trilinear: no new extremes
    again = BatchAugmentation()(images, zero, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, again)  # a seeded generator reproduces the draw


def test_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match="flip_axes"):
        BatchAugmentation(flip_axes=(3,))
    with pytest.raises(ValueError, match="rotation and translation"):
        BatchAugmentation(rotation=-0.1)


# -- the data module ----------------------------------------------------------------------------


def test_augment_on_is_validated(tiny_csv: Path) -> None:
    with pytest.raises(ValueError, match="data.augment_on must be 'cpu'.*'device'.*'gpu'"):
        HydraDataModule(csv=str(tiny_csv), augment_on="gpu")


class Recorder(HydraModule):
    """Keeps the batches its steps receive, after Lightning's transfer hooks."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seen: dict[str, list[dict[str, torch.Tensor]]] = {"train": [], "val": []}

    def training_step(self, batch, batch_idx):
        self.seen["train"].append({k: v.clone() for k, v in batch.items()})
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        self.seen["val"].append({k: v.clone() for k, v in batch.items()})
        return super().validation_step(batch, batch_idx)


def test_device_augmentation_runs_on_training_batches_only(tiny_csv: Path, tmp_path: Path) -> None:
    kwargs = {"method": "hydranet", "k": 2, "p": 0.3}
    data = HydraDataModule(csv=str(tiny_csv), batch_size=4, augment_on="device", seed=3, **kwargs)
    module = Recorder(**kwargs)
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=data)
    assert data.train_dataset().augment is None  # no TorchIO augmentation on the CPU as well
    stored = torch.stack([s.data for s in data.scans["train"]])
    real_slots = 0
    for batch in module.seen["train"]:
        zero = batch["zero"]
        assert (batch["images"][zero] == 0).all()
        for b, k in (~zero).nonzero():
            raw = stored[batch["index"][b, k]]
            assert not torch.allclose(batch["images"][b, k], raw, atol=1e-3)
            real_slots += 1
    assert real_slots > 0
    val = torch.stack([s.data for s in data.scans["val"]])
    assert torch.equal(torch.cat([b["images"][:, 0] for b in module.seen["val"]]), val)


@pytest.mark.slow
def test_fit_from_the_command_line_with_device_augmentation(
    tiny_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The configured augmentation runs on every training batch, on the model's device, and what
    the model trains on is its output: not the stored scans (a silent no-op or a hook never
    attached would train on those, as nothing else augments on this path)."""
    from hydralab.training.runner import run_cli

    steps: list[tuple[torch.device, dict[str, torch.Tensor]]] = []
    calls: list[tuple[BatchAugmentation, torch.device, torch.Tensor]] = []
    training_step, augment = HydraModule.training_step, BatchAugmentation.__call__

    def recording_step(self, batch, batch_idx):
        steps.append((self.device, {k: v.detach().clone() for k, v in batch.items()}))
        return training_step(self, batch, batch_idx)

    def spying_augment(self, images, zero=None, generator=None):
        out = augment(self, images, zero, generator)
        calls.append((self, images.device, out.detach().clone()))
        return out

    monkeypatch.setattr(HydraModule, "training_step", recording_step)
    monkeypatch.setattr(BatchAugmentation, "__call__", spying_augment)
    configs = Path(__file__).resolve().parents[2] / "configs"
    cli = run_cli(
        [
            "fit",
            f"--config={configs / 'blobs' / 'hydranet.yaml'}",
            f"--data.csv={tiny_csv}",
            "--data.n_train=null",
            "--data.augment_on=device",
            "--trainer.max_steps=2",
            "--trainer.val_check_interval=2",
            "--trainer.enable_progress_bar=false",
            f"--tracking.root={tmp_path / 'runs'}",
        ]
    )
    data = cli.datamodule
    assert cli.trainer.global_step == 2 and len(steps) == 2
    assert data.train_dataset().augment is None  # no TorchIO augmentation on the CPU path
    # One call per training step (none for validation), by the data module's configured
    # augmentation, on the device the model trains on; the step receives its output.
    assert len(calls) == 2
    for (augmenter, device, out), (model_device, batch) in zip(calls, steps, strict=True):
        assert augmenter is data.batch_augment
        assert device == batch["images"].device == model_device
        assert torch.equal(out, batch["images"])
    stored = torch.stack([scan.data for scan in data.scans["train"]])
    real_slots = 0
    for _, batch in steps:
        zero = batch["zero"]
        assert (batch["images"][zero] == 0).all()
        for b, k in (~zero).nonzero():
            raw = stored[batch["index"][b, k]].to(batch["images"].device)
            assert not torch.allclose(batch["images"][b, k], raw, atol=1e-3)
            real_slots += 1
    assert real_slots > 0
