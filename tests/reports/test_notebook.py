"""notebooks/learning_curves.ipynb runs top to bottom on a fake study (nbclient, python3 kernel)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "learning_curves.ipynb"


def test_learning_curves_notebook_executes(
    fake_study: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYDRALAB_STORAGE", fake_study)
    monkeypatch.setenv("HYDRALAB_STUDY", "fake")
    monkeypatch.setenv("HYDRALAB_REPORT_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("HYDRALAB_N_RESAMPLES", "100")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = [out for cell in notebook.cells for out in cell.get("outputs", [])]
    text = " ".join(str(out.get("data", {}).get("text/markdown", "")) for out in outputs)
    assert "hydranet ICC" in text and "missing" in text
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(images) == 2
    assert (tmp_path / "out" / "learning_curves.png").is_file()
