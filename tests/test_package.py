"""hydralab works outside its checkout: the configs and sweep files ship inside the package, a
packaged name works wherever a path does, a user's config finds its data next to itself, and
`hydralab demo` runs from an empty folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from hydralab import resources
from hydralab.cli import main
from hydralab.training.runner import check_config, config_arguments

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
HYDRALAB = Path(PYTHON).parent / "hydralab"


def _shipped(folder: str, pattern: str) -> set[str]:
    return {path.relative_to(ROOT / folder).as_posix() for path in (ROOT / folder).glob(pattern)}


def _build_wheel(out: Path) -> Path:
    """A wheel built from a copy of the sources (an in-tree build would write build/ into the
    checkout), offline with the venv's setuptools, as ``pip install .`` builds it."""
    source = out / "source"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__")
    for name in ("hydralab", "configs", "sweeps"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    command = [PYTHON, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*command, str(source), "-w", str(out)], check=True, capture_output=True)
    (wheel,) = out.glob("hydralab-*.whl")
    return wheel


def test_the_wheel_ships_every_config_and_sweep_file_where_the_package_finds_them(
    tmp_path: Path,
):
    wheel = _build_wheel(tmp_path / "wheel")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {n.removeprefix("hydralab/configs/") for n in names if "hydralab/configs/" in n}
    sweeps = {n.removeprefix("hydralab/sweep_files/") for n in names if "/sweep_files/" in n}
    assert configs == _shipped("configs", "**/*.yaml")
    assert sweeps == _shipped("sweeps", "*.yaml")
    assert "hydralab/resources.py" in names and "hydralab/training/runner.py" in names

    # Installed from the wheel (its files first on the path), run from an empty folder: the
    # names resolve inside the installed package, and a sweep's ../configs base config too.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    empty = tmp_path / "empty"
    empty.mkdir()
    script = (
        "import hydralab, hydralab.resources as r, hydralab.sweeps.spec as s;"
        "print(hydralab.__file__);"
        "print(r.find_file('configs', 'pvs/hydranet'));"
        "print(s.load_spec(r.find_file('sweeps', 'learning_curve')).base_config)"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [PYTHON, "-c", script], cwd=empty, env=env, capture_output=True, text=True, check=True
    )
    package, config, base = done.stdout.split()
    installed = site / "hydralab"
    assert Path(package) == installed / "__init__.py"
    assert Path(config) == installed / "configs" / "pvs" / "hydranet.yaml"
    assert Path(base) == (installed / "configs" / "pvs" / "hydranet.yaml").resolve()


