"""optuna-dashboard on a study whose trials reported intermediate values: over HTTP, and in a
real headless Chromium (skipped when none is installed; .ci/run installs Debian's)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
import pandas as pd
import pytest

from hydralab.sweeps.artifacts import ARTIFACTS_DIR, artifact_store, record_store
from hydralab.sweeps.dashboard import HOST, dashboard_server, find_storage
from hydralab.sweeps.storage import STORAGE_ENV, default_storage_url
from hydralab.training.prediction_plot import write_prediction_plot

METRIC = "val/icc_c1"
CURVES = {0: [0.1, 0.4, 0.6], 1: [0.2, 0.3, 0.35]}  # trial -> value at steps 50, 100, 150
SCREENSHOT_ENV = "HYDRALAB_DASHBOARD_SCREENSHOT"
"""Also write the browser's screenshot to this path (how docs/images/dashboard.png was made)."""


def _fake_study(sweep_dir: Path) -> optuna.Study:
    """A finished study as a sweep leaves it: a metric name, curves, a trial's plot uploaded."""
    study = optuna.create_study(
        study_name="fake", storage=default_storage_url(sweep_dir), direction="maximize"
    )
    with warnings.catch_warnings():  # experimental in Optuna 4 and 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([METRIC])
    store = artifact_store(record_store(study, sweep_dir))
    csv = sweep_dir / "test_predictions.csv"
    pd.DataFrame({"label": [1.0, 2.0, 3.0], "prediction": [1.1, 1.8, 3.3]}).to_csv(csv)
    for number, curve in CURVES.items():
        trial = study.ask({"model.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2)})
        for step, value in zip((50, 100, 150), curve, strict=True):
            trial.report(value, step=step)
        if number == 0:
            optuna.artifacts.upload_artifact(
                artifact_store=store,
                file_path=str(write_prediction_plot(csv)),
                study_or_trial=trial,
            )
        study.tell(trial, max(curve))
    return study


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """The dashboard of the fake study, served from a thread; its study page's address."""
    sweep_dir = tmp_path / "sweeps" / "fake"
    sweep_dir.mkdir(parents=True)
    _fake_study(sweep_dir)
    with dashboard_server(default_storage_url(sweep_dir), "fake", port=0) as (server, address):
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield address
        finally:
            server.shutdown()


def _get(url: str) -> tuple[bytes, str]:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return answer.read(), answer.headers["Content-Type"]


def test_the_api_shows_the_metric_name_curves_and_artifacts(served: str):
    assert served.startswith(f"http://{HOST}:")
    base, _, page = served.partition("/dashboard")
    study_id = page.rsplit("/", 1)[-1]
    detail = json.loads(_get(f"{base}/api/studies/{study_id}")[0])
    assert detail["objective_names"] == [METRIC]
    assert detail["has_intermediate_values"]
    for trial in detail["trials"]:
        curve = [(v["step"], v["value"]) for v in trial["intermediate_values"]]
        assert curve == list(zip((50, 100, 150), CURVES[trial["number"]], strict=True))
    first = detail["trials"][0]
    (plot,) = first["artifacts"]
    body, kind = _get(f"{base}/artifacts/{study_id}/{first['trial_id']}/{plot['artifact_id']}")
    assert kind == "image/png" and body[:4] == b"\x89PNG"
    html, kind = _get(served)  # the single-page app itself
    assert kind.startswith("text/html") and b"bundle.js" in html


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if found := shutil.which(name):
            return found
    return None


def _browse(
    browser: str, address: str, *action: str, size: tuple[int, int] = (1400, 2200)
) -> subprocess.CompletedProcess[str]:
    """Load the page headless, letting its scripts fetch the study and draw, then act."""
    command = [
        browser,
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--hide-scrollbars",
        f"--window-size={size[0]},{size[1]}",
        "--virtual-time-budget=15000",
        *action,
        address,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def test_a_browser_shows_the_metric_name_and_the_intermediate_values(served: str, tmp_path: Path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install -y chromium)")
    page = _browse(browser, served, "--dump-dom").stdout
    assert METRIC in page  # the objective's axis and selector say val/icc_c1, not "Objective 0"
    assert "Intermediate values" in page
    assert "trial #0" in page and "trial #1" in page  # one curve per trial
    png = tmp_path / "dashboard.png"
    _browse(browser, served, f"--screenshot={png}")
    from PIL import Image

    with Image.open(png) as image:
        assert image.size == (1400, 2200)
        assert len(image.convert("L").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50
    if target := os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(png, target)


def test_find_storage_takes_the_given_the_environment_or_the_studys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    root = tmp_path / "sweeps"
    assert find_storage("sqlite:///x.db", "s", root) == "sqlite:///x.db"
    assert find_storage(None, "s", root) == default_storage_url(root / "s")
    with pytest.raises(ValueError, match=r"give --study NAME or --storage URL .*: none\)"):
        find_storage(None, None, root)
    (root / "only").mkdir(parents=True)
    (root / "only" / "study.db").touch()
    assert find_storage(None, None, root) == default_storage_url(root / "only")
    monkeypatch.setenv(STORAGE_ENV, "sqlite:///env.db")
    assert find_storage(None, "s", root) == "sqlite:///env.db"


def test_an_unknown_study_or_a_missing_storage_is_one_line(tmp_path: Path):
    sweep_dir = tmp_path / "fake"
    sweep_dir.mkdir()
    _fake_study(sweep_dir)
    unknown = dashboard_server(default_storage_url(sweep_dir), "other", port=0)
    with pytest.raises(ValueError, match=r"no study 'other' in .*; it holds \['fake'\]"):
        unknown.__enter__()
    missing = dashboard_server(default_storage_url(tmp_path / "nowhere"), None, port=0)
    with pytest.raises(ValueError, match="does not exist"):
        missing.__enter__()
    assert not (tmp_path / "nowhere").exists()  # no empty database made on the way
    assert (sweep_dir / ARTIFACTS_DIR).is_dir()
