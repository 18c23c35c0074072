"""`hydralab make-table` end to end: a WMH-challenge tree in, a readable dataset CSV out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from hydralab.cli import main
from hydralab.data.nifti import AFFINE_TOLERANCE_MM
from hydralab.data.table import read_table


def _wmh_tree(root: Path) -> Path:
    """Two subjects: Utrecht_0 with two lesions (3 and 1 voxels), Singapore_50 with one."""
    for folder, lesions in (("Utrecht/0", [(0, 3), (5, 1)]), ("Singapore/50", [(2, 2)])):
        (root / folder / "pre").mkdir(parents=True)
        mask = np.zeros((8, 8, 8), np.uint8)
        for row, length in lesions:
            mask[row, 0, :length] = 1
        mask[7, 7, 7] = 2  # other pathology: ignored by default
        affine = np.diag([2.0, 2.0, 2.0, 1.0])
        nib.save(nib.Nifti1Image(mask, affine), root / folder / "wmh.nii.gz")
        image = nib.Nifti1Image(np.ones((8, 8, 8), np.float32), affine)
        nib.save(image, root / folder / "pre" / "FLAIR.nii.gz")
    return root


def test_make_table_writes_a_csv_read_table_accepts(tmp_path: Path, capsys):
    root = _wmh_tree(tmp_path / "training")
    out = tmp_path / "wmh.csv"
    args = ["make-table", str(root), "--layout", "wmh-challenge", "--out", str(out)]
    assert main([*args, "--label", "count"]) == 0
    assert "wrote 2 scans" in capsys.readouterr().out
    assert {r.subject: r.label for r in read_table(out)} == {"Singapore_50": 1.0, "Utrecht_0": 2.0}
    assert main([*args, "--label", "count", "--min-size", "2"]) == 0
    assert {r.subject: r.label for r in read_table(out)} == {"Singapore_50": 1.0, "Utrecht_0": 1.0}
    assert main([*args, "--units", "mm3", "--mask-values", "1,2"]) == 0
    assert {r.subject: r.label for r in read_table(out)} == {
        "Singapore_50": 24.0,  # (2 + 1) voxels x 8 mm³
        "Utrecht_0": 40.0,  # (3 + 1 + 1) voxels x 8 mm³
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--label", "count", "--units", "mm3"], "units=mm3 applies to label=volume only"),
        (["--mask-values", "wmh"], "expected integers separated by commas"),
        (["--min-size", "0"], "min_size must be >= 1"),
        (["--pipeline", "manual"], "--pipeline does not apply to --layout wmh-challenge"),
    ],
)
def test_make_table_errors_are_one_line_messages(tmp_path: Path, capsys, extra, message):
    root = _wmh_tree(tmp_path / "training")
    args = ["make-table", str(root), "--layout", "wmh-challenge", "--out", str(tmp_path / "t.csv")]
    assert main([*args, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "t.csv").exists()


def test_missing_mask_names_the_path(tmp_path: Path, capsys):
    root = _wmh_tree(tmp_path / "training")
    (root / "Singapore" / "50" / "wmh.nii.gz").unlink()
    args = ["make-table", str(root), "--layout", "wmh-challenge", "--out", str(tmp_path / "t.csv")]
    assert main(args) == 2
    assert f"expected {root / 'Singapore' / '50' / 'wmh.nii.gz'}" in capsys.readouterr().err


def test_make_table_is_listed_and_stays_light(tmp_path: Path):
    """`--help` lists make-table, and make-table itself never imports torch (it answers fast)."""
    root = _wmh_tree(tmp_path / "training")
    code = (
        "import sys, contextlib, io\n"
        "from hydralab import cli\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    cli.main(['--help'])\n"
        "assert 'make-table' in out.getvalue(), out.getvalue()\n"
        f"assert cli.main(['make-table', {str(root)!r}, '--layout', 'wmh-challenge',\n"
        f"                 '--out', {str(tmp_path / 't.csv')!r}]) == 0\n"
        "heavy = [m for m in ('torch', 'lightning', 'wandb', 'torchio') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_affine_tolerance_defaults_to_the_shared_one(tmp_path: Path, capsys):
    """Without --affine-tolerance the mask check uses AFFINE_TOLERANCE_MM, the one every mask
    check shares; the option widens it."""
    root = _wmh_tree(tmp_path / "training")
    mask_path = root / "Utrecht" / "0" / "wmh.nii.gz"
    mask = nib.load(mask_path)
    shifted = mask.affine.copy()
    shifted[0, 3] += 2 * AFFINE_TOLERANCE_MM
    nib.save(nib.Nifti1Image(np.asarray(mask.dataobj), shifted), mask_path)
    args = ["make-table", str(root), "--layout", "wmh-challenge", "--out", str(tmp_path / "t.csv")]
    assert main(args) == 2
    assert f"> {AFFINE_TOLERANCE_MM} mm" in capsys.readouterr().err
    assert main([*args, "--affine-tolerance", str(4 * AFFINE_TOLERANCE_MM)]) == 0