def test_every_package_and_config_folder_is_listed_in_pyproject():
    """setuptools is given an explicit package list (for the folder mapping): a new
    subpackage or config folder missing from it would silently not ship."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    code = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "hydralab").rglob("__init__.py")
    }
    data = {"hydralab.configs", "hydralab.sweep_files"} | {
        f"hydralab.configs.{path.name}" for path in (ROOT / "configs").iterdir() if path.is_dir()
    }
    assert set(setuptools["packages"]) == code | data
    assert setuptools["package-dir"] == {
        "hydralab.configs": "configs",
        "hydralab.sweep_files": "sweeps",
    }


def test_a_packaged_name_resolves_with_or_without_yaml_and_a_real_file_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    shipped = ROOT / "configs" / "pvs" / "hydranet.yaml"  # the editable install's configs
    assert resources.find_file("configs", "pvs/hydranet") == shipped
    assert resources.find_file("configs", "pvs/hydranet.yaml") == shipped
    assert resources.find_file("sweeps", "learning_curve") == ROOT / "sweeps/learning_curve.yaml"
    assert resources.find_file("configs", "pvs/nothing") == Path("pvs/nothing")  # left as given
    assert resources.packaged("configs", "pvs") is None  # a folder is not a config
    assert {"pvs/hydranet", "plateau", "trainer_cpu"} <= set(resources.available("configs"))

    mine = tmp_path / "pvs" / "hydranet.yaml"
    mine.parent.mkdir()
    mine.write_text("model: {k: 2}\n")
    assert resources.find_file("configs", "pvs/hydranet.yaml") == Path("pvs/hydranet.yaml")


@pytest.mark.parametrize("command", ["fit", "validate", "test", "predict"])
def test_every_lightning_command_takes_a_packaged_config_name_and_its_compositions(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    monkeypatch.chdir(tmp_path)  # an empty folder: no configs/ here
    with pytest.raises(SystemExit) as done:
        main([command, "--config", "pvs/hydranet", "--config=plateau", "--print_config"])
    assert done.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["k"] == 4  # pvs/hydranet.yaml
    assert config["data"]["crop_centre"] == "region"  # its `data: data.yaml`
    assert config["trainer"]["val_check_interval"] == 50  # its `trainer: ../trainer_cpu.yaml`
    assert config["trainer"]["max_steps"] == 20000  # plateau.yaml, given by name
    # A packaged config's data path means the working directory, where make-data writes.
    assert config["data"]["csv"] == "data/pvs/dataset.csv"


def _user_config(folder: Path, csv: str, nested: bool = False) -> Path:
    """A user's config whose data path is relative (to the config, or to the working folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {"csv": csv, "n_train": None, "batch_size": 4}
    if nested:
        (folder / "my_data.yaml").write_text(yaml.safe_dump(data))
        data = "my_data.yaml"
    config = {"data": data, "model": {"method": "hydranet", "k": 2, "p": 0.1}}
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("nested", [False, True], ids=["in the config", "in its data file"])
def test_a_user_configs_data_path_is_relative_to_the_config_from_any_folder(
    tmp_path: Path, tiny_csv: Path, monkeypatch: pytest.MonkeyPatch, nested: bool
):
    project = tmp_path / "project"
    shutil.copytree(tiny_csv.parent, project / "my")
    config = _user_config(project, "my/dataset.csv", nested)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    args = config_arguments(["fit", "--config", str(config), "--data.n_train=8"])
    absolute = str((project / "my" / "dataset.csv").resolve())
    # Right after its --config: a later --data.csv or --config still wins.
    assert args == ["fit", f"--config={config}", f"--data.csv={absolute}", "--data.n_train=8"]
    check_config(["fit", "--config", str(config)])  # reads the table from the other folder


def test_a_data_path_not_next_to_the_config_stays_relative_to_the_working_folder(
    tmp_path: Path, tiny_csv: Path, monkeypatch: pytest.MonkeyPatch
):
    """A run's saved config.yaml names its data as given (relative to where it ran)."""
    config = _user_config(tmp_path / "runs" / "x" / "version_0", "tiny/dataset.csv")
    monkeypatch.chdir(tmp_path)
    assert config_arguments(["test", "--config", str(config)]) == ["test", f"--config={config}"]
    check_config(["fit", "--config", str(config)])
    # Before the subcommand only the name is resolved: --data.* is not an option there.
    assert config_arguments(["--config", str(config), "fit"]) == [f"--config={config}", "fit"]


@pytest.mark.slow
def test_demo_runs_end_to_end_from_an_empty_folder(tmp_path: Path):
    """`hydralab demo` outside the checkout: packaged configs, data and runs in the cwd."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        [str(HYDRALAB), "demo", "--max-steps", "4"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "baseline ICC" in done.stdout and "hydranet ICC" in done.stdout  # the report table
    assert (tmp_path / "data" / "pvs" / "dataset.csv").is_file()
    for method in ("baseline", "hydranet"):
        run = tmp_path / "runs" / "demo" / f"{method}-s0" / "version_0"
        assert (run / "test_predictions.csv").is_file()
        # W&B's files too, even with a W&B service inherited from pytest (its own cwd).
        assert list((run / "wandb").glob("offline-run-*/files/output.log")), method
    assert (tmp_path / "runs" / "demo" / "report" / "demo.md").is_file()


def test_an_unknown_config_name_is_one_line_listing_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"--config pvs/nothing: no such file") as error:
        config_arguments(["fit", "--config", "pvs/nothing"])
    assert "pvs/hydranet" in str(error.value) and "\n" not in str(error.value)
