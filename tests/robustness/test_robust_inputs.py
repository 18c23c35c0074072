"""Robustness of the inputs not already covered in tests/data: truncated or mislabelled scan
files, a one-volume 4D scan, constant scans, CSVs in other encodings, negative labels, and
outputs that cannot be written.

Each case is a row of docs/robustness.md.
"""

from __future__ import annotations

import errno
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from hydralab import cli
from hydralab.cli import main
from hydralab.data.scans import load_scan
from hydralab.data.table import DatasetError, ScanRecord, read_table
from hydralab.data.transforms import preprocessing
from hydralab.training.checkpoints import CheckpointWriteError
from tests.helpers.scans import write_scan


def _load(path: Path, normalization: str = "minmax"):
    record = ScanRecord("s01", path, 1.0, "train")
    return load_scan(record, preprocessing(normalization, None, None, "mass", (0.5, 99.5)))


def _truncated(path: Path) -> Path:
    """A download or copy that stopped half-way."""
    write_scan(path, np.random.default_rng(0).normal(size=(12, 12, 12)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: _truncated(d / "cut.nii.gz"), "Compressed file ended"),
        (lambda d: _truncated(d / "cut.nii"), "Expected 6912 bytes"),
        (
            lambda d: (d / "table.nii").write_text("subject,label\n" * 40) and d / "table.nii",
            "Cannot work out file type",
        ),
    ],
    ids=["truncated-gzip", "truncated-nifti", "text-named-nii"],
)
def test_unreadable_scans_name_the_file(tmp_path: Path, make, message: str):
    path = make(tmp_path)
    with pytest.raises(DatasetError, match=message) as error:
        _load(path)
    assert f"cannot read scan {path} (subject 's01')" in str(error.value)


def test_a_4d_scan_with_one_volume_is_a_3d_scan(tmp_path: Path):
    """(x, y, z, 1) is how some converters write a 3D scan; only real 4D series are refused."""
    path = tmp_path / "one.nii.gz"
    array = np.random.default_rng(0).normal(size=(12, 12, 12, 1)).astype(np.float32)
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    assert _load(path).data.shape == (1, 12, 12, 12)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((12, 12), r"has shape \(12, 12\): a 2D image"),
        ((12, 12, 1), r"has shape \(12, 12, 1\): a 2D image \(or a single slice\)"),
        ((12, 12, 6, 3), r"has 3 volumes \(a 4D image, shape \(12, 12, 6, 3\)\)"),
        ((12, 12, 6, 1, 2), r"has 2 volumes \(a 4D image, shape \(12, 12, 6, 1, 2\)\)"),
    ],
    ids=["2d", "one-slice", "4d", "5d"],
)
def test_a_scan_that_is_not_one_3d_volume_is_refused_whatever_data_shape_says(
    tmp_path: Path, shape: tuple[int, ...], message: str
):
    """TorchIO reads a 2D image as (1, x, y, 1); a fixed data.shape used to pad it into a 3D
    scan that trained without a word. The file's own shape is checked before any padding."""
    path = tmp_path / "flat.nii.gz"
    array = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    record = ScanRecord("s01", path, 1.0, "train")
    with pytest.raises(DatasetError, match=message) as error:
        load_scan(record, preprocessing("minmax", None, (12, 12, 12), "mass"))
    assert str(error.value).startswith(f"scan {path} (subject 's01') has ")
    assert error.value.__cause__ is None  # the message is the whole story


@pytest.mark.parametrize("normalization", ["minmax", "percentile", "zscore"])
@pytest.mark.parametrize("value", [0.0, 7.0])
def test_a_constant_scan_is_refused_naming_the_file(tmp_path: Path, normalization, value):
    """An all-zero (or constant) scan is a failed export, and looks like Hydranet's empty slot.

    Unchecked, min-max and percentile would keep it unnormalised with only TorchIO's warning
    (which does not name the file), and z-score would fail with TorchIO's RuntimeError.
    """
    path = write_scan(tmp_path / "blank.nii.gz", np.full((12, 12, 12), value))
    with pytest.raises(DatasetError, match=r"blank\.nii\.gz.*constant") as error:
        _load(path, normalization)
    assert ("all zeros" if value == 0 else "every voxel is 7") in str(error.value)


def test_a_preprocessing_failure_names_the_file(tmp_path: Path):
    """A scan that varies, but not inside its crop: z-score's own error becomes a DatasetError."""
    array = np.full((12, 12, 12), 5.0)
    array[0, 0, 0] = 9.0  # outside the centred 4^3 crop
    path = write_scan(tmp_path / "flat_centre.nii.gz", array)
    record = ScanRecord("s01", path, 1.0, "train")
    with pytest.raises(DatasetError, match=r"cannot preprocess scan .*flat_centre\.nii\.gz") as e:
        load_scan(record, preprocessing("zscore", None, (4, 4, 4), "image"))
    assert isinstance(e.value.__cause__, RuntimeError)


@pytest.mark.parametrize(
    ("encoding", "text"),
    [("latin-1", "image,label\nimágé.nii,1\n"), ("utf-16", "image,label\na.nii,1\n")],
)
def test_a_csv_not_in_utf8_names_the_file(tmp_path: Path, encoding: str, text: str):
    csv = tmp_path / "export.csv"
    csv.write_text(text, encoding=encoding)
    with pytest.raises(DatasetError, match=rf"{csv}: not a readable CSV \('utf-8' codec") as error:
        read_table(csv)
    assert "save it as UTF-8" in str(error.value)


def test_negative_labels_are_read_as_they_are(tmp_path: Path):
    """A sum of negative labels is still additive (a change in lesion count): no error."""
    csv = tmp_path / "d.csv"
    csv.write_text("image,label\na.nii,-3.5\nb.nii,-0\nc.nii,2\n")
    assert [r.label for r in read_table(csv)] == [-3.5, 0.0, 2.0]


def test_an_output_that_cannot_be_written_is_one_line_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """An OSError (a file where a folder should be, a full disk) prints as a message, exit 2."""
    in_the_way = tmp_path / "data"
    in_the_way.write_text("not a folder")
    assert main(["make-data", "blobs", str(in_the_way / "blobs"), "--n-train", "2"]) == 2
    err = capsys.readouterr().err
    assert err == f"hydralab: error: Not a directory: {in_the_way / 'blobs' / 'images'}\n"


def test_a_checkpoint_write_error_prints_its_message_alone(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    message = "could not write checkpoint X at step 4 (No space left on device); ..."

    def disk_full(argv: list[str], from_command_line: bool) -> int:
        raise CheckpointWriteError(errno.ENOSPC, message)

    monkeypatch.setattr(cli, "_run", disk_full)
    assert main(["fit"]) == 2
    assert capsys.readouterr().err == f"hydralab: error: {message}\n"  # no "[Errno 28]"
