"""Preprocessing and augmentation: the min-max shortcut, robust normalisation, no scaling."""

import numpy as np
import pytest
import torch
import torchio as tio

from hydralab.data.table import read_table
from hydralab.data.transforms import augmentation, intensity_normalization
from hydralab.datasets.synthetic import SyntheticSpec, make_dataset


@pytest.fixture(scope="module")
def blob_scans(tmp_path_factory) -> tuple[list[torch.Tensor], np.ndarray]:
    root = tmp_path_factory.mktemp("blobs")
    # Difficulty 1: the shortcut in its plain form (r = -0.54). At the default difficulty 2 the
    # bias field and scanner scale blur it to r = -0.18, still there but weaker.
    spec = SyntheticSpec("blobs", n_train=60, n_val=1, n_test=1, size=16, difficulty=1.0)
    csv = make_dataset(spec, root)
    records = [r for r in read_table(csv) if r.split == "train"]
    images = [tio.ScalarImage(r.image).data.float() for r in records]
    return images, np.array([r.label for r in records])


def _mean_intensity_vs_label(images, labels, kind: str, percentiles=(0.5, 99.5)) -> float:
    normalize = intensity_normalization(kind, percentiles)
    means = [normalize(tio.ScalarImage(tensor=image)).data.mean().item() for image in images]
    return float(np.corrcoef(means, labels)[0, 1])


def test_minmax_creates_the_shortcut_and_robust_options_remove_most_of_it(blob_scans):
    images, labels = blob_scans
    minmax = _mean_intensity_vs_label(images, labels, "minmax")
    assert minmax < -0.3  # the brightest blob sets the scale: more blobs, darker scan
    # Percentiles below the lesion voxels' share: the lesions no longer set the scale.
    robust = _mean_intensity_vs_label(images, labels, "percentile", (1.0, 90.0))
    assert abs(robust) < abs(minmax) / 3, robust
    # The default upper percentile (99.5) falls inside the blobs when there are many of them.
    assert _mean_intensity_vs_label(images, labels, "percentile") < -0.3


def test_normalisations_produce_their_range(blob_scans):
    image = tio.ScalarImage(tensor=blob_scans[0][0])
    out = intensity_normalization("minmax")(image).data
    assert out.min() == 0 and out.max() == pytest.approx(1)
    out = intensity_normalization("percentile")(image).data
    assert out.min() >= 0 and out.max() <= 1 + 1e-6
    out = intensity_normalization("zscore")(image).data
    assert out.mean().item() == pytest.approx(0, abs=1e-4)
    assert out.std().item() == pytest.approx(1, abs=1e-2)
    with pytest.raises(ValueError, match="normalization must be one of"):
        intensity_normalization("robust")


def test_augmentation_keeps_the_lesion_volume_and_the_ranges():
    volume = torch.zeros(1, 20, 20, 20)
    volume[0, 8:12, 8:12, 8:12] = 1.0
    augment = augmentation(rotation=0.2, translation=2.0)
    affine = next(t for t in augment.transforms if isinstance(t, tio.RandomAffine))
    assert affine.degrees == pytest.approx((-11.459, 11.459) * 3, abs=1e-3)
    assert affine.translation == pytest.approx((-2.0, 2.0) * 3)
    assert affine.scales == (1, 1) * 3
    torch.manual_seed(0)
    for _ in range(5):
        out = augment(tio.ScalarImage(tensor=volume)).data
        assert out.sum().item() == pytest.approx(64, rel=0.1)  # no scaling: volume preserved


def test_translation_is_in_voxels_whatever_the_spacing():
    augment = augmentation(translation=2.0, spacing=(0.5, 1.0, 2.0))
    affine = next(t for t in augment.transforms if isinstance(t, tio.RandomAffine))
    assert affine.translation == pytest.approx((-1.0, 1.0, -2.0, 2.0, -4.0, 4.0))


def test_no_augmentation_when_everything_is_off():
    assert len(augmentation(flip_axes=(), rotation=0, translation=0).transforms) == 0
